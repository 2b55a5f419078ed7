//! One rank's traffic during a segment: [`MpiTransport`] (local channels through mailboxes, remote
//! ones queued for MPI) and the progress thread ([`Pump`]) that alone calls MPI while workers run.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use mpi::point_to_point::MatchedReceiveVec;
use mpi::request::StaticScope;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use tch::Tensor;

use super::super::topology::{Role, Topology};
use super::super::transport::{
    capacity, payload_bytes, Aborted, Channel, Kind, Mailboxes, Sent, Transport,
};
use super::super::RuntimeError;
use super::comms::{decode_tensor, encode_tensor, Comms, ModuleComms};

/// Shortest and longest sleep of the progress thread when idle.
const IDLE_MIN: Duration = Duration::from_micros(20);
const IDLE_MAX: Duration = Duration::from_millis(1);

/// One rank's side of the traffic: local channels through mailboxes, remote ones through the pump.
pub(super) struct MpiTransport {
    pub(super) rank: usize,
    pub(super) ranks: Vec<usize>,
    pub(super) collector: usize,
    pub(super) tags: HashMap<Channel, i32>,
    pub(super) mailboxes: Mailboxes,
    /// Serialised messages waiting for the pump.
    pub(super) outgoing: Mutex<VecDeque<(Channel, Vec<u8>)>>,
    /// Messages queued or in flight per remote channel.
    pub(super) in_flight: Mutex<HashMap<Channel, usize>>,
    pub(super) credit: Condvar,
    pub(super) depth: usize,
}

impl MpiTransport {
    fn rank_of(&self, node: usize) -> usize {
        if node == self.collector {
            0
        } else {
            self.ranks[node]
        }
    }

    pub(super) fn is_local(&self, node: usize) -> bool {
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
        // A tensor no format can carry is a bug of the caller: fail the job with its message.
        let message = encode_tensor(tensor).map_err(Aborted)?;
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
pub(super) struct Pump<'a> {
    pub(super) comms: &'a Comms,
    pub(super) modules: &'a ModuleComms,
    pub(super) topo: &'a Topology,
    pub(super) transport: &'a MpiTransport,
    pub(super) incoming: Vec<Channel>,
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

    pub(super) fn run(&self, done: &AtomicBool) -> Result<(), RuntimeError> {
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
                    let tensor = decode_tensor(&bytes).map_err(RuntimeError::Failed)?;
                    t.mailboxes
                        .push(channel, tensor)
                        .map_err(RuntimeError::from)?;
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
