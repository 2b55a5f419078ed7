//! SIGINT and SIGTERM during `groupwise train`. The first one sets the trainer's stop flag
//! ([`groupwise::train::Invocation::stop`]): the run finishes the steps in flight, writes its
//! checkpoint at the last of them, and the command prints how to resume and exits with 128 + the
//! signal (130 for SIGINT, 143 for SIGTERM, the shell's convention). A second one ends the process at
//! once, with the same status.
//!
//! Every MPI rank installs them (mpiexec and batch systems signal every rank), but only the leader's
//! flag stops the run: the other ranks follow its decision, step for step.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

/// The handlers of this process, and what they saw.
pub struct StopSignals {
    stop: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
}

impl StopSignals {
    /// Installs the handlers for the rest of the process's life.
    pub fn install() -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let which = Arc::new(AtomicUsize::new(0));
        for signal in [SIGINT, SIGTERM] {
            // In this order: the second signal finds the flag the first one set.
            flag::register_conditional_shutdown(signal, 128 + signal, stop.clone())
                .and_then(|_| flag::register_usize(signal, which.clone(), signal as usize))
                .and_then(|_| flag::register(signal, stop.clone()))
                .with_context(|| format!("cannot install a handler for {}", name(signal)))?;
        }
        Ok(StopSignals { stop, which })
    }

    /// The flag the trainer reads.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The signal received, if any.
    pub fn received(&self) -> Option<i32> {
        match self.which.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s as i32),
        }
    }
}

/// `SIGINT` or `SIGTERM`.
pub fn name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// The exit status after `signal`: 128 + its number.
pub fn exit_status(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(1)
}
