//! One segment on this process's nodes: its worker threads (each a contiguous run of nodes, see
//! [`Layout`]), a feeder giving every worker every batch, and on the leader the collector of per-step statistics and per-node timings.

use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use tch::Device;

use crate::local::{Network, Params, StepStats};

use super::layout::Layout;
use super::message::{Report, Timing};
use super::segment::{NodeTiming, OnStep, RuntimeError, Segment};
use super::topology::{Role, TailPlacement};
use super::transport::{Channel, Kind, Transport};
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
    /// leader's `on_step` sees every step's statistics; it returns every node's timings. `pump`, when
    /// given, runs beside the workers until they are done (the MPI progress thread).
    pub fn run(
        &self,
        slots: &mut Slots,
        transport: &dyn Transport,
        segment: Segment,
        on_step: &mut OnStep,
        pump: Option<&Pump>,
    ) -> Result<Vec<NodeTiming>, RuntimeError> {
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
        let mut collected: Result<Vec<NodeTiming>, RuntimeError> = Ok(Vec::new());
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
                        tch::set_num_threads(threads as i32);
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
            // The feeder: every local node gets every batch (images are shared, not copied).
            let feeder = {
                let batches = segment.batches;
                let (steps, lr, first) = (segment.steps, segment.lr, segment.done + 1);
                scope.spawn(move || {
                    for (i, batch) in batches.take(steps).enumerate() {
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
                collected = self.collect(transport, segment.steps, on_step);
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
        let timings = collected?;
        if let Some(m) = transport.aborted() {
            return Err(RuntimeError::Failed(m));
        }
        Ok(timings)
    }

    /// The leader's side: statistics of every step in order, then every node's timings.
    fn collect(
        &self,
        transport: &dyn Transport,
        steps: usize,
        on_step: &mut OnStep,
    ) -> Result<Vec<NodeTiming>, RuntimeError> {
        let layout = self.layout;
        let topo = &layout.topo;
        let c = topo.collector();
        let corrupt = |id: usize| {
            let name = topo.name(id);
            move |e: String| RuntimeError::Failed(format!("node {name}: {e}"))
        };
        for _ in 0..steps {
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
        let mut timings = Vec::with_capacity(topo.len());
        for id in 0..topo.len() {
            let message = transport.recv(Channel::new(id, c, Kind::Timing))?;
            let t = Timing::decode(&message).map_err(corrupt(id))?;
            let [trunk, classifier, backward, update] = t.phases.map(|d| d.as_secs_f64());
            timings.push(NodeTiming {
                node: topo.name(id).to_string(),
                rank: layout.ranks[id],
                steps: t.steps,
                compute_seconds: t.compute().as_secs_f64(),
                cpu_seconds: t.cpu.as_secs_f64(),
                forward_seconds: trunk + classifier,
                backward_seconds: backward,
                update_seconds: update,
                wait_seconds: t.wait.as_secs_f64(),
                comm_seconds: t.comm.as_secs_f64(),
                bytes_sent: t.bytes,
            });
        }
        Ok(timings)
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
