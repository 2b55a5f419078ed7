//! The MPI transport (cargo feature `mpi`): nodes spread over the ranks of `mpirun -np N`.
//!
//! - Placement: nodes in id order (module by module, groups within; then final columns and head) are
//!   cut into N contiguous runs that balance forward MACs; each rank runs its nodes as worker threads.
//!   With N = number of nodes, one node per rank.
//! - Traffic: every channel of the step ([`Topology::channels`]) has its own tag. Activations to the next
//!   module travel on a duplicate of `MPI_COMM_WORLD`; the slices and logits exchanged inside module k
//!   travel on module k's sub-communicator (the ranks hosting its groups, fixed at start-up).
//! - One progress thread per rank owns MPI during a segment (`MPI_THREAD_SERIALIZED`): it posts
//!   non-blocking sends (at most `--pipeline-depth` in flight per channel: double buffering at 2, and
//!   back-pressure beyond), and receives a channel's next message only when the local mailbox has room.
//!   It polls, backing off from 20 us to 1 ms while idle, so waiting ranks do not spin a core.
//! - Failure: a worker's error or panic, or an error on any rank, prints the rank and the message and
//!   calls `MPI_Abort`, which ends every rank of the job.
//! - Rank 0 is the leader: it alone reads and writes the run directory, broadcasts the config and the
//!   starting state, collects per-step statistics, and receives every node's state after each segment
//!   to evaluate and checkpoint.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use mpi::environment::Universe;
use mpi::point_to_point::MatchedReceiveVec;
use mpi::request::StaticScope;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use mpi::Threading;
use tch::{Device, Kind as DType, Tensor};

use super::topology::{Role, Topology};
use super::transport::{
    capacity, payload_bytes, Aborted, Channel, Kind, Mailboxes, Sent, Transport,
};
use super::worker;
use super::{
    default_threads_per_worker, place_nodes, placement, NodeRunner, NodeTiming, OnStep, Runtime,
    RuntimeError, Segment, Slots,
};
use crate::checkpoint::{self, Progress};
use crate::local::Network;
use crate::train::{Cluster, RunConfig, TrainError};

/// Shortest and longest sleep of the progress thread when idle.
const IDLE_MIN: Duration = Duration::from_micros(20);
const IDLE_MAX: Duration = Duration::from_millis(1);

/// Tags every MPI library allows (MPI_TAG_UB is at least this); one per channel of a step.
const MIN_TAG_UB: usize = 32767;

/// Control-message tags on `MPI_COMM_WORLD` (training traffic uses its own communicators).
const TAG_STATE: i32 = 1;

/// Handles that only one thread uses at a time: the main thread between segments, the progress
/// thread during one (`MPI_THREAD_SERIALIZED`).
struct Comms {
    world: SimpleCommunicator,
    data: SimpleCommunicator,
}

/// Module k's communicator and the world rank of each of its ranks, when this rank hosts one of its
/// groups.
struct ModuleComms(Vec<Option<(SimpleCommunicator, Vec<usize>)>>);

// SAFETY: as for `Comms` below: MPI handles used by one thread at a time (MPI_THREAD_SERIALIZED).
unsafe impl Send for ModuleComms {}
// SAFETY: as above.
unsafe impl Sync for ModuleComms {}

// SAFETY: MPI handles are plain identifiers. MPI is initialised with MPI_THREAD_SERIALIZED and the
// runtime guarantees that at most one thread calls MPI at any time (see the module docs), which is what
// that level requires; the handles are never used concurrently.
unsafe impl Send for Comms {}
// SAFETY: as above; shared references are only used by the one thread that currently owns MPI.
unsafe impl Sync for Comms {}

/// A job of `mpirun -np N groupwise train --transport mpi`.
pub struct MpiCluster {
    // Fields drop in order: communicators before the universe (which finalises MPI).
    comms: Comms,
    rank: usize,
    size: usize,
    runtime: Runtime,
    _universe: Universe,
}

