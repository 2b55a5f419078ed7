//! The parallel runtime: every node of a plan as a pipelined worker (METHOD.md section 9).
//!
//! A run is cut into segments (an epoch, or up to `--max-steps`). For a segment each node's state moves
//! into a worker thread; node (k, g) works on batch t+1 while module k+1 works on batch t, linked by
//! bounded FIFO channels ([`transport`]); at the end of the segment the pipeline drains and the nodes
//! return to the [`Network`], which is then evaluated and checkpointed exactly as in the sequential path.
//! Workers are the same code for every [`Transport`]: threads of one process ([`Mailboxes`]) or MPI
//! ranks (`mpi`, cargo feature `mpi`).
//!
//! The schedule computes what the sequential path computes (module k+1 sees batch t through module k's
//! weights before their step t in both), so results match to float tolerance; tests check it.

#[cfg(feature = "mpi")]
pub mod mpi;
pub mod topology;
pub mod transport;
pub mod worker;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::data::Batch;
use crate::local::{Network, StepStats, UnitStats};
pub use topology::{Role, Topology};
pub use transport::{Aborted, Channel, Kind, Mailboxes, Transport};
pub use worker::{NodeState, Work};

/// How the nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Workers {
    /// One node after the other in the calling thread (the reference schedule).
    Sequential,
    /// One pipelined worker thread per node.
    #[default]
    Threads,
}

/// Runtime settings: how to run, not what to compute (they may change between resumes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    /// Sequential or pipelined workers.
    pub workers: Workers,
    /// libtorch intra-op threads per worker (`None`: cores / workers, at least 1).
    pub threads_per_worker: Option<usize>,
    /// Messages in flight per channel (back-pressure); 2 is double buffering.
    pub pipeline_depth: usize,
    /// Devices that nodes are placed on, round-robin in node order (empty: the run's device).
    pub devices: Vec<usize>,
    /// Fault injection for tests of the failure path: `<node>@<step>` fails that node at that step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            workers: Workers::Threads,
            threads_per_worker: None,
            pipeline_depth: 2,
            devices: Vec::new(),
            fault: None,
        }
    }
}

impl Runtime {
    /// The sequential path.
    pub fn sequential() -> Self {
        Runtime {
            workers: Workers::Sequential,
            ..Runtime::default()
        }
    }
}

/// Where one node's time went during a segment (a `metrics.jsonl` entry).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeTiming {
    /// Node name (`m{k}.g{g}` or `head`).
    pub node: String,
    /// MPI rank (0 for threads).
    pub rank: usize,
    /// Steps it ran.
    pub steps: usize,
    /// Seconds computing (forward, backward, update).
    pub compute_seconds: f64,
    /// Seconds waiting for inputs, peers, gradients, data or room in a full channel.
    pub wait_seconds: f64,
    /// Seconds sending (copying and handing messages over).
    pub comm_seconds: f64,
    /// Bytes sent.
    pub bytes_sent: u64,
}

/// A failed node, or a runtime that cannot start.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct RuntimeError(pub String);

/// The batches of one segment.
pub struct Segment<'a> {
    /// Batches in order (at least `steps` of them).
    pub batches: Box<dyn Iterator<Item = Batch> + Send + 'a>,
    /// Steps to run.
    pub steps: usize,
    /// Learning rate.
    pub lr: f64,
    /// Steps done before this segment (the first step is `done + 1`).
    pub done: usize,
}

/// Per-step callback of the leader: statistics of each step, in order; an error stops the segment.
pub type OnStep<'a, E> = dyn FnMut(StepStats) -> Result<(), E> + 'a;

/// The nodes of a network, each in a slot (taken by a worker during a segment).
pub struct Slots {
    plan: crate::plan::Plan,
    loss: crate::local::LossConfig,
    /// `nodes[id]`.
    pub nodes: Vec<Option<NodeState>>,
}

impl Slots {
    /// Moves the network's nodes into slots, by node id.
    pub fn split(net: Network, topo: &Topology) -> Self {
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
        let head_tail = if topo.separate_tail {
            nodes.extend(tail.into_iter().map(|t| Some(NodeState::Tail(t))));
            Vec::new()
        } else {
            tail
        };
        nodes.push(Some(NodeState::Head {
            head,
            tail: head_tail,
        }));
        Slots { plan, loss, nodes }
    }

