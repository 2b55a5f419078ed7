//! [`RunDir`]: the one owner of a run directory's files and of the decision what to do with one.
//!
//! A run directory holds `config.json` (the resolved config, written before step 1; `--config` replays
//! it), `metrics.jsonl` (one line per epoch), `checkpoint.safetensors` (after every epoch and when a run
//! stops early; see `checkpoint` for the names), `summary.json` (at the end) and `train.log` (what was
//! decided, written by the command line). Every write is atomic ([`crate::atomic`]) except the metrics
//! append, whose lines past the checkpoint's epoch a resume drops.
//!
//! Who may do what:
//! - A process that trains ([`RunDir::open`]) holds the directory's lock (`lock`, see `lock.rs`) for
//!   as long as it runs: a second `groupwise train` (or a sweep's run) in the same directory is
//!   refused with the holder's pid and host, before it changes anything. Under the lock, the `.tmp`
//!   files an interrupted atomic write left behind are removed ([`RunDir::remove_stale_tmp`]).
//! - Readers (`groupwise eval`, `groupwise report`, a sweep looking at where its runs stand) use
//!   [`RunDir::new`] and take no lock: every file they read is replaced atomically, so they see the
//!   last complete checkpoint, config and summary even while a run trains; only the metrics' last
//!   line may be half-written, and readers of it say which line is bad.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;
use tracing::warn;

use super::config::RunConfig;
use super::metrics::{EpochMetrics, MetricsLog, Summary};
use super::trace::TraceFile;
use crate::checkpoint::{self, CheckpointError, Progress};

/// A run-directory file that cannot be read or written, or a directory that cannot take this run.
#[derive(Debug, Error)]
pub enum RunDirError {
    /// The OS refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file that is not what groupwise writes there.
    #[error("{path}: not a groupwise {what}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint cannot be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The directory holds a run of another config.
    #[error("{dir} holds a run of a different config ({settings} differ); {hint}")]
    Conflict {
        /// The directory.
        dir: PathBuf,
        /// The settings that differ, as dotted config keys.
        settings: String,
        /// What to do instead.
        hint: &'static str,
    },
    /// Another process trains in the directory (it holds the lock).
    #[error(
        "{dir} is in use by {holder}, which is training there; wait for it to end or stop it \
         (two runs in one directory would mix their files)"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The holding process: its pid and host.
        holder: String,
    },
    /// A fresh run asked for a directory that already holds one.
    #[error("{0} already holds a run; pass --resume to continue it or choose another --run-dir")]
    Occupied(PathBuf),
}

/// What a directory holds for a planned run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Nothing there yet (or nothing worth keeping): train from the start.
    Fresh,
    /// A checkpoint: resume from where it stands.
    Resume(Progress),
    /// `summary.json` is there: the run finished.
    Done,
}

/// A run directory: a path, and for a process that trains there, the directory's lock.
#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
    /// The open, locked lock file ([`RunDir::open`]); released when the last clone is dropped.
    lock: Option<Arc<File>>,
}

impl RunDir {
    /// Resolved configuration.
    pub const CONFIG: &'static str = "config.json";
    /// Per-epoch metrics.
    pub const METRICS: &'static str = "metrics.jsonl";
    /// Latest checkpoint.
    pub const CHECKPOINT: &'static str = "checkpoint.safetensors";
    /// Final summary.
    pub const SUMMARY: &'static str = "summary.json";
    /// The latest epoch's last steps, node by node ([`TraceFile`]).
    pub const TRACE: &'static str = "trace.json";
    /// The run's log.
    pub const LOG: &'static str = "train.log";
    /// The lock file: held by the process training here, and naming it.
    pub const LOCK: &'static str = "lock";