impl MpiCluster {
    /// Initialises MPI and installs a panic hook that aborts the whole job.
    pub fn init(runtime: Runtime) -> Result<Self, RuntimeError> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| RuntimeError("MPI is already initialised".into()))?;
        if threading < Threading::Serialized {
            return Err(RuntimeError(format!(
                "the MPI library offers thread level {threading:?}; groupwise needs Serialized"
            )));
        }
        let world = universe.world();
        let rank = world.rank() as usize;
        let size = world.size() as usize;
        let data = world.duplicate();
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            eprintln!(
                "groupwise: rank {rank} ({}) panicked: {info}",
                thread.name().unwrap_or("a worker thread")
            );
            default_hook(info);
            // SAFETY: MPI_Abort on the world communicator, the documented way to end a job from any
            // rank; it does not return.
            unsafe {
                mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, 1);
            }
        }));
        Ok(MpiCluster {
            comms: Comms { world, data },
            rank,
            size,
            runtime,
            _universe: universe,
        })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Prints `message` as this rank's and ends the whole job (`MPI_Abort`).
    pub fn abort(&self, message: &str) -> ! {
        eprintln!("groupwise: rank {}: {message}", self.rank);
        self.comms.world.abort(1)
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        let root = self.comms.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        root.broadcast_into(&mut bytes[..]);
    }

    /// Sends the local nodes' state to the leader, which copies it into its network.
    fn gather_state(
        &self,
        net: &mut Network,
        topo: &Topology,
        ranks: &[usize],
    ) -> Result<(), TrainError> {
        if self.rank == 0 {
            for r in 1..self.size {
                let (bytes, _) = self
                    .comms
                    .world
                    .process_at_rank(r as i32)
                    .receive_vec_with_tag::<u8>(TAG_STATE);
                let tensors = decode_named(&bytes).map_err(RuntimeError)?;
                checkpoint::assign(net, &tensors, true, false)?;
            }
        } else {
            let prefixes: Vec<String> = (0..topo.len())
                .filter(|&id| ranks[id] == self.rank)
                .flat_map(|id| node_prefixes(topo, id))
                .collect();
            let named: Vec<(String, Tensor)> = net
                .named_tensors()
                .into_iter()
                .filter(|(n, _)| {
                    let n = n.strip_prefix("momentum.").unwrap_or(n);
                    prefixes.iter().any(|p| n.starts_with(p.as_str()))
                })
                .collect();
            self.comms
                .world
                .process_at_rank(0)
                .send_with_tag(&encode_named(&named)[..], TAG_STATE);
        }
        Ok(())
    }

    /// Creates every module's sub-communicator (collective over all ranks).
    fn module_comms(&self, topo: &Topology, ranks: &[usize]) -> ModuleComms {
        ModuleComms(
            (0..topo.boundaries)
                .map(|k| {
                    let mut members: Vec<usize> =
                        (0..topo.groups).map(|g| ranks[topo.unit(k, g)]).collect();
                    members.sort_unstable();
                    members.dedup();
                    let ids: Vec<i32> = members.iter().map(|&r| r as i32).collect();
                    let group = self.comms.world.group().include(&ids);
                    self.comms
                        .world
                        .split_by_subgroup_collective(&group)
                        .map(|c| (c, members))
                })
                .collect(),
        )
    }
}

/// Checkpoint-name prefixes of node `id`'s tensors.
fn node_prefixes(topo: &Topology, id: usize) -> Vec<String> {
    let mut out = vec![format!("{}.", topo.name(id))];
    if topo.role(id) == Role::Head && topo.merged_tail {
        out.push(format!("m{}.g0.", topo.boundaries));
    }
    out
}

