//! What travels to the collector, as typed messages with one encode and one decode each.
//!
//! The [`Transport`](super::Transport) moves tensors; these two messages become a small float64 tensor
//! only at that boundary ([`Report::encode`] / [`Report::decode`], [`Timing::encode`] /
//! [`Timing::decode`]), so no worker or collector reads a number by its position.

use std::time::Duration;

use tch::{Device, Kind, Tensor};

use crate::local::UnitStats;

/// A node's statistics of one step (a `Stats` message).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Report {
    /// A unit's losses and accuracy.
    Unit(UnitStats),
    /// The head's.
    Head {
        /// Cross-entropy of the head.
        loss: f64,
        /// Correct predictions.
        correct: i64,
        /// Images in the batch.
        batch: i64,
    },
}

const UNIT: f64 = 0.0;
const HEAD: f64 = 1.0;

impl Report {
    /// As a message tensor.
    pub fn encode(&self) -> Tensor {
        match *self {
            Report::Unit(s) => Tensor::from_slice(&[
                UNIT,
                s.cross_entropy,
                s.diversity,
                s.correct as f64,
                s.reconstruction,
            ]),
            Report::Head {
                loss,
                correct,
                batch,
            } => Tensor::from_slice(&[HEAD, loss, correct as f64, batch as f64]),
        }
    }

    /// From a message tensor; an error names what is wrong with it.
    pub fn decode(t: &Tensor) -> Result<Report, String> {
        match values(t)?.as_slice() {
            &[UNIT, cross_entropy, diversity, correct, reconstruction] => {
                Ok(Report::Unit(UnitStats {
                    cross_entropy,
                    diversity,
                    correct: correct as i64,
                    reconstruction,
                }))
            }
            &[HEAD, loss, correct, batch] => Ok(Report::Head {
                loss,
                correct: correct as i64,
                batch: batch as i64,
            }),
            v => Err(format!("corrupt statistics message: {v:?}")),
        }
    }
}

/// Where one node's time went during a segment (a `Timing` message).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    /// Steps done.
    pub steps: usize,
    /// Whole time in steps.
    pub total: Duration,
    /// Time waiting: for inputs, peers, gradients, data, and for room in a full channel.
    pub wait: Duration,
    /// Time sending (serialising and handing over), without waits for room.
    pub comm: Duration,
    /// Payload bytes sent.
    pub bytes: u64,
}

impl Timing {
    /// Compute time: the rest of the step.
    pub fn compute(&self) -> Duration {
        self.total.saturating_sub(self.wait + self.comm)
    }

    /// As a message tensor.
    pub fn encode(&self) -> Tensor {
        Tensor::from_slice(&[
            self.steps as f64,
            self.total.as_secs_f64(),
            self.wait.as_secs_f64(),
            self.comm.as_secs_f64(),
            self.bytes as f64,
        ])
    }

    /// From a message tensor; an error names what is wrong with it.
    pub fn decode(t: &Tensor) -> Result<Timing, String> {
        let secs = |s: f64| Duration::try_from_secs_f64(s).map_err(|e| e.to_string());
        match values(t)?.as_slice() {
            &[steps, total, wait, comm, bytes] => Ok(Timing {
                steps: steps as usize,
                total: secs(total)?,
                wait: secs(wait)?,
                comm: secs(comm)?,
                bytes: bytes as u64,
            }),
            v => Err(format!("corrupt timing message: {v:?}")),
        }
    }
}

fn values(t: &Tensor) -> Result<Vec<f64>, String> {
    let t = t
        .to_kind(Kind::Double)
        .to_device(Device::Cpu)
        .flatten(0, -1);
    Vec::<f64>::try_from(&t).map_err(|e| format!("unreadable message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let unit = Report::Unit(UnitStats {
            cross_entropy: 2.25,
            diversity: 0.5,
            correct: 17,
            reconstruction: 0.125,
        });
        let head = Report::Head {
            loss: 1.5,
            correct: 3,
            batch: 128,
        };
        for r in [unit, head] {
            assert_eq!(Report::decode(&r.encode()), Ok(r));
        }
        let timing = Timing {
            steps: 12,
            total: Duration::from_millis(1500),
            wait: Duration::from_millis(250),
            comm: Duration::from_micros(15_625),
            bytes: 1 << 20,
        };
        assert_eq!(Timing::decode(&timing.encode()), Ok(timing));
        assert!(Report::decode(&Tensor::from_slice(&[2.0, 1.0])).is_err());
        assert!(Timing::decode(&Tensor::from_slice(&[1.0])).is_err());
    }
}
