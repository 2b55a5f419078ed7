//! The MPI transport (cargo feature `mpi`): nodes spread over the ranks of `mpirun -np N`.
//!
//! - Placement: the [`Layout`] every transport uses: nodes in id order (module by module, groups
//!   within; then final columns and head) cut into N contiguous runs that balance forward MACs (or the
//!   seconds per step of `--placement FILE`); each rank runs its nodes on its share of worker threads,
//!   cut the same way. With N = number of nodes, one node per rank.
//! - Traffic: every channel of the step ([`Topology::channels`](super::Topology::channels)) has its own tag. Activations to the next
//!   module travel on a duplicate of `MPI_COMM_WORLD`; the slices and logits exchanged inside module k
//!   travel on module k's sub-communicator (the ranks hosting its groups, made once when the run
//!   starts).
//! - One progress thread per rank owns MPI during a segment (`MPI_THREAD_SERIALIZED`): it posts
//!   non-blocking sends (at most `--pipeline-depth` in flight per channel: double buffering at 2, and
//!   back-pressure beyond), and receives a channel's next message only when the local mailbox has room.
//!   It polls, backing off from 20 us to 1 ms while idle, so waiting ranks do not spin a core.
//! - Failure: a worker's error or panic, or an error on any rank, prints the rank and the message and
//!   calls `MPI_Abort`, which ends every rank of the job.
//! - Rank 0 is the leader: it alone reads and writes the run directory, broadcasts the config and the
//!   starting state, collects per-step statistics, and receives every node's state after each segment
//!   to evaluate and checkpoint. Messages and state travel as safetensors bytes (the checkpoint
//!   format, [`checkpoint::to_bytes`]).
//! - Stopping: only the leader reads the stop request (a signal, on the command line); its feeder
//!   sends every other rank's feeder its word on each step, so a stop ends every rank after the same
//!   step and the leader checkpoints there. Other ranks ignore their own stop requests.

mod comms;
mod pump;

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};

use mpi::environment::Universe;
use mpi::topology::Communicator;
use mpi::traits::*;
use mpi::Threading;
use tch::{Device, Tensor};

use super::runner::{NodeRunner, Slots};
use super::transport::Mailboxes;
use super::{Cluster, Layout, OnStep, Runtime, RuntimeError, Segment, SegmentEnd};
use crate::checkpoint::{self, Coverage, Progress, Restore};
use crate::local::Network;
use crate::plan::Plan;
use comms::{Comms, ModuleComms};
use pump::{MpiTransport, Pump};

/// Tags every MPI library allows (MPI_TAG_UB is at least this); one per channel of a step.
const MIN_TAG_UB: usize = 32767;

/// Control-message tags on `MPI_COMM_WORLD` (training traffic uses its own communicators).
const TAG_STATE: i32 = 1;

/// A job of `mpirun -np N groupwise train --transport mpi`.
pub struct MpiCluster {
    // Fields drop in order: communicators before the universe (which finalises MPI).
    started: Option<Started>,
    comms: Comms,
    rank: usize,
    size: usize,
    runtime: Runtime,
    _universe: Universe,
}

/// What [`Cluster::start`] fixes for the whole run.
struct Started {
    layout: Layout,
    modules: ModuleComms,
    tags: HashMap<super::Channel, i32>,
}