/// Rank of every node: contiguous runs in id order with the largest run's MACs as small as possible.
pub fn assign_ranks(topo: &Topology, ranks: usize) -> Result<Vec<usize>, RuntimeError> {
    let n = topo.len();
    if ranks > n {
        return Err(RuntimeError(format!(
            "{ranks} MPI ranks but this plan has only {n} nodes; run with at most {n} ranks \
             (mpirun -np {n})"
        )));
    }
    let cost: Vec<f64> = (0..n).map(|id| topo.macs(id) as f64).collect();
    let mut prefix = vec![0.0];
    for c in &cost {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + c);
    }
    // best[j][i]: smallest largest-run cost of the first i nodes in j runs; cut[j][i]: start of run j.
    let mut best = vec![vec![f64::INFINITY; n + 1]; ranks + 1];
    let mut cut = vec![vec![0usize; n + 1]; ranks + 1];
    best[0][0] = 0.0;
    for j in 1..=ranks {
        for i in j..=n {
            for m in (j - 1)..i {
                let v = best[j - 1][m].max(prefix[i] - prefix[m]);
                if v < best[j][i] {
                    best[j][i] = v;
                    cut[j][i] = m;
                }
            }
        }
    }
    let mut out = vec![0; n];
    let mut end = n;
    for j in (1..=ranks).rev() {
        let start = cut[j][end];
        out[start..end].iter_mut().for_each(|r| *r = j - 1);
        end = start;
    }
    Ok(out)
}

impl Cluster for MpiCluster {
    fn leader(&self) -> bool {
        self.rank == 0
    }

    fn share_config(&self, config: &mut RunConfig) -> Result<(), TrainError> {
        let mut bytes = if self.rank == 0 {
            serde_json::to_vec(config).expect("config serialises")
        } else {
            Vec::new()
        };
        self.broadcast_bytes(&mut bytes);
        if self.rank != 0 {
            *config = serde_json::from_slice(&bytes)
                .map_err(|e| TrainError::Config(format!("config from rank 0: {e}")))?;
        }
        Ok(())
    }

    fn share_start(&self, net: &mut Network, progress: &mut Progress) -> Result<(), TrainError> {
        let mut bytes = if self.rank == 0 {
            let mut named: Vec<(String, Tensor)> = net.named_tensors().into_iter().collect();
            named.push(("train.epoch".into(), Tensor::from(progress.epoch as i64)));
            named.push(("train.step".into(), Tensor::from(progress.step as i64)));
            encode_named(&named)
        } else {
            Vec::new()
        };
        self.broadcast_bytes(&mut bytes);
        if self.rank != 0 {
            let tensors = decode_named(&bytes).map_err(RuntimeError)?;
            checkpoint::assign(net, &tensors, true, true)?;
            let scalar = |n: &str| tensors.get(n).map_or(0, |t| t.int64_value(&[]) as usize);
            *progress = Progress {
                epoch: scalar("train.epoch"),
                step: scalar("train.step"),
            };
        }
        Ok(())
    }