    /// The run directory at `path`, to read (nothing is touched, no lock is taken).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RunDir {
            path: path.into(),
            lock: None,
        }
    }

    /// The run directory at `path`, to train in: created if needed and locked for as long as the
    /// handle (or a clone) lives. [`RunDirError::Locked`] naming the holder when another process
    /// trains there; a lock whose process ended is taken over.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, RunDirError> {
        let dir = RunDir::new(path);
        dir.create()?;
        let lock = super::lock::acquire(&dir.path, Self::LOCK)?;
        Ok(RunDir {
            lock: Some(Arc::new(lock)),
            ..dir
        })
    }

    /// Whether this handle holds the directory's lock ([`RunDir::open`]).
    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }

    /// The process that holds the directory's lock now ("process PID on HOST"), or `None` when no
    /// process does. A check for readers that are about to start a run there; it reserves nothing.
    pub fn holder(&self) -> Result<Option<String>, RunDirError> {
        if self.lock.is_some() {
            return Ok(None);
        }
        super::lock::holder(&self.path, Self::LOCK)
    }

    /// Removes the `.tmp` files that interrupted atomic writes left in the directory (a full disk, a
    /// kill mid-write) and returns their paths. Only the lock's holder may: a running writer's `.tmp`
    /// is not stale.
    pub fn remove_stale_tmp(&self) -> Result<Vec<PathBuf>, RunDirError> {
        assert!(
            self.lock.is_some(),
            "RunDir::remove_stale_tmp needs the lock (RunDir::open)"
        );
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RunDirError::Io { path, source }
        };
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(&self.path).map_err(io(&self.path))? {
            let path = entry.map_err(io(&self.path))?.path();
            let stale = path.extension().is_some_and(|e| e == "tmp") && path.is_file();
            if stale {
                std::fs::remove_file(&path).map_err(io(&path))?;
                removed.push(path);
            }
        }
        removed.sort();
        Ok(removed)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of one of its files.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The checkpoint's path.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.file(Self::CHECKPOINT)
    }

    /// The log's path.
    pub fn log_path(&self) -> PathBuf {
        self.file(Self::LOG)
    }

    /// Whether the run finished (`summary.json` is there).
    pub fn finished(&self) -> bool {
        self.file(Self::SUMMARY).exists()
    }

    /// Creates the directory (and its parents).
    pub fn create(&self) -> Result<(), RunDirError> {
        std::fs::create_dir_all(&self.path).map_err(|source| RunDirError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Writes `bytes` to file `name` atomically.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), RunDirError> {
        let path = self.file(name);
        crate::atomic::write(&path, bytes).map_err(|source| RunDirError::Io { path, source })
    }

    /// The JSON file `name` of the run; `None` when it does not exist (yet).
    fn read_optional<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, RunDirError> {
        let path = self.file(name);
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path, name_of(name)).map(Some)
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), RunDirError> {
        let json = serde_json::to_string_pretty(value).map_err(|e| RunDirError::Corrupt {
            path: self.file(name),
            what: name_of(name),
            reason: e.to_string(),
        })?;
        self.write(name, json.as_bytes())
    }

    /// The run's `config.json`.
    pub fn read_config(&self) -> Result<RunConfig, RunDirError> {
        read_config_file(&self.file(Self::CONFIG))
    }

    /// Writes `config.json`.
    pub fn write_config(&self, config: &RunConfig) -> Result<(), RunDirError> {
        self.write_json(Self::CONFIG, config)
    }

    /// The run's `summary.json`, once it finished.
    pub fn read_summary(&self) -> Result<Option<Summary>, RunDirError> {
        self.read_optional(Self::SUMMARY)
    }

    /// Writes `summary.json`.
    pub fn write_summary(&self, summary: &Summary) -> Result<(), RunDirError> {
        self.write_json(Self::SUMMARY, summary)
    }

    /// Writes `trace.json` (atomically, replacing the previous epoch's).
    pub fn write_trace(&self, trace: &TraceFile) -> Result<(), RunDirError> {
        self.write_json(Self::TRACE, trace)
    }

    /// The run's `trace.json`; `None` when it has none (a sequential run, or no epoch finished yet).
    pub fn read_trace(&self) -> Result<Option<TraceFile>, RunDirError> {
        self.read_optional(Self::TRACE)
    }

    /// `metrics.jsonl` (empty when it does not exist): its complete lines, and the number of a last
    /// line cut short ([`MetricsLog`]); any other line that does not parse is an error naming it.
    pub fn read_metrics(&self) -> Result<MetricsLog, RunDirError> {
        let path = self.file(Self::METRICS);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(MetricsLog::default()),
            Err(source) => return Err(RunDirError::Io { path, source }),
        };
        MetricsLog::parse(&bytes).map_err(|e| RunDirError::Corrupt {
            path,
            what: "metrics line",
            reason: e.to_string(),
        })
    }

    /// Appends an epoch's line to `metrics.jsonl`.
    pub fn append_metrics(&self, metrics: &EpochMetrics) -> Result<(), RunDirError> {
        let path = self.file(Self::METRICS);
        let io = |source| RunDirError::Io {
            path: path.clone(),
            source,
        };
        let line = serde_json::to_string(metrics).map_err(|e| RunDirError::Corrupt {
            path: path.clone(),
            what: "metrics line",
            reason: e.to_string(),
        })?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        // One write, so that a kill leaves at most this line cut short.
        f.write_all(format!("{line}\n").as_bytes()).map_err(io)
    }

    /// Keeps the metrics lines of epochs up to `epoch` (a crash between an epoch's line and its
    /// checkpoint leaves one too many; a fresh run, `epoch` 0, keeps none). A last line cut short is
    /// dropped with a warning in the log; a line that does not parse before it is an error, as for
    /// [`RunDir::read_metrics`].
    pub fn keep_metrics_through(&self, epoch: usize) -> Result<(), RunDirError> {
        if !self.file(Self::METRICS).exists() {
            return Ok(());
        }
        if epoch == 0 {
            return self.write(Self::METRICS, b"");
        }
        let log = self.read_metrics()?;
        if let Some(line) = log.cut_short {
            warn!(
                "{}: line {line} was cut short (the run stopped while writing it); dropped",
                self.file(Self::METRICS).display()
            );
        }
        self.write(Self::METRICS, log.text_through(epoch).as_bytes())
    }

    /// Where the checkpoint says the run stands (`None` without a checkpoint).
    pub fn progress(&self) -> Result<Option<Progress>, RunDirError> {
        let path = self.checkpoint_path();
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(checkpoint::read_progress(&path)?))
    }

    /// What this directory holds for a run of `planned`: nothing, a run to resume, or a finished run;
    /// an error naming the settings when it holds a run of another config. The checkpoint, not
    /// `metrics.jsonl`, says how far a run got.
    pub fn state(&self, planned: &RunConfig) -> Result<RunState, RunDirError> {
        if !self.file(Self::CONFIG).exists() {
            return Ok(RunState::Fresh);
        }
        let existing = self.read_config()?;
        let differ = differing_settings(&existing, planned);
        if !differ.is_empty() {
            return Err(RunDirError::Conflict {
                dir: self.path.clone(),
                settings: differ.join(", "),
                hint: "move it away, or choose another directory",
            });
        }
        if self.finished() {
            return Ok(RunState::Done);
        }
        Ok(match self.progress()? {
            Some(p) => RunState::Resume(p),
            None => RunState::Fresh,
        })
    }
}

