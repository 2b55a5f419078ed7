//! The parallel runtime: every node of a plan as a pipelined worker (METHOD.md section 9).
//!
//! A run is cut into segments (an epoch, or up to `--max-steps`; a stop request ends one early, after
//! the same step on every node). For a segment each node's state moves into a worker thread (a worker
//! runs a contiguous run of nodes, cut by [`Layout`] to balance their costs); node (k, g) works on
//! batch t+1 while module k+1 works on batch t, linked by
//! bounded FIFO channels ([`transport`]); at the end of the segment the pipeline drains and the nodes
//! return to the [`Network`](crate::local::Network), which is then evaluated and checkpointed exactly as in the sequential path.
//! Workers are the same code for every [`Transport`]: threads of one process ([`Mailboxes`]) or MPI
//! ranks (`mpi`, cargo feature `mpi`).
//!
//! The schedule computes what the sequential path computes (module k+1 sees batch t through module k's
//! weights before their step t in both), so results match to float tolerance; tests check it.
//!
//! Map: [`Cluster`] (what the trainer drives: [`Local`] here, `mpi::MpiCluster`), [`Layout`] (where
//! every node runs, decided once per run for threads and MPI alike, `layout.rs`), [`runner`] (one segment on this
//! process's nodes: feeder, workers, collector), [`worker`] (one worker thread's loop over its nodes),
//! [`profile()`] (every node timed in isolation, `profile.rs`), [`message`] (what
//! reaches the collector), [`topology`] (who sends what to whom), [`transport`] (how). A new transport
//! implements [`Transport`] and a [`Cluster`] that builds a [`Layout`] and calls [`NodeRunner::run`].
//! The runtime depends on the plan, the local units and the data, never on the trainer.

mod cluster;
mod layout;
pub mod message;
mod segment;
mod settings;
// MPI handles are raw C handles shared by one thread at a time, and posted sends own leaked buffers
// until they complete: the module's `unsafe` blocks say why each one holds.
#[cfg(feature = "mpi")]
#[allow(unsafe_code)]
pub mod mpi;
mod profile;
pub mod runner;
pub mod topology;
pub mod transport;
pub mod worker;

pub use cluster::{Cluster, Local};
pub use layout::{cut, default_threads_per_worker, Layout, NodeCosts};
pub use profile::{profile, NodeProfile, ProfileSettings};
pub use runner::{NodeRunner, Slots};
pub use segment::{Interval, NodeTiming, OnStep, RuntimeError, Segment, SegmentEnd, Trace};
pub use settings::{
    check_threads, cores, max_threads, Fault, Placement, Runtime, Workers, MAX_PIPELINE_DEPTH,
    THREADS_PER_CORE,
};
pub use topology::{Role, TailPlacement, Topology};
pub use transport::{Aborted, Channel, Kind, Mailboxes, Transport};
pub use worker::{NodeState, Work, TRACE_STEPS};
