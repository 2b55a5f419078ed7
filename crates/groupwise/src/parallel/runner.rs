//! One segment on this process's nodes: its worker threads (each a contiguous run of nodes, see
//! [`Layout`]), a feeder giving every worker every batch, and on the leader the collector of per-step
//! statistics and per-node timings.
//!
//! Stopping early: the leader's feeder reads the segment's stop request before it feeds each step
//! and tells the feeder of every other process (a [`Kind::Feed`] message per step, which that feeder
//! waits for); a step is fed everywhere or nowhere. The steps fed drain through the pipeline, and
//! the collector takes the statistics of exactly those (`Fed`), so every node ends the segment
//! after the same step.

use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Condvar, Mutex};

use tch::{Device, Tensor};

use crate::local::{Network, Params, StepStats};

use super::layout::Layout;
use super::message::{Report, Timing};
use super::segment::{Interval, NodeTiming, OnStep, RuntimeError, Segment, SegmentEnd, Trace};
use super::topology::{Role, TailPlacement};
use super::transport::{Aborted, Channel, Kind, Mailboxes, Transport};
use super::worker::{self, Held, NodeState, Work};

/// The nodes of a network, each in a slot (taken by a worker during a segment).
pub struct Slots {
    plan: crate::plan::Plan,
    loss: crate::local::LossConfig,
    /// `nodes[id]`.
    pub nodes: Vec<Option<NodeState>>,
}

impl Slots {
    /// Moves the network's nodes into slots, by node id.
    pub fn split(net: Network, layout: &Layout) -> Self {
        let Network {
            plan,
            units,
            tail,
            head,
            loss,
        } = net;
        let mut nodes: Vec<Option<NodeState>> = units
            .into_iter()
            .flatten()
            .map(|u| Some(NodeState::Unit(u)))
            .collect();
        let head_tail = if layout.topo.tail == TailPlacement::Separate {
            nodes.extend(tail.into_iter().map(|t| Some(NodeState::Tail(t))));
            Vec::new()
        } else {
            tail
        };
        nodes.push(Some(NodeState::Head {
            head,
            tail: head_tail,
        }));
        let mut slots = Slots { plan, loss, nodes };
        slots.place(&layout.devices);
        slots
    }

    /// Moves every node's parameters and momentum to its device.
    fn place(&mut self, devices: &[Device]) {
        for (node, &device) in self.nodes.iter_mut().zip(devices) {
            let params: Vec<&mut Params> = match node.as_mut() {
                None => Vec::new(),
                Some(NodeState::Unit(u)) => vec![&mut u.params],
                Some(NodeState::Tail(t)) => vec![&mut t.params],
                Some(NodeState::Head { head, tail }) => tail
                    .iter_mut()
                    .map(|t| &mut t.params)
                    .chain(std::iter::once(&mut head.params))
                    .collect(),
            };
            for p in params {
                if p.vs.device() != device {
                    p.vs.set_device(device);
                    let moved = p
                        .opt
                        .buffers()
                        .iter()
                        .map(|(n, t)| (n.clone(), t.to_device(device)))
                        .collect();
                    p.opt.set_buffers(moved);
                }
            }
        }
    }

    /// Rebuilds the network (every slot must be filled).
    pub fn join(self) -> Network {
        let groups = self.plan.groups as usize;
        let mut units: Vec<Vec<_>> = Vec::new();
        let mut tail = Vec::new();
        let mut head = None;
        for node in self.nodes.into_iter().flatten() {
            match node {
                NodeState::Unit(u) => {
                    if u.group == 0 {
                        units.push(Vec::with_capacity(groups));
                    }
                    if let Some(module) = units.last_mut() {
                        module.push(u);
                    }
                }
                NodeState::Tail(t) => tail.push(t),
                NodeState::Head { head: h, tail: t } => {
                    tail.extend(t);
                    head = Some(h);
                }
            }
        }
        Network {
            plan: self.plan,
            units,
            tail,
            head: head.expect("every node returns to its slot, the head included"),
            loss: self.loss,
        }
    }
}

/// A loop that runs beside the workers until the flag says they are done (MPI's progress thread).
pub type Pump<'a> = dyn Fn(&AtomicBool) -> Result<(), RuntimeError> + Sync + 'a;

/// What runs one segment on this process's nodes.
pub struct NodeRunner<'a> {
    /// Where every node runs.
    pub layout: &'a Layout,
    /// Whether this process collects statistics (the leader).
    pub leader: bool,
}