impl MpiCluster {
    /// Initialises MPI and installs a panic hook that aborts the whole job.
    pub fn init(runtime: Runtime) -> Result<Self, RuntimeError> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| RuntimeError::Failed("MPI is already initialised".into()))?;
        if threading < Threading::Serialized {
            return Err(RuntimeError::Failed(format!(
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
            started: None,
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
    fn gather_state(&self, net: &mut Network, layout: &Layout) -> Result<(), RuntimeError> {
        if self.rank == 0 {
            for r in 1..self.size {
                let (bytes, _) = self
                    .comms
                    .world
                    .process_at_rank(r as i32)
                    .receive_vec_with_tag::<u8>(TAG_STATE);
                let tensors = checkpoint::from_bytes(&bytes)
                    .map_err(|e| RuntimeError::Failed(format!("state from rank {r}: {e}")))?;
                checkpoint::assign(net, &tensors, Restore::State, Coverage::Present)?;
            }
        } else {
            let prefixes: Vec<String> = layout
                .local()
                .into_iter()
                .flat_map(|id| layout.topo.held_by(id))
                .map(|node| node.prefix())
                .collect();
            let named: Vec<(String, Tensor)> = net
                .named_tensors()
                .into_iter()
                .filter(|(n, _)| {
                    let n = n.strip_prefix("momentum.").unwrap_or(n);
                    prefixes.iter().any(|p| n.starts_with(p.as_str()))
                })
                .collect();
            let bytes = checkpoint::to_bytes(&named).map_err(RuntimeError::Failed)?;
            self.comms
                .world
                .process_at_rank(0)
                .send_with_tag(&bytes[..], TAG_STATE);
        }
        Ok(())
    }

    /// Creates every module's sub-communicator (collective over all ranks).
    fn module_comms(&self, layout: &Layout) -> ModuleComms {
        let topo = &layout.topo;
        ModuleComms(
            (0..topo.boundaries)
                .map(|k| {
                    let mut members: Vec<usize> = (0..topo.groups)
                        .map(|g| layout.ranks[topo.unit(k, g)])
                        .collect();
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

impl Cluster for MpiCluster {
    fn leader(&self) -> bool {
        self.rank == 0
    }

    fn broadcast(&self, bytes: &mut Vec<u8>) -> Result<(), RuntimeError> {
        self.broadcast_bytes(bytes);
        Ok(())
    }

    fn share_start(&self, net: &mut Network, progress: &mut Progress) -> Result<(), RuntimeError> {
        let mut bytes = if self.rank == 0 {
            checkpoint::to_bytes(&checkpoint::named_state(net, *progress))
                .map_err(RuntimeError::Failed)?
        } else {
            Vec::new()
        };
        self.broadcast_bytes(&mut bytes);
        if self.rank != 0 {
            let tensors = checkpoint::from_bytes(&bytes)
                .map_err(|e| RuntimeError::Failed(format!("state from rank 0: {e}")))?;
            checkpoint::assign(net, &tensors, Restore::State, Coverage::All)?;
            *progress = Progress::from_named(&tensors);
        }
        Ok(())
    }

    fn start(&mut self, plan: &Plan, device: Device) -> Result<(), RuntimeError> {
        let local_ranks = std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE")
            .or_else(|_| std::env::var("MPI_LOCALNRANKS"))
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(self.size);
        let layout = Layout::new(
            plan,
            &self.runtime,
            device,
            self.size,
            self.rank,
            local_ranks,
        )?;
        // The step's channels, then the leader's word to each other rank's feeder.
        let mut channels = layout.topo.channels();
        channels.extend(layout.feed_channels());
        if channels.len() > MIN_TAG_UB {
            return Err(RuntimeError::Failed(format!(
                "this plan needs {} MPI tags; MPI guarantees only {MIN_TAG_UB}",
                channels.len()
            )));
        }
        let tags = channels
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, i as i32))
            .collect();
        let modules = self.module_comms(&layout);
        self.started = Some(Started {
            layout,
            modules,
            tags,
        });
        Ok(())
    }

    fn run_segment(
        &mut self,
        net: Network,
        segment: Segment,
        on_step: &mut OnStep,
    ) -> (Network, Result<SegmentEnd, RuntimeError>) {
        let Some(started) = &self.started else {
            let e = RuntimeError::Failed("the MPI cluster was not started".into());
            return (net, Err(e));
        };
        let layout = &started.layout;
        let depth = layout.depth;
        let transport = MpiTransport {
            rank: self.rank,
            ranks: layout.ranks.clone(),
            collector: layout.topo.collector(),
            tags: started.tags.clone(),
            mailboxes: Mailboxes::new(depth),
            outgoing: Mutex::new(VecDeque::new()),
            in_flight: Mutex::new(HashMap::new()),
            credit: Condvar::new(),
            depth,
        };
        let incoming = started
            .tags
            .keys()
            .copied()
            .filter(|c| transport.is_local(c.dst) && !transport.is_local(c.src))
            .collect();
        let pump_state = Pump {
            comms: &self.comms,
            modules: &started.modules,
            topo: &layout.topo,
            transport: &transport,
            incoming,
        };
        let pump = |done: &std::sync::atomic::AtomicBool| pump_state.run(done);
        let mut slots = Slots::split(net, layout);
        let runner = NodeRunner {
            layout,
            leader: self.rank == 0,
        };
        let result = runner.run(&mut slots, &transport, segment, on_step, Some(&pump));
        if let Some(msg) = super::Transport::aborted(&transport) {
            self.abort(&msg);
        }
        let mut net = slots.join();
        let result = result.and_then(|t| self.gather_state(&mut net, layout).map(|()| t));
        (net, result)
    }

    fn describe(&self) -> String {
        format!("mpi:{}", self.size)
    }

    fn placement(&self) -> String {
        match &self.started {
            Some(s) => format!("{} MPI ranks; {}", self.size, s.layout.describe()),
            None => format!("{} MPI ranks (not started)", self.size),
        }
    }

    fn abort_job(&self, message: &str) {
        self.abort(message)
    }
}
