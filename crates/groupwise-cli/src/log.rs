//! The run's log: every `tracing` event of the library and of the command (the config's source, the
//! plan, where each node runs and with how many threads, fresh start or resume, each epoch and
//! checkpoint, the result or the error) is appended to `<run_dir>/train.log` with a timestamp, while
//! the terminal keeps its progress bar and epoch lines. Until a run directory is chosen ([`to_run_dir`])
//! events go nowhere; under MPI only the leader writes the log.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use anyhow::{Context, Result};
use groupwise::train::RunDir;

/// The open log file, once a run directory is chosen.
static FILE: Mutex<Option<File>> = Mutex::new(None);

/// Installs the log as the process's `tracing` subscriber (INFO and above). Call once, first.
pub fn init() {
    // A second subscriber (tests calling the command in-process) keeps the first; nothing to do.
    let _ = tracing_subscriber::fmt()
        .with_writer(|| RunLog)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .try_init();
}

/// From now on events are appended to `dir`'s `train.log` (the directory is created if needed).
pub fn to_run_dir(dir: &RunDir) -> Result<()> {
    dir.create()?;
    let path = dir.log_path();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    *FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
    Ok(())
}

/// Where the subscriber writes: the run's log when there is one (each event arrives as one write).
struct RunLog;

impl Write for RunLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match FILE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(f) => f.write_all(buf).map(|()| buf.len()),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match FILE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}