    fn run_segment(
        &self,
        net: Network,
        segment: Segment,
        on_step: &mut OnStep<TrainError>,
    ) -> (Network, Result<Vec<NodeTiming>, TrainError>) {
        let topo = Topology::new(&net.plan);
        let ranks = match assign_ranks(&topo, self.size) {
            Ok(r) => r,
            Err(e) => return (net, Err(e.into())),
        };
        let local: Vec<usize> = (0..topo.len())
            .filter(|&id| ranks[id] == self.rank)
            .collect();
        let base = net.head.params.vs.device();
        let devices = placement(&topo, &self.runtime.devices, base);
        let fault = match self
            .runtime
            .fault
            .as_deref()
            .map(|f| worker::parse_fault(f, &topo))
        {
            None => None,
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => return (net, Err(RuntimeError(e).into())),
        };
        let channels = topo.channels();
        if channels.len() > MIN_TAG_UB {
            let e = RuntimeError(format!(
                "this plan needs {} MPI tags; MPI guarantees only {MIN_TAG_UB}",
                channels.len()
            ));
            return (net, Err(e.into()));
        }
        let modules = self.module_comms(&topo, &ranks);
        let local_ranks = std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE")
            .or_else(|_| std::env::var("MPI_LOCALNRANKS"))
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(self.size);
        let threads = self
            .runtime
            .threads_per_worker
            .unwrap_or_else(|| default_threads_per_worker(local.len() * local_ranks.max(1)));
        let runner = NodeRunner {
            topo: &topo,
            local: local.clone(),
            devices: devices.clone(),
            ranks: ranks.clone(),
            threads_per_worker: threads,
            depth: self.runtime.pipeline_depth,
            leader: self.rank == 0,
            fault,
        };
        let transport = MpiTransport {
            rank: self.rank,
            ranks: ranks.clone(),
            collector: topo.collector(),
            tags: channels
                .iter()
                .enumerate()
                .map(|(i, c)| (*c, i as i32))
                .collect(),
            mailboxes: Mailboxes::new(self.runtime.pipeline_depth),
            outgoing: Mutex::new(VecDeque::new()),
            in_flight: Mutex::new(HashMap::new()),
            credit: Condvar::new(),
            depth: self.runtime.pipeline_depth.max(1),
        };
        let incoming: Vec<Channel> = channels
            .iter()
            .copied()
            .filter(|c| transport.is_local(c.dst) && !transport.is_local(c.src))
            .collect();
        let pump_state = Pump {
            comms: &self.comms,
            modules: &modules,
            topo: &topo,
            transport: &transport,
            incoming,
        };
        let pump = |done: &AtomicBool| pump_state.run(done);
        let mut slots = Slots::split(net, &topo);
        place_nodes(&mut slots, &devices);
        let result = runner.run(&mut slots, &transport, segment, on_step, Some(&pump));
        if let Some(msg) = transport.mailboxes.aborted() {
            self.abort(&msg);
        }
        let mut net = slots.join();
        let result = match result {
            Ok(t) => self.gather_state(&mut net, &topo, &ranks).map(|()| t),
            Err(e) => Err(e),
        };
        (net, result)
    }

    fn describe(&self) -> String {
        format!("mpi:{}", self.size)
    }

    fn abort_job(&self, message: &str) {
        self.abort(message)
    }
}

/// One rank's side of the traffic: local channels through mailboxes, remote ones through the pump.
struct MpiTransport {
    rank: usize,
    ranks: Vec<usize>,
    collector: usize,
    tags: HashMap<Channel, i32>,
    mailboxes: Mailboxes,
    /// Serialised messages waiting for the pump.
    outgoing: Mutex<VecDeque<(Channel, Vec<u8>)>>,
    /// Messages queued or in flight per remote channel.
    in_flight: Mutex<HashMap<Channel, usize>>,
    credit: Condvar,
    depth: usize,
}

impl MpiTransport {
    fn rank_of(&self, node: usize) -> usize {
        if node == self.collector {
            0
        } else {
            self.ranks[node]
        }
    }

    fn is_local(&self, node: usize) -> bool {
        self.rank_of(node) == self.rank
    }

    fn release(&self, channel: Channel) {
        let mut f = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = f.get_mut(&channel) {
            *n = n.saturating_sub(1);
        }
        self.credit.notify_all();
    }
}

impl Transport for MpiTransport {
    fn send(&self, channel: Channel, tensor: &Tensor) -> Result<Sent, Aborted> {
        if self.is_local(channel.dst) {
            return self.mailboxes.send(channel, tensor);
        }
        let bytes = payload_bytes(tensor);
        let message = encode_tensor(tensor);
        let bound = capacity(channel.kind, self.depth);
        let start = Instant::now();
        let mut f = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(m) = self.mailboxes.aborted() {
                return Err(Aborted(m));
            }
            let n = f.entry(channel).or_insert(0);
            if *n < bound {
                *n += 1;
                break;
            }
            f = self
                .credit
                .wait_timeout(f, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(f);
        let blocked = start.elapsed();
        self.outgoing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((channel, message));
        Ok(Sent { bytes, blocked })
    }

    fn recv(&self, channel: Channel) -> Result<Tensor, Aborted> {
        self.mailboxes.pop(channel)
    }

    fn abort(&self, message: String) {
        self.mailboxes.abort(message);
        self.credit.notify_all();
    }

    fn aborted(&self) -> Option<String> {
        self.mailboxes.aborted()
    }
}

/// The progress thread's view.
struct Pump<'a> {
    comms: &'a Comms,
    modules: &'a ModuleComms,
    topo: &'a Topology,
    transport: &'a MpiTransport,
    incoming: Vec<Channel>,
}

