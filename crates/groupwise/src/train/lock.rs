//! The run directory's lock: one process trains in a directory at a time.
//!
//! The lock is an exclusive `flock` on `<run_dir>/lock`, taken by [`RunDir::open`](super::RunDir::open)
//! and held until the handle is dropped. The kernel releases it when its process ends, however it
//! ends, so a lock left by a killed run is taken over by the next one without a question. The file
//! stays (removing it would let two processes lock two different files of one name); it names the
//! last process that held the lock, which is how a refused run names the one in its way.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::run_dir::RunDirError;

/// Takes the lock of the directory `dir` (which must exist) and writes this process into the file;
/// [`RunDirError::Locked`] naming the holder when another process has it.
pub(super) fn acquire(dir: &Path, file_name: &str) -> Result<File, RunDirError> {
    let path = dir.join(file_name);
    let io = |source| RunDirError::Io {
        path: path.clone(),
        source,
    };
    let mut file = try_lock(dir, &path)?;
    let line = format!("pid {}\nhost {}\n", std::process::id(), hostname());
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(line.as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(file)
}

/// Whether another process holds the lock of `dir` now: its description, or `None` when the lock is
/// free (or there is no lock file). Taken and released at once, writing nothing: a check, not a
/// reservation.
pub(super) fn holder(dir: &Path, file_name: &str) -> Result<Option<String>, RunDirError> {
    let path = dir.join(file_name);
    if !path.exists() {
        return Ok(None);
    }
    match try_lock(dir, &path) {
        Ok(_released_on_drop) => Ok(None),
        Err(RunDirError::Locked { holder, .. }) => Ok(Some(holder)),
        Err(e) => Err(e),
    }
}

/// The lock file at `path`, opened (created if needed) and locked.
fn try_lock(dir: &Path, path: &Path) -> Result<File, RunDirError> {
    let io = |source| RunDirError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Never truncated on open: the holder's lines must survive a refused attempt.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            // An unreadable holder line still leaves a clear refusal.
            let _ = file.read_to_string(&mut text);
            Err(RunDirError::Locked {
                dir: dir.to_path_buf(),
                holder: describe(&text),
            })
        }
        Err(TryLockError::Error(source)) => Err(io(source)),
    }
}

/// "process 1234 on host-a" from the lock file's lines.
fn describe(text: &str) -> String {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .filter(|v| !v.is_empty())
    };
    match (field("pid "), field("host ")) {
        (Some(pid), Some(host)) => format!("process {pid} on {host}"),
        (Some(pid), None) => format!("process {pid}"),
        _ => "another process (it has not written its pid yet)".into(),
    }
}

/// This machine's name, for the lock file (Linux's, else the environment's, else a placeholder).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_lines_read_as_a_process() {
        assert_eq!(describe("pid 12\nhost box\n"), "process 12 on box");
        assert_eq!(describe("pid 12\n"), "process 12");
        assert!(describe("").contains("another process"));
    }
}
