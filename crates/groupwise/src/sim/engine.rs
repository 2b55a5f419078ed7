//! Times the workers' programs over bounded FIFO channels (see the module doc of [`super`]).

use std::collections::HashMap;

use super::program::{Op, Wire, Writer};
use super::Setup;
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

/// A simulated thread: the feeder (`worker == None`) or a worker.
struct Thread {
    worker: Option<usize>,
    ops: Vec<Op>,
    speed: f64,
    step: usize,
    pc: usize,
    t: f64,
}

/// Times `setup`'s segment. An error when the programs cannot all finish (a schedule that deadlocks,
/// which the runtime's never does).
pub fn simulate(setup: &Setup) -> Result<Prediction, String> {
    let writer = Writer {
        topo: &setup.topo,
        costs: &setup.costs,
        batch: setup.batch,
    };
    let n = setup.workers.len();
    let mut threads: Vec<Thread> = setup
        .workers
        .iter()
        .enumerate()
        .map(|(w, ids)| Thread {
            worker: Some(w),
            ops: writer.program(w, ids),
            speed: setup.speed.get(w).copied().unwrap_or(1.0),
            step: 0,
            pc: 0,
            t: 0.0,
        })
        .collect();
    threads.push(Thread {
        worker: None,
        ops: (0..n)
            .map(|w| Op::Send {
                wire: Wire::Feed(w),
                bytes: 0,
            })
            .collect(),
        speed: 1.0,
        step: 0,
        pc: 0,
        t: 0.0,
    });
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
    loop {
        let mut progressed = false;
        let mut finished = true;
        for th in threads.iter_mut() {
            while th.step < steps {
                finished = false;
                let op = th.ops[th.pc];
                match op {
                    Op::Compute {
                        node,
                        phase,
                        seconds,
                    } => {
                        let d = seconds / th.speed;
                        if let Some(w) = th.worker {
                            loads[w].busy += d;
                            node_busy[node] += d;
                            timeline.push(Interval {
                                worker: w,
                                node,
                                phase,
                                step: th.step + 1,
                                start: th.t,
                                end: th.t + d,
                            });
                        }
                        th.t += d;
                    }
                    Op::Send { wire, bytes } => {
                        let q = queues.entry(wire).or_default();
                        let i = q.arrivals.len();
                        let room = match i.checked_sub(depth) {
                            None => th.t,
                            Some(j) => match q.taken.get(j) {
                                Some(&t) => t,
                                None => break,
                            },
                        };
                        let start = th.t.max(room);
                        let (cost, latency) = match wire {
                            Wire::Link(c) if crosses(setup, &worker_of, c.src, c.dst) => {
                                (setup.link.send_seconds(bytes), setup.link.latency)
                            }
                            _ => (0.0, 0.0),
                        };
                        if let Some(w) = th.worker {
                            loads[w].wait += start - th.t;
                            loads[w].comm += cost;
                        }
                        th.t = start + cost;
                        q.arrivals.push(th.t + latency);
                    }
                    Op::Recv { wire } => {
                        let q = queues.entry(wire).or_default();
                        let i = q.taken.len();
                        let Some(&arrival) = q.arrivals.get(i) else {
                            break;
                        };
                        let start = th.t.max(arrival);
                        if let Some(w) = th.worker {
                            loads[w].wait += start - th.t;
                        }
                        th.t = start;
                        q.taken.push(start);
                    }
                }
                progressed = true;
                th.pc += 1;
                if th.pc == th.ops.len() {
                    if th.worker.is_some() {
                        step_ends[th.step] = step_ends[th.step].max(th.t);
                    }
                    th.pc = 0;
                    th.step += 1;
                }
            }
        }
        if finished {
            break;
        }
        if !progressed {
            return Err(format!(
                "the simulated schedule deadlocks (pipeline depth {depth}, {n} workers)"
            ));
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