impl NodeRunner<'_> {
    /// Runs `segment` on the local nodes (taken from and returned to `slots`) over `transport`. The
    /// leader's `on_step` sees every step's statistics; it returns the steps run and (on the leader)
    /// every node's timings. `pump`, when given, runs beside the workers until they are done (the MPI
    /// progress thread).
    pub fn run(
        &self,
        slots: &mut Slots,
        transport: &dyn Transport,
        segment: Segment,
        on_step: &mut OnStep,
        pump: Option<&Pump>,
    ) -> Result<SegmentEnd, RuntimeError> {
        let layout = self.layout;
        let topo = &layout.topo;
        let mut feeds = Vec::new();
        let mut jobs = Vec::new();
        for ids in layout.local_workers() {
            let (tx, rx) = mpsc::sync_channel::<Work>(layout.depth.max(1));
            feeds.push(tx);
            let mut nodes = Vec::with_capacity(ids.len());
            for &id in &ids {
                let Some(state) = slots.nodes[id].take() else {
                    return Err(RuntimeError::Failed(format!(
                        "node {} is missing from this process",
                        topo.name(id)
                    )));
                };
                nodes.push((id, state));
            }
            jobs.push((ids, Held::new(nodes), rx));
        }
        let done = AtomicBool::new(false);
        let fed = Fed::default();
        let mut collected: Result<(Vec<NodeTiming>, Trace), RuntimeError> = Ok(Default::default());
        let returned = std::thread::scope(|scope| {
            let pump_handle = pump.map(|p| {
                let done = &done;
                scope.spawn(move || {
                    if let Err(e) = p(done) {
                        transport.abort(e.to_string());
                    }
                })
            });
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(ids, mut held, rx)| {
                    // A worker's nodes share one device (GPUs go round-robin by worker).
                    let device = layout.devices[ids[0]];
                    let threads = layout.threads_per_worker;
                    scope.spawn(move || {
                        crate::device::set_intra_op_threads(threads);
                        let mut w =
                            worker::Worker::new(&ids, topo, transport, device, layout.fault);
                        let outcome =
                            std::panic::catch_unwind(AssertUnwindSafe(|| w.run(&mut held, &rx)));
                        let failure = match outcome {
                            Ok(Ok(())) => None,
                            Ok(Err(m)) => Some(m),
                            Err(panic) => Some(format!(
                                "worker of nodes {} panicked: {}",
                                ids.iter()
                                    .map(|&id| topo.name(id).to_string())
                                    .collect::<Vec<_>>()
                                    .join(" "),
                                panic_message(&panic)
                            )),
                        };
                        if let Some(m) = failure {
                            transport.abort(m);
                        }
                        held.into_nodes()
                    })
                })
                .collect();
            // The feeder: every local node gets every batch (images are shared, not copied), once
            // the leader's word for the step is go.
            let feeder = {
                let batches = segment.batches;
                let (steps, lr, first, stop) =
                    (segment.steps, segment.lr, segment.done + 1, segment.stop);
                let fed = &fed;
                scope.spawn(move || {
                    let _close = CloseOnDrop(fed);
                    for (i, batch) in batches.take(steps).enumerate() {
                        match self.word(transport, stop) {
                            Ok(true) => fed.advance(),
                            Ok(false) | Err(_) => return,
                        }
                        for tx in &feeds {
                            let work = Work {
                                images: batch.images.shallow_clone(),
                                labels: batch.labels.shallow_clone(),
                                lr,
                                step: first + i,
                            };
                            if tx.send(work).is_err() {
                                return; // that worker ended (aborted): stop feeding
                            }
                        }
                        if transport.aborted().is_some() {
                            return;
                        }
                    }
                })
            };
            if self.leader {
                collected = self.collect(transport, &fed, segment.steps, on_step);
                if collected.is_err() && transport.aborted().is_none() {
                    transport.abort("the leader stopped the run".into());
                }
            }
            let _ = feeder.join();
            // Worker threads catch their own panics, so a join only fails if that machinery does.
            let returned: Vec<(usize, NodeState)> = handles
                .into_iter()
                .filter_map(|h| h.join().ok())
                .flatten()
                .collect();
            done.store(true, Ordering::SeqCst);
            if let Some(h) = pump_handle {
                let _ = h.join();
            }
            returned
        });
        for (id, state) in returned {
            slots.nodes[id] = Some(state);
        }
        // The collector's own stop (divergence) wins over the abort it caused.
        let (timings, trace) = collected?;
        if let Some(m) = transport.aborted() {
            return Err(RuntimeError::Failed(m));
        }
        Ok(SegmentEnd {
            steps: fed.count(),
            timings,
            trace,
        })
    }

    /// Whether the next step is fed: on the leader, yes unless a stop was requested, and every other
    /// process is told; elsewhere, what the leader said (waiting for its word).
    fn word(&self, transport: &dyn Transport, stop: Option<&AtomicBool>) -> Result<bool, Aborted> {
        let layout = self.layout;
        if !self.leader {
            return match layout.feed_channel(layout.rank) {
                Some(channel) => Ok(transport.recv(channel)?.int64_value(&[]) != 0),
                None => Ok(true),
            };
        }
        let go = !stop.is_some_and(|s| s.load(Ordering::SeqCst));
        for channel in layout.feed_channels() {
            transport.send(channel, &Tensor::from(i64::from(go)))?;
        }
        Ok(go)
    }

    /// The leader's side: statistics of every step fed, in order, then every node's timings and the
    /// trace of the last steps.
    fn collect(
        &self,
        transport: &dyn Transport,
        fed: &Fed,
        steps: usize,
        on_step: &mut OnStep,
    ) -> Result<(Vec<NodeTiming>, Trace), RuntimeError> {
        let layout = self.layout;
        let topo = &layout.topo;
        let c = topo.collector();
        let corrupt = |id: usize| {
            let name = topo.name(id);
            move |e: String| RuntimeError::Failed(format!("node {name}: {e}"))
        };
        for i in 0..steps {
            if !fed.was_fed(i) {
                break;
            }
            let mut stats = StepStats {
                units: vec![Vec::with_capacity(topo.groups); topo.boundaries],
                ..Default::default()
            };
            for id in topo.reporters() {
                let message = transport.recv(Channel::new(id, c, Kind::Stats))?;
                match (
                    topo.role(id),
                    Report::decode(&message).map_err(corrupt(id))?,
                ) {
                    (Role::Unit { module, .. }, Report::Unit(s)) => stats.units[module].push(s),
                    (
                        Role::Head,
                        Report::Head {
                            loss,
                            correct,
                            batch,
                        },
                    ) => {
                        stats.head_loss = loss;
                        stats.head_correct = correct;
                        stats.batch = batch;
                    }
                    (role, report) => {
                        return Err(corrupt(id)(format!("a {role:?} node sent {report:?}")))
                    }
                }
            }
            if on_step(stats) == ControlFlow::Break(()) {
                return Err(RuntimeError::Stopped);
            }
        }
        let workers = layout.all_workers();
        let mut worker_of = vec![0; topo.len()];
        for (w, (_, ids)) in workers.iter().enumerate() {
            for &id in ids {
                worker_of[id] = w;
            }
        }
        let mut timings = Vec::with_capacity(topo.len());
        let mut trace = Vec::new();
        for (id, &worker) in worker_of.iter().enumerate() {
            let message = transport.recv(Channel::new(id, c, Kind::Timing))?;
            let t = Timing::decode(&message).map_err(corrupt(id))?;
            trace.extend(t.trace.iter().map(|s| Interval {
                worker,
                node: id,
                phase: s.phase,
                step: s.step,
                start: s.start,
                end: s.end,
            }));
            let [trunk, classifier, backward, update] = t.phases.map(|d| d.as_secs_f64());
            timings.push(NodeTiming {
                node: topo.name(id).to_string(),
                rank: layout.ranks[id],
                steps: t.steps,
                compute_seconds: t.compute().as_secs_f64(),
                cpu_seconds: t.cpu.as_secs_f64(),
                forward_seconds: trunk + classifier,
                trunk_seconds: trunk,
                backward_seconds: backward,
                update_seconds: update,
                wait_seconds: t.wait.as_secs_f64(),
                comm_seconds: t.comm.as_secs_f64(),
                bytes_sent: t.bytes,
            });
        }
        let origin = trace.iter().map(|i| i.start).fold(f64::INFINITY, f64::min);
        for i in &mut trace {
            i.start -= origin;
            i.end -= origin;
        }
        trace.sort_by(|a, b| a.start.total_cmp(&b.start));
        let trace = Trace {
            workers,
            threads_per_worker: layout.threads_per_worker,
            depth: layout.depth,
            intervals: trace,
        };
        Ok((timings, trace))
    }
}

