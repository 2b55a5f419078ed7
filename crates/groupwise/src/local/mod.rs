//! Local units: one per (module, group), plus the final module's columns and head.
//!
//! Every unit owns a `VarStore` (its parameters and BN statistics) and an [`Sgd`] (its momentum), so
//! stepping one unit can never touch another's state. Forward passes are pure; loss, backward and update
//! are [`Unit::backward`] and [`Unit::update`]. A training step of a module's units and of the head is
//! written once ([`step_units`], [`head_step`]) and serves both the sequential oracle ([`Network::train_step`]) and the
//! parallel workers, which differ only in how slices and logits reach the other groups ([`Exchange`]).
//!
//! A new local loss goes into [`loss`] (the term) and [`Unit::backward`] (its weight in the unit's total);
//! its cost into `plan::cost`.

pub mod loss;
mod network;
pub mod optim;
mod params;
mod step;
mod unit;

pub use loss::{InfoPro, LossConfig};
pub use network::{Network, Outputs};
pub use optim::{Sgd, SgdConfig};
pub use params::Params;
pub use step::{cat_channels, head_step, step_units, AllHere, Exchange, Phase, StepStats};
pub use unit::{Head, TailColumn, Unit, UnitStats};
