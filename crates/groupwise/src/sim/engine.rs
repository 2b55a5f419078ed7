//! Times the workers' programs over bounded FIFO channels (see the module doc of [`super`]).

use std::collections::HashMap;

use super::program::{Op, Wire, Writer};
use super::Setup;
use crate::local::Phase;
use crate::parallel::Interval;

/// Where one worker's time went over the simulated segment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerLoad {
    /// Its nodes.
    pub nodes: Vec<usize>,
    /// Its process.
    pub process: usize,
    /// Seconds computing.
    pub busy: f64,
    /// Seconds sending (`bytes / bandwidth` of its messages to other processes).
    pub comm: f64,
    /// Seconds waiting (for a batch, an input, a peer, or room in a channel).
    pub wait: f64,
    /// Seconds from its last operation to the end of the segment.
    pub done_early: f64,
}

/// What [`simulate`] predicts for a segment of `Setup::steps` steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// Seconds from the first batch to the last node's last operation.
    pub segment_seconds: f64,
    /// Seconds per step over the segment (pipeline fill and drain included: what a run of that many
    /// steps measures).
    pub step_seconds: f64,
    /// Seconds per step once the pipeline is full (the second half of the segment): what a long run
    /// converges to.
    pub steady_step_seconds: f64,
    /// When each step's last operation ended.
    pub step_ends: Vec<f64>,
    /// Every worker's time.
    pub workers: Vec<WorkerLoad>,
    /// The node with the most compute on the busiest worker: the one to make faster or move.
    pub critical_node: usize,
    /// Every compute interval of the segment.
    pub timeline: Vec<Interval>,
}

impl Prediction {
    /// Of all the workers' time, the share spent sending.
    pub fn comm_share(&self) -> f64 {
        let comm: f64 = self.workers.iter().map(|w| w.comm).sum();
        comm / (self.segment_seconds * self.workers.len() as f64).max(f64::MIN_POSITIVE)
    }
}

/// A bounded FIFO: when each message arrived and when each was taken.
#[derive(Default)]
struct Queue {
    arrivals: Vec<f64>,
    taken: Vec<f64>,
}

/// What a simulated thread is doing.
#[derive(Clone, Copy)]
enum State {
    /// At its next operation: runs it as soon as it can (a receive waits for its message, a send
    /// for room).
    Ready,
    /// Computing `node`'s `phase` since `start`, with `left` seconds of it to go at full speed.
    Computing {
        node: usize,
        phase: Phase,
        start: f64,
        left: f64,
    },
    /// Sending until `until`; the message arrives `latency` later.
    Sending { until: f64, latency: f64 },
}

/// A simulated thread: the feeder (`worker == None`) or a worker.
struct Thread {
    worker: Option<usize>,
    ops: Vec<Op>,
    speed: f64,
    step: usize,
    pc: usize,
    /// When it reached its current operation.
    t: f64,
    state: State,
}

impl Thread {
    /// Moves past the current operation, done at `now`.
    fn advance(&mut self, now: f64, step_ends: &mut [f64]) {
        self.pc += 1;
        self.t = now;
        self.state = State::Ready;
        if self.pc == self.ops.len() {
            if self.worker.is_some() {
                step_ends[self.step] = step_ends[self.step].max(now);
            }
            self.pc = 0;
            self.step += 1;
        }
    }
}