/// One segment on `layout`'s workers with every node in this process (its mailboxes, this process the
/// leader): the threads runtime, its measuring steps and `groupwise plan --profile`.
pub(super) fn run_in_process(
    layout: &Layout,
    slots: &mut Slots,
    segment: Segment,
    on_step: &mut OnStep,
) -> Result<SegmentEnd, RuntimeError> {
    let runner = NodeRunner {
        layout,
        leader: true,
    };
    runner.run(slots, &Mailboxes::new(layout.depth), segment, on_step, None)
}

/// How many steps the feeder has fed, and whether it has stopped: the collector never waits for the
/// statistics of a step that was not fed.
#[derive(Default)]
struct Fed {
    /// (steps fed, feeder finished).
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Fed {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more step fed.
    fn advance(&self) {
        self.lock().0 += 1;
        self.changed.notify_all();
    }

    /// The feeder feeds no more.
    fn close(&self) {
        self.lock().1 = true;
        self.changed.notify_all();
    }

    /// Steps fed.
    fn count(&self) -> usize {
        self.lock().0
    }

    /// Whether step `i` (0-based) is fed, waiting while the feeder may still feed it.
    fn was_fed(&self, i: usize) -> bool {
        let mut state = self.lock();
        loop {
            match *state {
                (n, _) if n > i => return true,
                (_, true) => return false,
                _ => state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

/// Closes [`Fed`] however the feeder ends (a worker gone, an abort, a panic).
struct CloseOnDrop<'a>(&'a Fed);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