/// A JSON file groupwise wrote (`what` names it in errors).
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &'static str) -> Result<T, RunDirError> {
    let text = std::fs::read_to_string(path).map_err(|source| RunDirError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| RunDirError::Corrupt {
        path: path.to_path_buf(),
        what,
        reason: e.to_string(),
    })
}

/// A run's config file (`config.json`, or a `--config` replaying one), including those older versions
/// wrote: they stored `max_steps`, which now limits one invocation and is no part of a run.
pub fn read_config_file(path: &Path) -> Result<RunConfig, RunDirError> {
    let mut value: serde_json::Value = read_json(path, "config")?;
    if let Some(fields) = value.as_object_mut() {
        fields.remove("max_steps");
    }
    serde_json::from_value(value).map_err(|e| RunDirError::Corrupt {
        path: path.to_path_buf(),
        what: "config",
        reason: e.to_string(),
    })
}

fn name_of(file: &str) -> &'static str {
    match file {
        RunDir::CONFIG => "config",
        RunDir::SUMMARY => "summary",
        RunDir::TRACE => "trace",
        _ => "file",
    }
}

/// The settings (dotted `config.json` keys) in which two configs define different runs. The data's
/// location (`data.path`) is not one of them: a dataset may move between two invocations of a run
/// (`--data-dir`); what it holds may not.
pub fn differing_settings(a: &RunConfig, b: &RunConfig) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value::Object;
        match (a, b) {
            (Object(x), Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let null = serde_json::Value::Null;
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(
                        &key,
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let (Ok(a), Ok(b)) = (serde_json::to_value(a), serde_json::to_value(b)) else {
        return vec!["(config)".into()];
    };
    let mut out = Vec::new();
    walk("", &a, &b, &mut out);
    out.retain(|key| key != "data.path");
    out
}
