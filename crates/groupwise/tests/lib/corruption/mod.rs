//! Readers under random corruption: each dataset reader and the checkpoint reader is handed a tiny
//! valid file changed by a seeded sequence of mutations (truncations, bit flips, overwritten and
//! appended bytes, header fields set to extreme values, rewritten headers) and must never panic,
//! never make an allocation the file cannot justify, and either read the file (a flipped pixel keeps
//! it valid) or fail with an error that names it.
//!
//! The cases of every format follow from one seed, [`DEFAULT_SEED`] unless the environment variable
//! `GROUPWISE_CORRUPTION_SEED` gives another (to explore beyond what CI runs). A failure lists the
//! seed and each failing case's number and mutation, which replay it exactly.
//!
//! This module holds the mutations, the runner and the allocation watch; each submodule runs one
//! family of formats: `idx` (and gzip), `cifar`, `npz` and `checkpoint` (safetensors).

use std::any::Any;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use groupwise::data::rng::Rng;

use crate::data_readers::gzip;

mod checkpoint;
mod cifar;
mod idx;
mod npz;

/// The seed CI runs.
const DEFAULT_SEED: u64 = 20_240_601;

/// Files up to this size are cut at every length; larger ones at every length of their first and
/// last [`EDGE`] bytes and at [`RANDOM_CUTS`] random lengths.
const EVERY_LENGTH: usize = 4096;
/// Bytes at each end of a file where the structure lives (headers; a zip's central directory).
const EDGE: usize = 64;
/// Random truncation lengths of a larger file.
const RANDOM_CUTS: usize = 64;
/// Single-bit flips per file.
const FLIPS: usize = 300;
/// Cases with several random bytes overwritten, per file.
const BURSTS: usize = 100;

/// The seed of this run.
fn seed() -> u64 {
    match std::env::var("GROUPWISE_CORRUPTION_SEED") {
        Ok(s) => s.parse().expect("GROUPWISE_CORRUPTION_SEED is a u64"),
        Err(_) => DEFAULT_SEED,
    }
}

/// Watches the allocations of the thread running a case.
///
/// `unsafe` because [`GlobalAlloc`](std::alloc::GlobalAlloc) is an unsafe trait: this test binary's
/// allocator forwards every call to the system allocator, except that on a thread running a case it
/// refuses (returns null for) any single allocation over [`ALLOC_LIMIT`](watch::ALLOC_LIMIT). The
/// fixtures are a few kilobytes, so a reader that asks for more has trusted a size in the file that
/// it had not checked against the file's length. A refused fallible allocation (`try_reserve`) is
/// reported by [`finish`](watch::finish); a refused infallible one aborts the binary, so the
/// allocator first writes the case to stderr.
#[allow(unsafe_code)]
mod watch {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::io::Write;

    /// The largest allocation a case may make.
    pub const ALLOC_LIMIT: usize = 64 << 20;

    /// The case a thread is running.
    #[derive(Clone, Copy)]
    pub struct Current {
        pub format: &'static str,
        pub seed: u64,
        pub case: usize,
    }

    thread_local! {
        static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
        static REFUSED: Cell<usize> = const { Cell::new(0) };
    }

    /// Marks the start of a case on this thread.
    pub fn start(current: Current) {
        REFUSED.set(0);
        CURRENT.set(Some(current));
    }

    /// Marks the end of the case; the largest allocation refused during it, if any.
    pub fn finish() -> Option<usize> {
        CURRENT.set(None);
        Some(REFUSED.replace(0)).filter(|&n| n > 0)
    }

    /// Whether to refuse an allocation of `size` bytes (and if so, says which case asked).
    fn refuse(size: usize) -> bool {
        if size <= ALLOC_LIMIT {
            return false;
        }
        let Ok(Some(c)) = CURRENT.try_with(Cell::get) else {
            return false;
        };
        let _ = REFUSED.try_with(|r| r.set(r.get().max(size)));
        // Formatted on the stack: the allocator must not allocate here.
        let mut buf = [0u8; 256];
        let mut w = &mut buf[..];
        let _ = writeln!(
            w,
            "corruption: {} case {} (seed {}) asked for {size} bytes: refused",
            c.format, c.case, c.seed
        );
        let n = 256 - w.len();
        let _ = std::io::stderr().write_all(&buf[..n]);
        true
    }

    struct Watch;

    unsafe impl GlobalAlloc for Watch {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if refuse(layout.size()) {
                std::ptr::null_mut()
            } else {
                System.alloc(layout)
            }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if refuse(layout.size()) {
                std::ptr::null_mut()
            } else {
                System.alloc_zeroed(layout)
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if refuse(new_size) {
                std::ptr::null_mut()
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }
    }

