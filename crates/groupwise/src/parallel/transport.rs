//! How nodes exchange tensors: the [`Transport`] trait and the in-process mailboxes behind it.
//!
//! A message travels on a [`Channel`]: (source node, destination node, kind). Channels are FIFO, so a
//! worker never names a step: the t-th message on a channel belongs to step t. Every channel is bounded
//! (`--pipeline-depth` messages in flight), which is the pipeline's back-pressure. When any node fails,
//! the mailboxes are aborted: every blocked or later send and receive returns [`Aborted`] with the
//! failure's message, so no worker waits forever on a peer that is gone.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tch::Tensor;
use thiserror::Error;

/// What a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A node's output slice, to the next module (its input).
    Activation,
    /// A node's output slice, to a group of its own module (stop-gradient auxiliary input).
    Slice,
    /// A node's auxiliary logits, to a group of its own module (diversity term).
    Logits,
    /// Gradient of the head's loss w.r.t. a final column's output (K=1 with G > 1 only).
    Gradient,
    /// Per-step statistics, to the collector.
    Stats,
    /// Per-node timings at the end of a segment, to the collector.
    Timing,
    /// The leader's word on each step of a segment (go on, or stop here), to the feeder of every
    /// other process; a scalar int64, 1 or 0.
    Feed,
}

/// One FIFO link between two nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Channel {
    /// Sending node.
    pub src: usize,
    /// Receiving node.
    pub dst: usize,
    /// What it carries.
    pub kind: Kind,
}

impl Channel {
    /// A channel.
    pub fn new(src: usize, dst: usize, kind: Kind) -> Self {
        Channel { src, dst, kind }
    }
}

/// The job is being torn down because a node failed; carries that failure's message.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Aborted(pub String);

/// What one send cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    /// Payload bytes.
    pub bytes: u64,
    /// Time blocked by back-pressure (the receiver is behind), not copying.
    pub blocked: Duration,
}

/// Moves tensors between nodes. Workers are written against this trait only: the same worker runs
/// with the nodes on worker threads of one process ([`Mailboxes`]) or spread over MPI ranks.
pub trait Transport: Sync {
    /// Sends `tensor` on `channel` (the sender must be a node of this process). Blocks while the
    /// channel already holds `--pipeline-depth` messages.
    fn send(&self, channel: Channel, tensor: &Tensor) -> Result<Sent, Aborted>;
    /// The next message on `channel` (the receiver must be a node of this process).
    fn recv(&self, channel: Channel) -> Result<Tensor, Aborted>;
    /// Tears the job down with `message` (idempotent: the first message wins).
    fn abort(&self, message: String);
    /// The abort message, once aborted.
    fn aborted(&self) -> Option<String>;
}

#[derive(Default)]
struct State {
    queues: HashMap<Channel, VecDeque<Tensor>>,
    abort: Option<String>,
}

/// Bounded FIFO queues between the nodes of one process.
pub struct Mailboxes {
    state: Mutex<State>,
    changed: Condvar,
    depth: usize,
}

impl Mailboxes {
    /// Mailboxes holding at most `depth` (>= 1) messages per channel; `Stats` and `Timing` channels are
    /// unbounded (tiny, and the collector must never stall a worker).
    pub fn new(depth: usize) -> Self {
        Mailboxes {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            depth: depth.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked while holding the lock left consistent queues (every critical section
        // is a single push or pop), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bound(&self, channel: Channel) -> usize {
        capacity(channel.kind, self.depth)
    }

    /// Whether `channel` can take a message now without blocking.
    pub fn has_room(&self, channel: Channel) -> bool {
        let state = self.lock();
        state.queues.get(&channel).map_or(0, VecDeque::len) < self.bound(channel)
    }

    /// Appends a message, waiting for room; returns the time spent waiting.
    pub fn push(&self, channel: Channel, tensor: Tensor) -> Result<Duration, Aborted> {
        let bound = self.bound(channel);
        let start = Instant::now();
        let mut state = self.lock();
        loop {
            if let Some(msg) = &state.abort {
                return Err(Aborted(msg.clone()));
            }
            let queue = state.queues.entry(channel).or_default();
            if queue.len() < bound {
                queue.push_back(tensor);
                self.changed.notify_all();
                return Ok(start.elapsed());
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Removes the next message, waiting for one.
    pub fn pop(&self, channel: Channel) -> Result<Tensor, Aborted> {
        let mut state = self.lock();
        loop {
            if let Some(msg) = &state.abort {
                return Err(Aborted(msg.clone()));
            }
            if let Some(t) = state.queues.get_mut(&channel).and_then(VecDeque::pop_front) {
                self.changed.notify_all();
                return Ok(t);
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Marks the mailboxes aborted and wakes every waiter.
    pub fn abort(&self, message: String) {
        let mut state = self.lock();
        if state.abort.is_none() {
            state.abort = Some(message);
        }
        self.changed.notify_all();
    }

    /// The abort message, once aborted.
    pub fn aborted(&self) -> Option<String> {
        self.lock().abort.clone()
    }
}

impl Transport for Mailboxes {
    fn send(&self, channel: Channel, tensor: &Tensor) -> Result<Sent, Aborted> {
        let bytes = payload_bytes(tensor);
        // In one process a message is the tensor itself (no copy): senders never write to a tensor
        // after sending it.
        let blocked = self.push(channel, tensor.shallow_clone())?;
        Ok(Sent { bytes, blocked })
    }

    fn recv(&self, channel: Channel) -> Result<Tensor, Aborted> {
        self.pop(channel)
    }

    fn abort(&self, message: String) {
        Mailboxes::abort(self, message)
    }

    fn aborted(&self) -> Option<String> {
        Mailboxes::aborted(self)
    }
}

/// Bytes of a tensor's elements.
pub fn payload_bytes(t: &Tensor) -> u64 {
    (t.numel() * t.kind().elt_size_in_bytes()) as u64
}

/// Messages a channel of `kind` may hold: `depth` for the training data, unbounded for `Stats` and
/// `Timing` (tiny, and the collector must never stall a worker).
pub fn capacity(kind: Kind, depth: usize) -> usize {
    match kind {
        Kind::Stats | Kind::Timing => usize::MAX,
        _ => depth,
    }
}