/// A posted send and the buffer it reads (reclaimed once the send completes).
struct Posted {
    request: mpi::request::Request<'static, [u8], StaticScope>,
    buffer: *mut [u8],
    channel: Channel,
}

impl Pump<'_> {
    /// The communicator a channel travels on and the peer's rank in it.
    fn route(&self, channel: Channel, peer_world_rank: usize) -> (&SimpleCommunicator, i32) {
        if matches!(channel.kind, Kind::Slice | Kind::Logits) {
            if let Role::Unit { module, .. } = self.topo.role(channel.src) {
                if let Some((comm, members)) = &self.modules.0[module] {
                    let r = members
                        .iter()
                        .position(|&m| m == peer_world_rank)
                        .expect("module peers are members of its communicator");
                    return (comm, r as i32);
                }
            }
        }
        (&self.comms.data, peer_world_rank as i32)
    }

    fn run(&self, done: &AtomicBool) -> Result<(), RuntimeError> {
        let t = self.transport;
        let mut posted: Vec<Posted> = Vec::new();
        let mut idle = IDLE_MIN;
        loop {
            if let Some(msg) = t.mailboxes.aborted() {
                eprintln!("groupwise: rank {}: {msg}", t.rank);
                self.comms.world.abort(1);
            }
            let mut progressed = false;
            // Post queued sends.
            loop {
                let next = t
                    .outgoing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop_front();
                let Some((channel, message)) = next else {
                    break;
                };
                let (comm, peer) = self.route(channel, t.rank_of(channel.dst));
                let buffer: &'static mut [u8] = Box::leak(message.into_boxed_slice());
                let ptr: *mut [u8] = buffer;
                let request = comm.process_at_rank(peer).immediate_send_with_tag(
                    StaticScope,
                    &*buffer,
                    t.tags[&channel],
                );
                posted.push(Posted {
                    request,
                    buffer: ptr,
                    channel,
                });
                progressed = true;
            }
            // Complete finished sends.
            let mut still = Vec::with_capacity(posted.len());
            for p in posted.drain(..) {
                match p.request.test() {
                    Ok(_) => {
                        // SAFETY: `buffer` came from Box::leak above and MPI no longer reads it: its
                        // send request has completed.
                        drop(unsafe { Box::from_raw(p.buffer) });
                        t.release(p.channel);
                        progressed = true;
                    }
                    Err(request) => still.push(Posted { request, ..p }),
                }
            }
            posted = still;
            // Receive what local mailboxes have room for.
            for &channel in &self.incoming {
                if !t.mailboxes.has_room(channel) {
                    continue;
                }
                let (comm, peer) = self.route(channel, t.rank_of(channel.src));
                if let Some(probed) = comm
                    .process_at_rank(peer)
                    .immediate_matched_probe_with_tag(t.tags[&channel])
                {
                    let (bytes, _) = probed.matched_receive_vec::<u8>();
                    let tensor = decode_tensor(&bytes).map_err(RuntimeError)?;
                    t.mailboxes
                        .push(channel, tensor)
                        .map_err(|Aborted(m)| RuntimeError(m))?;
                    progressed = true;
                }
            }
            if done.load(Ordering::SeqCst)
                && posted.is_empty()
                && t.outgoing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_empty()
            {
                return Ok(());
            }
            // Back off while nothing moves (a rank bound to one core shares it with its workers);
            // poll fast again as soon as something does.
            if progressed {
                idle = IDLE_MIN;
            } else {
                std::thread::sleep(idle);
                idle = (idle * 2).min(IDLE_MAX);
            }
        }
    }
}