    #[global_allocator]
    static WATCH: Watch = Watch;
}

// ---------------------------------------------------------------------------------------------
// Cases and the runner
// ---------------------------------------------------------------------------------------------

/// One mutated file: what was done to it (for the failure report) and its bytes.
struct Case {
    what: String,
    bytes: Vec<u8>,
}

impl Case {
    fn new(what: impl Into<String>, bytes: Vec<u8>) -> Case {
        Case {
            what: what.into(),
            bytes,
        }
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

/// Writes `bytes` to `path` without truncating it to zero first: on ext4 a truncation to zero
/// makes the close flush the file to disk, which made thousands of cases take a minute.
fn overwrite(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
    f.set_len(bytes.len() as u64).unwrap();
}

/// Writes each case to `target` and calls `read`, which reads it (and what else it needs): every case
/// must end without a panic or refused allocation, in `Ok` or an error naming `target` (and not one
/// thrown by libtorch, which must be handed only consistent sizes). Panics listing the cases that
/// broke the rule. `target` holds `valid` before and after.
fn run(
    format: &'static str,
    seed: u64,
    target: &Path,
    valid: &[u8],
    cases: &[Case],
    mut read: impl FnMut() -> Result<(), String>,
) {
    overwrite(target, valid);
    assert_eq!(read(), Ok(()), "{format}: the valid file reads");
    let name = target.display().to_string();
    let (mut ok, mut err) = (0, 0);
    let mut failures = Vec::new();
    for (case, c) in cases.iter().enumerate() {
        overwrite(target, &c.bytes);
        watch::start(watch::Current { format, seed, case });
        let outcome = catch_unwind(AssertUnwindSafe(&mut read));
        let problem = match (watch::finish(), outcome) {
            (Some(size), _) => Some(format!("asked for {size} bytes")),
            (None, Err(p)) => Some(format!("panicked: {}", panic_message(&*p))),
            (None, Ok(Ok(()))) => {
                ok += 1;
                None
            }
            // libtorch's exceptions carry this line: it was handed sizes it could not take.
            (None, Ok(Err(msg))) if msg.contains("Exception raised from") => {
                Some(format!("libtorch threw: {msg}"))
            }
            (None, Ok(Err(msg))) if msg.contains(&name) => {
                err += 1;
                None
            }
            (None, Ok(Err(msg))) => Some(format!("error does not name {name}: {msg}")),
        };
        if let Some(p) = problem {
            failures.push(format!("case {case} ({}): {p}", c.what));
        }
    }
    overwrite(target, valid);
    let shown = 50;
    assert!(
        failures.is_empty(),
        "{format} (seed {seed}): {} of {} cases failed:\n{}{}",
        failures.len(),
        cases.len(),
        failures[..failures.len().min(shown)].join("\n"),
        if failures.len() > shown { "\n..." } else { "" }
    );
    assert!(err > 0, "{format}: no mutation was detected");
    println!("{format}: {} cases, {ok} read, {err} errors", cases.len());
}

/// A header field: `width` bytes at `at`.
#[derive(Clone, Copy, Debug)]
struct Field {
    name: &'static str,
    at: usize,
    width: usize,
    big_endian: bool,
}

impl Field {
    fn le(name: &'static str, at: usize, width: usize) -> Field {
        Field {
            name,
            at,
            width,
            big_endian: false,
        }
    }

    fn be(name: &'static str, at: usize, width: usize) -> Field {
        Field {
            name,
            at,
            width,
            big_endian: true,
        }
    }

    fn max(&self) -> u64 {
        u64::MAX >> (64 - 8 * self.width)
    }

    fn get(&self, bytes: &[u8]) -> u64 {
        let mut b = bytes[self.at..self.at + self.width].to_vec();
        if self.big_endian {
            b.reverse();
        }
        b.resize(8, 0);
        u64::from_le_bytes(b.try_into().unwrap())
    }

    fn set(&self, bytes: &mut [u8], value: u64) {
        let mut b = value.to_le_bytes()[..self.width].to_vec();
        if self.big_endian {
            b.reverse();
        }
        bytes[self.at..self.at + self.width].copy_from_slice(&b);
    }

    /// Values to try: zero, one, two, the largest, the largest signed and one more, the stored value
    /// plus or minus one and doubled, and one at random.
    fn extremes(&self, stored: u64, rng: &mut Rng) -> Vec<u64> {
        let max = self.max();
        vec![
            0,
            1,
            2,
            max,
            max - 1,
            max >> 1,
            (max >> 1) + 1,
            stored.wrapping_add(1) & max,
            stored.wrapping_sub(1) & max,
            stored.wrapping_mul(2) & max,
            rng.next_u64() & max,
        ]
    }
}

/// A random offset of a `len`-byte file: anywhere, or within its first or last [`EDGE`] bytes.
fn offset(rng: &mut Rng, len: usize) -> usize {
    let edge = EDGE.min(len) as u64;
    match rng.below(3) {
        0 => rng.below(len as u64) as usize,
        1 => rng.below(edge) as usize,
        _ => len - 1 - rng.below(edge) as usize,
    }
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// The byte-level cases of a valid file: truncations, appended garbage, bit flips, bursts of random
/// bytes, each of `fields` set to each of its extremes, and a field at an extreme in a cut file.
fn byte_cases(rng: &mut Rng, valid: &[u8], fields: &[Field]) -> Vec<Case> {
    let len = valid.len();
    let mut cases = Vec::new();
    let lengths: Vec<usize> = if len <= EVERY_LENGTH {
        (0..len).collect()
    } else {
        (0..EDGE)
            .chain(len - EDGE..len)
            .chain((0..RANDOM_CUTS).map(|_| rng.below(len as u64) as usize))
            .collect()
    };
    for n in lengths {
        cases.push(Case::new(format!("cut to {n} bytes"), valid[..n].to_vec()));
    }
    for n in [1, 1, 2, 3, 4, 7, 8, 16, 64, 1000] {
        let mut b = valid.to_vec();
        b.extend(random_bytes(rng, n));
        cases.push(Case::new(format!("{n} random bytes appended"), b));
    }
    let mut b = valid.to_vec();
    b.extend([0; 16]);
    cases.push(Case::new("16 zero bytes appended", b));
    cases.push(Case::new("the file twice", valid.repeat(2)));
    for _ in 0..FLIPS {
        let (at, bit) = (offset(rng, len), rng.below(8));
        let mut b = valid.to_vec();
        b[at] ^= 1 << bit;
        cases.push(Case::new(format!("bit {bit} of byte {at} flipped"), b));
    }
    for _ in 0..BURSTS {
        let mut b = valid.to_vec();
        let mut what = Vec::new();
        for _ in 0..2 + rng.below(7) {
            let (at, v) = (offset(rng, len), rng.next_u64() as u8);
            b[at] = v;
            what.push(format!("{at}={v}"));
        }
        cases.push(Case::new(format!("bytes set: {}", what.join(" ")), b));
    }
    // Every pair of fields, and all of them, at their largest (sizes whose product overflows), in
    // a header of a few fields.
    let few = if fields.len() <= 8 { fields } else { &[] };
    for (i, f) in few.iter().enumerate() {
        for g in &few[i + 1..] {
            let mut b = valid.to_vec();
            f.set(&mut b, f.max());
            g.set(&mut b, g.max());
            cases.push(Case::new(
                format!("{} and {} at their largest", f.name, g.name),
                b,
            ));
        }
    }
    if few.len() > 2 {
        let mut b = valid.to_vec();
        few.iter().for_each(|f| f.set(&mut b, f.max()));
        cases.push(Case::new("every field at its largest", b));
    }
    for f in fields {
        let stored = f.get(valid);
        for v in f.extremes(stored, rng) {
            let mut b = valid.to_vec();
            f.set(&mut b, v);
            cases.push(Case::new(format!("{} at {} = {v}", f.name, f.at), b));
        }
        let values = f.extremes(stored, rng);
        for _ in 0..4 {
            let v = values[rng.below(values.len() as u64) as usize];
            let n = f.at + f.width + rng.below((len - f.at - f.width) as u64) as usize;
            let mut b = valid[..n].to_vec();
            f.set(&mut b, v);
            cases.push(Case::new(
                format!("{} at {} = {v}, cut to {n} bytes", f.name, f.at),
                b,
            ));
        }
    }
    cases
}

/// `cases` of an inner file, each gzipped (to reach the reader behind a valid gzip stream).
fn gzipped(cases: Vec<Case>) -> Vec<Case> {
    cases
        .into_iter()
        .map(|c| Case::new(format!("gzip of ({})", c.what), gzip(&c.bytes)))
        .collect()
}

/// `Ok(())`, or the error's message.
fn message(r: Result<impl Sized, impl ToString>) -> Result<(), String> {
    r.map(|_| ()).map_err(|e| e.to_string())
}
