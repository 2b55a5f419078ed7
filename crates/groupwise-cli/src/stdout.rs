//! A command's results on standard output, and what happens when the reader goes away.
//!
//! Rust ignores SIGPIPE, so writing to a pipe whose reader has exited (`groupwise presets | head -1`)
//! fails with `BrokenPipe`, on which `println!` panics. Commands write their results through
//! [`stdout`] with `writeln!` and `?` instead (the crate denies `clippy::print_stdout`); the error
//! they return is recognised by `main` ([`is_closed`]), which exits quietly with status 0, as
//! ripgrep does: the reader took what it wanted. A broken pipe anywhere else stays an error.

use std::fmt;
use std::io::{self, Write};

/// Standard output, locked for a command's results; a write after the reader has gone fails with
/// an error [`is_closed`] recognises.
pub struct Stdout(io::StdoutLock<'static>);

/// This process's standard output.
pub fn stdout() -> Stdout {
    Stdout(io::stdout().lock())
}

/// The payload of the error a write to a closed standard output returns.
#[derive(Debug)]
struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed by its reader")
    }
}

impl std::error::Error for Closed {}

fn mark(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        io::Error::new(io::ErrorKind::BrokenPipe, Closed)
    } else {
        e
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(mark)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(mark)
    }
}

/// Whether `e` is a write to [`stdout`] after its reader went away (not a failure of the command).
pub fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<Closed>())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_stdout_is_recognised() {
        let closed = anyhow::Error::from(mark(io::ErrorKind::BrokenPipe.into()));
        assert!(is_closed(&closed));
        assert!(is_closed(&closed.context("printing the plan")));
        // A broken pipe to anything else (a child process) is an error like any other.
        let other = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(!is_closed(&other));
        assert!(!is_closed(&anyhow::Error::from(mark(
            io::ErrorKind::NotFound.into()
        ))));
    }
}