// SAFETY: `Posted::buffer` points into a leaked box owned by its request until reclaimed; the pump
// thread that creates it is the only one that touches it.
unsafe impl Send for Posted {}

fn dtype_code(k: DType) -> u8 {
    match k {
        DType::Float => 0,
        DType::Double => 1,
        DType::Int64 => 2,
        DType::Half => 3,
        DType::BFloat16 => 4,
        other => panic!("no wire format for tensors of kind {other:?}"),
    }
}

fn dtype_of(code: u8) -> Result<DType, String> {
    Ok(match code {
        0 => DType::Float,
        1 => DType::Double,
        2 => DType::Int64,
        3 => DType::Half,
        4 => DType::BFloat16,
        c => return Err(format!("corrupt message: unknown dtype code {c}")),
    })
}

/// `[dtype u8][ndim u8][dims i64 LE...][elements]`.
fn encode_tensor(t: &Tensor) -> Vec<u8> {
    let t = t.to_device(Device::Cpu).contiguous();
    let dims = t.size();
    let numel = t.numel();
    let n = numel * t.kind().elt_size_in_bytes();
    let mut out = Vec::with_capacity(2 + 8 * dims.len() + n);
    out.push(dtype_code(t.kind()));
    out.push(dims.len() as u8);
    for d in &dims {
        out.extend_from_slice(&d.to_le_bytes());
    }
    let start = out.len();
    out.resize(start + n, 0);
    t.copy_data_u8(&mut out[start..], numel);
    out
}

fn decode_tensor(bytes: &[u8]) -> Result<Tensor, String> {
    let short = || "corrupt message: truncated".to_string();
    let kind = dtype_of(*bytes.first().ok_or_else(short)?)?;
    let ndim = *bytes.get(1).ok_or_else(short)? as usize;
    let mut dims = Vec::with_capacity(ndim);
    for i in 0..ndim {
        let b = bytes.get(2 + 8 * i..10 + 8 * i).ok_or_else(short)?;
        dims.push(i64::from_le_bytes(b.try_into().expect("8 bytes")));
    }
    let data = &bytes[2 + 8 * ndim..];
    let expected = dims.iter().product::<i64>() as usize * kind.elt_size_in_bytes();
    if data.len() != expected {
        return Err(format!(
            "corrupt message: {} data bytes for shape {dims:?}",
            data.len()
        ));
    }
    Tensor::f_from_data_size(data, &dims, kind).map_err(|e| e.to_string())
}

/// `[count u32]` then per tensor `[name len u32][name][tensor len u64][tensor]`.
fn encode_named(named: &[(String, Tensor)]) -> Vec<u8> {
    let mut out = (named.len() as u32).to_le_bytes().to_vec();
    for (name, t) in named {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        let bytes = encode_tensor(t);
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

fn decode_named(bytes: &[u8]) -> Result<BTreeMap<String, Tensor>, String> {
    let short = || "corrupt state message: truncated".to_string();
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = bytes.get(pos..pos + n).ok_or_else(short)?;
        pos += n;
        Ok(s)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
    let mut out = BTreeMap::new();
    for _ in 0..count {
        let len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        let name = String::from_utf8(take(len)?.to_vec()).map_err(|_| short())?;
        let len = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes")) as usize;
        let t = decode_tensor(take(len)?)?;
        out.insert(name, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_round_trips() {
        let t = Tensor::randn([2, 3, 4], (DType::Float, Device::Cpu));
        let back = decode_tensor(&encode_tensor(&t)).unwrap();
        assert!(t.equal(&back));
        let named = vec![("a.b".to_string(), t), ("n".into(), Tensor::from(5i64))];
        let map = decode_named(&encode_named(&named)).unwrap();
        assert_eq!(map["n"].int64_value(&[]), 5);
        assert!(decode_tensor(&[0, 1, 2]).is_err());
    }
}