/// Times `setup`'s segment. An error when the programs cannot all finish (a schedule that deadlocks,
/// which the runtime's never does).
///
/// Simulated time moves from event to event (a compute or a send ends, a message arrives); at each,
/// every thread runs what it can. Computing workers share [`Setup::cores`] when they would need more:
/// each then progresses at `cores / (computing workers x threads per worker)` of its speed, the fair
/// share a kernel scheduler gives threads that want more cores than there are.
pub fn simulate(setup: &Setup) -> Result<Prediction, String> {
    let writer = Writer {
        topo: &setup.topo,
        costs: &setup.costs,
        batch: setup.batch,
    };
    let n = setup.workers.len();
    let thread = |worker: Option<usize>, ops: Vec<Op>, speed: f64| Thread {
        worker,
        ops,
        speed,
        step: 0,
        pc: 0,
        t: 0.0,
        state: State::Ready,
    };
    let mut threads: Vec<Thread> = setup
        .workers
        .iter()
        .enumerate()
        .map(|(w, ids)| {
            let speed = setup.speed.get(w).copied().unwrap_or(1.0);
            thread(Some(w), writer.program(w, ids), speed)
        })
        .collect();
    let feed = (0..n)
        .map(|w| Op::Send {
            wire: Wire::Feed(w),
            bytes: 0,
        })
        .collect();
    threads.push(thread(None, feed, 1.0));
    let worker_of: HashMap<usize, usize> = setup
        .workers
        .iter()
        .enumerate()
        .flat_map(|(w, ids)| ids.iter().map(move |&id| (id, w)))
        .collect();
    let depth = setup.depth.max(1);
    let steps = setup.steps.max(1);
    let mut queues: HashMap<Wire, Queue> = HashMap::new();
    let mut loads: Vec<WorkerLoad> = setup
        .workers
        .iter()
        .zip(&setup.process)
        .map(|(ids, &process)| WorkerLoad {
            nodes: ids.clone(),
            process,
            ..WorkerLoad::default()
        })
        .collect();
    let mut step_ends = vec![0.0f64; steps];
    let mut timeline = Vec::new();
    let mut node_busy = vec![0.0f64; setup.topo.len()];
    let demand = setup.threads_per_worker.max(1) as f64;
    let mut now = 0.0f64;
    loop {
        // Every ready thread runs what it can at `now`; a send or a receive can free another thread.
        let mut moved = true;
        while moved {
            moved = false;
            for th in threads.iter_mut() {
                while th.step < steps && matches!(th.state, State::Ready) {
                    match th.ops[th.pc] {
                        Op::Compute {
                            node,
                            phase,
                            seconds,
                        } => {
                            let cold = setup.cold && th.step == 0 && phase == Phase::Trunk;
                            let warmup = if cold { setup.costs[node].warmup } else { 0.0 };
                            let left = (seconds + warmup) / th.speed;
                            if left > 0.0 {
                                th.state = State::Computing {
                                    node,
                                    phase,
                                    start: now,
                                    left,
                                };
                                moved = true;
                                break;
                            }
                            if let Some(w) = th.worker {
                                timeline.push(Interval {
                                    worker: w,
                                    node,
                                    phase,
                                    step: th.step + 1,
                                    start: now,
                                    end: now,
                                });
                            }
                        }
                        Op::Send { wire, bytes } => {
                            let q = queues.entry(wire).or_default();
                            let i = q.arrivals.len();
                            if i >= depth && q.taken.len() <= i - depth {
                                break; // no room yet
                            }
                            let (cost, latency) = match wire {
                                Wire::Link(c) if crosses(setup, &worker_of, c.src, c.dst) => {
                                    (setup.link.send_seconds(bytes), setup.link.latency)
                                }
                                _ => (0.0, 0.0),
                            };
                            if let Some(w) = th.worker {
                                loads[w].wait += now - th.t;
                                loads[w].comm += cost;
                            }
                            if cost > 0.0 {
                                th.state = State::Sending {
                                    until: now + cost,
                                    latency,
                                };
                                moved = true;
                                break;
                            }
                            q.arrivals.push(now + latency);
                        }
                        Op::Recv { wire } => {
                            let q = queues.entry(wire).or_default();
                            match q.arrivals.get(q.taken.len()) {
                                Some(&arrival) if arrival <= now => {
                                    if let Some(w) = th.worker {
                                        loads[w].wait += now - th.t;
                                    }
                                    q.taken.push(now);
                                }
                                _ => break, // not here yet
                            }
                        }
                    }
                    th.advance(now, &mut step_ends);
                    moved = true;
                }
            }
        }
        if threads.iter().all(|th| th.step >= steps) {
            break;
        }
        // The next event: a compute or a send ends, or a message a thread waits for arrives.
        let computing = threads
            .iter()
            .filter(|th| matches!(th.state, State::Computing { .. }))
            .count();
        let rate = match setup.cores {
            Some(cores) if computing > 0 => (cores as f64 / (computing as f64 * demand)).min(1.0),
            _ => 1.0,
        };
        let mut next = f64::INFINITY;
        for th in &threads {
            let at = match th.state {
                State::Computing { left, .. } => now + left / rate,
                State::Sending { until, .. } => until,
                State::Ready if th.step < steps => match th.ops[th.pc] {
                    Op::Recv { wire } => queues
                        .get(&wire)
                        .and_then(|q| q.arrivals.get(q.taken.len()))
                        .copied()
                        .unwrap_or(f64::INFINITY),
                    _ => f64::INFINITY,
                },
                State::Ready => f64::INFINITY,
            };
            next = next.min(at);
        }
        if !next.is_finite() {
            return Err(format!(
                "the simulated schedule deadlocks (pipeline depth {depth}, {n} workers)"
            ));
        }
        let dt = next - now;
        let tolerance = 1e-12 * next.abs().max(1.0);
        now = next;
        for th in threads.iter_mut() {
            match th.state {
                State::Computing {
                    node,
                    phase,
                    start,
                    left,
                } => {
                    let left = left - dt * rate;
                    if left * rate > tolerance {
                        th.state = State::Computing {
                            node,
                            phase,
                            start,
                            left,
                        };
                        continue;
                    }
                    if let Some(w) = th.worker {
                        loads[w].busy += now - start;
                        node_busy[node] += now - start;
                        timeline.push(Interval {
                            worker: w,
                            node,
                            phase,
                            step: th.step + 1,
                            start,
                            end: now,
                        });
                    }
                    th.advance(now, &mut step_ends);
                }
                State::Sending { until, latency } if until <= now => {
                    if let Op::Send { wire, .. } = th.ops[th.pc] {
                        queues
                            .entry(wire)
                            .or_default()
                            .arrivals
                            .push(until + latency);
                    }
                    th.advance(now, &mut step_ends);
                }
                _ => {}
            }
        }
    }
    let segment = step_ends.last().copied().unwrap_or(0.0);
    for (w, th) in threads.iter().filter_map(|t| t.worker.map(|w| (w, t))) {
        loads[w].done_early = segment - th.t;
    }
    let half = steps / 2;
    let steady = if steps >= 2 {
        let from = if half == 0 { 0.0 } else { step_ends[half - 1] };
        (segment - from) / (steps - half) as f64
    } else {
        segment
    };
    let busiest = (0..n)
        .max_by(|&a, &b| loads[a].busy.total_cmp(&loads[b].busy))
        .unwrap_or(0);
    let critical_node = setup.workers[busiest]
        .iter()
        .copied()
        .max_by(|&a, &b| node_busy[a].total_cmp(&node_busy[b]))
        .unwrap_or(0);
    Ok(Prediction {
        segment_seconds: segment,
        step_seconds: segment / steps as f64,
        steady_step_seconds: steady,
        step_ends,
        workers: loads,
        critical_node,
        timeline,
    })
}

/// Whether a message from node `a` to node `b` leaves its process.
fn crosses(setup: &Setup, worker_of: &HashMap<usize, usize>, a: usize, b: usize) -> bool {
    match (worker_of.get(&a), worker_of.get(&b)) {
        (Some(&x), Some(&y)) => setup.process[x] != setup.process[y],
        _ => false,
    }
}
