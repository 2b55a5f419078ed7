//! What travels to the collector, as typed messages with one encode and one decode each.
//!
//! The [`Transport`](super::Transport) moves tensors; these two messages become a small float64 tensor
//! only at that boundary ([`Report::encode`] / [`Report::decode`], [`Timing::encode`] /
//! [`Timing::decode`]), so no worker or collector reads a number by its position.

use std::time::Duration;

use tch::{Device, Kind, Tensor};

use crate::local::{Phase, UnitStats};

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

/// One stretch of a node's compute: its step, its phase, and when it began and ended, in seconds on
/// the wall clock (`SystemTime`, shared by the processes of one machine).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    /// The global step (1-based).
    pub step: usize,
    /// What it computed.
    pub phase: Phase,
    /// Seconds since the Unix epoch.
    pub start: f64,
    /// Seconds since the Unix epoch.
    pub end: f64,
}

/// Where one node's time went during a segment (a `Timing` message).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timing {
    /// Steps done.
    pub steps: usize,
    /// Time computing its step (wall clock), by [`Phase`]: trunk forward, classifier forward, loss and
    /// backward, update; what falls between phases (concatenating inputs, detaching) is in
    /// [`Timing::other`].
    pub phases: [Duration; 4],
    /// Compute time outside the phases.
    pub other: Duration,
    /// CPU time of the worker thread while computing (its libtorch intra-op helpers not included).
    pub cpu: Duration,
    /// Time waiting: for inputs, peers, gradients, data, and for room in a full channel.
    pub wait: Duration,
    /// Time sending (serialising and handing over), without waits for room.
    pub comm: Duration,
    /// Payload bytes sent.
    pub bytes: u64,
    /// Its compute in the segment's last steps, phase by phase (the run's trace).
    pub trace: Vec<Span>,
}

const TIMING_FIELDS: usize = 10;
const SPAN_FIELDS: usize = 4;

impl Timing {
    /// Compute time: every phase and what falls between them.
    pub fn compute(&self) -> Duration {
        self.phases.iter().sum::<Duration>() + self.other
    }

    /// Adds `d` of compute to `phase` (`None`: between phases).
    pub fn add_compute(&mut self, phase: Option<Phase>, d: Duration) {
        match phase {
            Some(p) => self.phases[p as usize] += d,
            None => self.other += d,
        }
    }

    /// As a message tensor.
    pub fn encode(&self) -> Tensor {
        let mut v = vec![self.steps as f64];
        v.extend(self.phases.iter().map(Duration::as_secs_f64));
        v.extend(
            [self.other, self.cpu, self.wait, self.comm]
                .iter()
                .map(Duration::as_secs_f64),
        );
        v.push(self.bytes as f64);
        for s in &self.trace {
            v.extend([s.step as f64, s.phase as usize as f64, s.start, s.end]);
        }
        Tensor::from_slice(&v)
    }

    /// From a message tensor; an error names what is wrong with it.
    pub fn decode(t: &Tensor) -> Result<Timing, String> {
        let v = values(t)?;
        if v.len() < TIMING_FIELDS || !(v.len() - TIMING_FIELDS).is_multiple_of(SPAN_FIELDS) {
            return Err(format!("corrupt timing message of {} values", v.len()));
        }
        let secs = |s: f64| Duration::try_from_secs_f64(s).map_err(|e| e.to_string());
        Ok(Timing {
            steps: v[0] as usize,
            phases: [secs(v[1])?, secs(v[2])?, secs(v[3])?, secs(v[4])?],
            other: secs(v[5])?,
            cpu: secs(v[6])?,
            wait: secs(v[7])?,
            comm: secs(v[8])?,
            bytes: v[9] as u64,
            trace: v[TIMING_FIELDS..]
                .chunks(SPAN_FIELDS)
                .map(|s| {
                    let phase = *Phase::ALL
                        .get(s[1] as usize)
                        .ok_or_else(|| format!("corrupt timing message: phase {}", s[1]))?;
                    Ok(Span {
                        step: s[0] as usize,
                        phase,
                        start: s[2],
                        end: s[3],
                    })
                })
                .collect::<Result<_, String>>()?,
        })
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
            phases: [1, 2, 3, 4].map(Duration::from_millis),
            other: Duration::from_millis(5),
            cpu: Duration::from_millis(9),
            wait: Duration::from_millis(250),
            comm: Duration::from_micros(15_625),
            bytes: 1 << 20,
            trace: vec![
                Span {
                    step: 7,
                    phase: Phase::Backward,
                    start: 1.8e9 + 0.25,
                    end: 1.8e9 + 0.5,
                },
                Span {
                    step: 8,
                    phase: Phase::Update,
                    start: 1.8e9 + 0.5,
                    end: 1.8e9 + 0.625,
                },
            ],
        };
        assert_eq!(Timing::decode(&timing.encode()), Ok(timing.clone()));
        let mut bad = Vec::<f64>::try_from(&timing.encode()).unwrap();
        bad[TIMING_FIELDS + 1] = 9.0;
        assert!(Timing::decode(&Tensor::from_slice(&bad)).is_err());
        bad.pop();
        assert!(Timing::decode(&Tensor::from_slice(&bad)).is_err());
        assert!(Report::decode(&Tensor::from_slice(&[2.0, 1.0])).is_err());
        assert!(Timing::decode(&Tensor::from_slice(&[1.0])).is_err());
    }
}
