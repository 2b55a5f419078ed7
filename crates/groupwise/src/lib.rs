//! groupwise: local learning with neuron groups (GN-DGL; Patel, Eickenberg, Belilovsky, arXiv 2301.07635).
//!
//! The network is cut depth-wise into K modules and width-wise into G neuron groups; every (module,
//! group) is a [`local::Unit`] with its own parameters, optimizer and local loss. See `METHOD.md`.
#![deny(missing_docs)]

pub mod atomic;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod eval;
pub mod local;
pub mod model;
pub mod parallel;
pub mod plan;
pub mod schedule;
pub mod sim;
pub mod train;