    /// Rebuilds the network (every slot must be filled).
    pub fn join(self) -> Network {
        let groups = self.plan.groups as usize;
        let mut units: Vec<Vec<_>> = Vec::new();
        let mut tail = Vec::new();
        let mut head = None;
        for node in self
            .nodes
            .into_iter()
            .map(|n| n.expect("every node returned"))
        {
            match node {
                NodeState::Unit(u) => {
                    if u.group == 0 {
                        units.push(Vec::with_capacity(groups));
                    }
                    units.last_mut().expect("group 0 first").push(u);
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
            head: head.expect("a head"),
            loss: self.loss,
        }
    }
}

/// Default intra-op threads per worker: the cores shared by the workers of this machine.
pub fn default_threads_per_worker(workers_here: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / workers_here.max(1)).max(1)
}

/// Device of each node: round-robin over `devices` (CUDA indices) in node order, else `base`.
pub fn placement(topo: &Topology, devices: &[usize], base: Device) -> Vec<Device> {
    (0..topo.len())
        .map(|id| {
            if devices.is_empty() || base == Device::Cpu {
                base
            } else {
                Device::Cuda(devices[id % devices.len()])
            }
        })
        .collect()
}

/// Moves every node's parameters and momentum to its device.
pub fn place_nodes(slots: &mut Slots, devices: &[Device]) {
    for (node, &device) in slots.nodes.iter_mut().zip(devices) {
        let params: Vec<&mut crate::local::Params> = match node.as_mut().expect("node present") {
            NodeState::Unit(u) => vec![&mut u.params],
            NodeState::Tail(t) => vec![&mut t.params],
            NodeState::Head { head, tail } => tail
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

/// A loop that runs beside the workers until the flag says they are done (MPI's progress thread).
pub type Pump<'a> = dyn Fn(&AtomicBool) -> Result<(), RuntimeError> + Sync + 'a;

/// What runs one segment on this process's nodes.
pub struct NodeRunner<'a> {
    /// The node graph.
    pub topo: &'a Topology,
    /// Nodes of this process.
    pub local: Vec<usize>,
    /// Device of every node.
    pub devices: Vec<Device>,
    /// Rank of every node (all 0 for threads).
    pub ranks: Vec<usize>,
    /// Intra-op threads per worker.
    pub threads_per_worker: usize,
    /// Messages in flight per feed.
    pub depth: usize,
    /// Whether this process collects statistics (the leader).
    pub leader: bool,
    /// `(node, step)` to fail (fault injection).
    pub fault: Option<(usize, usize)>,
}

impl NodeRunner<'_> {
    /// Runs `segment` on the local nodes (taken from and returned to `slots`) over `transport`. The
    /// leader's `on_step` sees every step's statistics; it returns every node's timings. `pump`, when
    /// given, runs beside the workers until they are done (the MPI progress thread).
    pub fn run<E: From<RuntimeError>>(
        &self,
        slots: &mut Slots,
        transport: &dyn Transport,
        segment: Segment,
        on_step: &mut OnStep<E>,
        pump: Option<&Pump>,
    ) -> Result<Vec<NodeTiming>, E> {
        let topo = self.topo;
        let fault = self.fault;
        let mut feeds = Vec::new();
        let mut jobs = Vec::new();
        for &id in &self.local {
            let (tx, rx) = mpsc::sync_channel::<Work>(self.depth.max(1));
            feeds.push(tx);
            let state = slots.nodes[id].take().expect("node present");
            jobs.push((id, state, rx));
        }
        let done = AtomicBool::new(false);
        let mut collected: Result<Vec<NodeTiming>, E> = Ok(Vec::new());
        let returned = std::thread::scope(|scope| {
            let pump_handle = pump.map(|p| {
                let done = &done;
                scope.spawn(move || {
                    if let Err(e) = p(done) {
                        transport.abort(e.0);
                    }
                })
            });
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(id, mut state, rx)| {
                    let device = self.devices[id];
                    let fail_at = fault.filter(|f| f.0 == id).map(|f| f.1);
                    let threads = self.threads_per_worker;
                    scope.spawn(move || {
                        tch::set_num_threads(threads as i32);
                        let mut w = worker::Worker {
                            id,
                            topo,
                            transport,
                            device,
                            fail_at,
                            meter: worker::Meter::default(),
                        };
                        let outcome =
                            std::panic::catch_unwind(AssertUnwindSafe(|| w.run(&mut state, &rx)));
                        let failure = match outcome {
                            Ok(Ok(())) => None,
                            Ok(Err(m)) => Some(m),
                            Err(panic) => Some(format!(
                                "node {} panicked: {}",
                                topo.name(id),
                                panic_message(&panic)
                            )),
                        };
                        if let Some(m) = failure {
                            transport.abort(m);
                        }
                        (id, state)
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
            let returned: Vec<(usize, NodeState)> = handles
                .into_iter()
                .map(|h| h.join().expect("worker threads catch their panics"))
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
        // The collector's own error (divergence) wins over the abort it caused.
        let timings = collected?;
        if let Some(m) = transport.aborted() {
            return Err(RuntimeError(m).into());
        }
        Ok(timings)
    }

    /// The leader's side: statistics of every step in order, then every node's timings.
    fn collect<E: From<RuntimeError>>(
        &self,
        transport: &dyn Transport,
        steps: usize,
        on_step: &mut OnStep<E>,
    ) -> Result<Vec<NodeTiming>, E> {
        let topo = self.topo;
        let c = topo.collector();
        let recv = |id: usize, kind: Kind| {
            transport
                .recv(Channel::new(id, c, kind))
                .map(|t| worker::stats_values(&t))
                .map_err(|Aborted(m)| RuntimeError(m))
        };
        for _ in 0..steps {
            let mut stats = StepStats {
                units: vec![Vec::with_capacity(topo.groups); topo.boundaries],
                ..Default::default()
            };
            for id in topo.reporters() {
                let v = recv(id, Kind::Stats)?;
                match topo.role(id) {
                    Role::Unit { module, .. } => stats.units[module].push(UnitStats {
                        cross_entropy: v[0],
                        diversity: v[1],
                        correct: v[2] as i64,
                        reconstruction: v[3],
                    }),
                    _ => {
                        stats.head_loss = v[0];
                        stats.head_correct = v[1] as i64;
                        stats.batch = v[2] as i64;
                    }
                }
            }
            on_step(stats)?;
        }
        let mut timings = Vec::with_capacity(topo.len());
        for id in 0..topo.len() {
            let v = recv(id, Kind::Timing)?;
            timings.push(NodeTiming {
                node: topo.name(id),
                rank: self.ranks[id],
                steps: v[0] as usize,
                compute_seconds: v[1],
                wait_seconds: v[2],
                comm_seconds: v[3],
                bytes_sent: v[4] as u64,
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

/// Runs a segment on one process: the sequential path, or every node as a thread.
pub fn run_local<E: From<RuntimeError>>(
    runtime: &Runtime,
    net: Network,
    segment: Segment,
    on_step: &mut OnStep<E>,
) -> (Network, Result<Vec<NodeTiming>, E>) {
    match runtime.workers {
        Workers::Sequential => {
            let mut net = net;
            let result = run_sequential(&mut net, segment, on_step);
            (net, result)
        }
        Workers::Threads => {
            let topo = Topology::new(&net.plan);
            let base = net.head.params.vs.device();
            let devices = placement(&topo, &runtime.devices, base);
            let mut slots = Slots::split(net, &topo);
            place_nodes(&mut slots, &devices);
            let runner = NodeRunner {
                topo: &topo,
                local: (0..topo.len()).collect(),
                devices,
                ranks: vec![0; topo.len()],
                threads_per_worker: runtime
                    .threads_per_worker
                    .unwrap_or_else(|| default_threads_per_worker(topo.len())),
                depth: runtime.pipeline_depth,
                leader: true,
                fault: None,
            };
            let runner = match runtime
                .fault
                .as_deref()
                .map(|f| worker::parse_fault(f, &topo))
            {
                None => runner,
                Some(Ok(fault)) => NodeRunner {
                    fault: Some(fault),
                    ..runner
                },
                Some(Err(e)) => return (slots.join(), Err(RuntimeError(e).into())),
            };
            let mailboxes = Mailboxes::new(runtime.pipeline_depth);
            let result = runner.run(&mut slots, &mailboxes, segment, on_step, None);
            (slots.join(), result)
        }
    }
}

/// The sequential path: `Network::train_step` per batch; one timing entry for the whole network.
fn run_sequential<E>(
    net: &mut Network,
    segment: Segment,
    on_step: &mut OnStep<E>,
) -> Result<Vec<NodeTiming>, E> {
    let device = net.head.params.vs.device();
    let mut compute = 0.0;
    let mut wait = 0.0;
    let mut steps = 0;
    let mut batches = segment.batches.take(segment.steps);
    loop {
        let t0 = Instant::now();
        let Some(batch) = batches.next() else { break };
        wait += t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let x = batch.images.to_device(device);
        let y = batch.labels.to_device(device);
        let stats = net.train_step(&x, &y, segment.lr);
        compute += t1.elapsed().as_secs_f64();
        steps += 1;
        on_step(stats)?;
    }
    Ok(vec![NodeTiming {
        node: "all".into(),
        rank: 0,
        steps,
        compute_seconds: compute,
        wait_seconds: wait,
        comm_seconds: 0.0,
        bytes_sent: 0,
    }])
}
