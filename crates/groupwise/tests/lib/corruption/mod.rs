//! Readers under random corruption: each dataset reader and the checkpoint reader is handed a tiny
//! valid file changed by a seeded sequence of mutations (truncations, bit flips, overwritten and
//! appended bytes, header fields set to extreme values, rewritten headers) and must never panic,
//! never make an allocation the file cannot justify, and either read the file (a flipped pixel keeps
//! it valid) or fail with an error that names it.
//!
//! The cases of every format follow from one seed, [`DEFAULT_SEED`] unless the environment variable
//! `GROUPWISE_CORRUPTION_SEED` gives another (to explore beyond what CI runs). A failure lists the
//! seed and each failing case's number and mutation, which replay it exactly.

use std::any::Any;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use groupwise::checkpoint::{self, Progress};
use groupwise::data::rng::Rng;
use groupwise::data::{load, DatasetKind};
use groupwise::local::Network;
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

use crate::common::{exclusive_rng, scratch, synthetic_run};
use crate::data_readers::{
    cifar_record, gzip, idx_images, idx_labels, imagenet_members, npy_with_dict, npz, spec, write,
    write_cifar10, write_imagenet, write_mnist, TEST_LABELS,
};

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

// ---------------------------------------------------------------------------------------------
// IDX and gzip
// ---------------------------------------------------------------------------------------------

fn idx_image_fields() -> [Field; 4] {
    [
        Field::be("magic", 0, 4),
        Field::be("count", 4, 4),
        Field::be("rows", 8, 4),
        Field::be("cols", 12, 4),
    ]
}

fn idx_label_fields() -> [Field; 2] {
    [Field::be("magic", 0, 4), Field::be("count", 4, 4)]
}

#[test]
fn idx_files_under_corruption() {
    let seed = seed();
    let mut rng = Rng::from_parts(&[seed, 1]);
    let dir = scratch("corrupt-idx");
    write_mnist(dir.path(), [false; 4]);
    let read = || message(load(&spec(DatasetKind::Mnist, dir.path())));
    let target = dir.join("train-images-idx3-ubyte");
    let valid = idx_images(3, 28, 28);
    let cases = byte_cases(&mut rng, &valid, &idx_image_fields());
    run("IDX images", seed, &target, &valid, &cases, read);
    let target = dir.join("t10k-labels-idx1-ubyte");
    let valid = idx_labels(&TEST_LABELS);
    let cases = byte_cases(&mut rng, &valid, &idx_label_fields());
    run("IDX labels", seed, &target, &valid, &cases, read);
}

#[test]
fn gzip_files_under_corruption() {
    let seed = seed();
    let mut rng = Rng::from_parts(&[seed, 2]);
    let dir = scratch("corrupt-gz");
    write_mnist(dir.path(), [true; 4]);
    let read = || message(load(&spec(DatasetKind::Mnist, dir.path())));
    // The gzip stream corrupted, and a valid stream of a corrupted file.
    let target = dir.join("train-images-idx3-ubyte.gz");
    let inner = idx_images(3, 28, 28);
    let valid = gzip(&inner);
    let mut cases = byte_cases(&mut rng, &valid, &[]);
    cases.extend(gzipped(byte_cases(&mut rng, &inner, &idx_image_fields())));
    run("gzip IDX images", seed, &target, &valid, &cases, read);
    let target = dir.join("t10k-labels-idx1-ubyte.gz");
    let inner = idx_labels(&TEST_LABELS);
    let valid = gzip(&inner);
    let mut cases = byte_cases(&mut rng, &valid, &[]);
    cases.extend(gzipped(byte_cases(&mut rng, &inner, &idx_label_fields())));
    run("gzip IDX labels", seed, &target, &valid, &cases, read);
}

// ---------------------------------------------------------------------------------------------
// CIFAR
// ---------------------------------------------------------------------------------------------

#[test]
fn cifar_files_under_corruption() {
    let seed = seed();
    let mut rng = Rng::from_parts(&[seed, 3]);
    let dir = scratch("corrupt-cifar10");
    write_cifar10(dir.path());
    let read = || message(load(&spec(DatasetKind::Cifar10, dir.path())));
    // The test batch: one record; batch 2: two (labels 2 and 3).
    let valid = cifar_record(&[4], 100);
    let cases = byte_cases(&mut rng, &valid, &[Field::le("label", 0, 1)]);
    let target = dir.join("test_batch.bin");
    run("CIFAR-10 test batch", seed, &target, &valid, &cases, read);
    let mut valid = cifar_record(&[2], 2);
    valid.extend(cifar_record(&[3], 3));
    let fields = [Field::le("label 0", 0, 1), Field::le("label 1", 3073, 1)];
    let cases = byte_cases(&mut rng, &valid, &fields);
    run(
        "CIFAR-10 batch 2",
        seed,
        &dir.join("data_batch_2.bin"),
        &valid,
        &cases,
        read,
    );

    let dir = scratch("corrupt-cifar100");
    let mut valid = cifar_record(&[3, 77], 0);
    valid.extend(cifar_record(&[19, 99], 1));
    write(&dir.join("test.bin"), &cifar_record(&[0, 5], 2));
    let fields = [
        Field::le("coarse label 0", 0, 1),
        Field::le("fine label 0", 1, 1),
        Field::le("coarse label 1", 3074, 1),
        Field::le("fine label 1", 3075, 1),
    ];
    let cases = byte_cases(&mut rng, &valid, &fields);
    run(
        "CIFAR-100 train",
        seed,
        &dir.join("train.bin"),
        &valid,
        &cases,
        || message(load(&spec(DatasetKind::Cifar100, dir.path()))),
    );
}

// ---------------------------------------------------------------------------------------------
// npz (ImageNet32)
// ---------------------------------------------------------------------------------------------

/// The signature of a kind of zip record and its fields: name, offset, width.
type ZipRecord = (&'static [u8], &'static [(&'static str, usize, usize)]);

/// The fields of a zip archive's local headers, central directory and end record, found by their
/// signatures.
fn zip_fields(b: &[u8]) -> Vec<Field> {
    let layouts: [ZipRecord; 3] = [
        (
            b"PK\x03\x04",
            &[
                ("local method", 8, 2),
                ("local crc", 14, 4),
                ("local compressed size", 18, 4),
                ("local size", 22, 4),
                ("local name length", 26, 2),
                ("local extra length", 28, 2),
            ],
        ),
        (
            b"PK\x01\x02",
            &[
                ("central method", 10, 2),
                ("central compressed size", 20, 4),
                ("central size", 24, 4),
                ("central name length", 28, 2),
                ("central extra length", 30, 2),
                ("central comment length", 32, 2),
                ("central local offset", 42, 4),
            ],
        ),
        (
            b"PK\x05\x06",
            &[
                ("end disk", 4, 2),
                ("end entries here", 8, 2),
                ("end entries", 10, 2),
                ("end directory size", 12, 4),
                ("end directory offset", 16, 4),
                ("end comment length", 20, 2),
            ],
        ),
    ];
    let mut fields = Vec::new();
    for i in 0..b.len() {
        for (sig, layout) in &layouts {
            if b[i..].starts_with(sig) {
                fields.extend(
                    layout
                        .iter()
                        .filter(|(_, at, w)| i + at + w <= b.len())
                        .map(|&(name, at, w)| Field::le(name, i + at, w)),
                );
            }
        }
    }
    fields
}

/// The fields of a zip archive that hold sizes.
fn zip_size_fields(b: &[u8]) -> Vec<Field> {
    zip_fields(b)
        .into_iter()
        .filter(|f| f.name.ends_with("size"))
        .collect()
}

/// `.npy` header dicts to try instead of `{'descr': '<descr>', 'fortran_order': False, 'shape':
/// <shape>, }`: other dtypes, shapes and orders, malformed and adversarial dicts.
fn npy_dicts(descr: &str, shape: &str) -> Vec<String> {
    let dict = |d: &str, f: &str, s: &str| {
        format!("{{'descr': '{d}', 'fortran_order': {f}, 'shape': {s}, }}")
    };
    let mut out = Vec::new();
    for d in [
        "<i8",
        "<i4",
        "<i2",
        "|u1",
        "|i1",
        "|b1",
        ">i8",
        ">i2",
        "=i4",
        "<u8",
        "<u2",
        "<f4",
        "<f8",
        "<c8",
        "<i16",
        "<i0",
        "<i3",
        "<i",
        "i8",
        "u1",
        "<U3",
        "|O",
        "|V8",
        "",
        "<",
        "<i-1",
        "<i99999999999999999999",
        "\u{e9}8",
    ] {
        out.push(dict(d, "False", shape));
    }
    for s in [
        "()",
        "(0,)",
        "(1,)",
        "(2,)",
        "(3,)",
        "(0, 3072)",
        "(1, 3072)",
        "(3, 3072)",
        "(3072, 2)",
        "(2, 3072, 1)",
        "(2, 1536, 2)",
        "(2, 3073)",
        "(2, 0)",
        "(18446744073709551615,)",
        "(9223372036854775807,)",
        "(9223372036854775808,)",
        "(-1,)",
        "(-9223372036854775808, -1)",
        "(4294967296, 4294967296)",
        "(4294967296, 4294967296, 4294967296)",
        "(65536, 65536, 65536, 65536)",
        "(0, 18446744073709551615)",
        "(0, 4294967296, 4294967296)",
        "(1398100, 3072)",
        "(500000000,)",
        "(2L, 3072L)",
        "[2, 3072]",
        "(2 3072)",
        "(2,,)",
        "(,)",
        "None",
        "'2'",
        "(True,)",
        "((2,),)",
        "(2.0,)",
        "(",
    ] {
        out.push(dict(descr, "False", s));
    }
    for f in ["True", "0", "None", "'False'"] {
        out.push(dict(descr, f, shape));
    }
    let whole = [
        "{}".to_string(),
        String::new(),
        "{".into(),
        "}".into(),
        "[]".into(),
        "'a string'".into(),
        "{1: 2}".into(),
        format!("{{'descr': '{descr}'}}"),
        format!("{{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': {shape}, }}"),
        format!(
            "{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, 'shape': (7,), }}"
        ),
        format!(
            "{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, \
             'more': {{'a': [1, (2, None)], 'b': \"c\"}}, }}"
        ),
        format!("{{'descr': '{descr}' 'fortran_order': False, 'shape': {shape}}}"),
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}"),
        format!("{{'descr': '{descr}, 'fortran_order': False, 'shape': {shape}}}"),
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}}}\0\0\0"),
    ];
    out.extend(whole);
    // Deep nesting (a recursive parser must not overflow its stack).
    for open in ["[", "(", "{'a': "] {
        out.push(open.repeat(100_000));
    }
    out
}

/// An npz archive of `members`, built at the scratch path `side` (removed again, so that the next
/// build creates a file rather than truncating one: see [`overwrite`]).
fn npz_bytes(side: &Path, members: &[(&str, Vec<u8>)], deflate: bool) -> Vec<u8> {
    npz(side, members, deflate);
    let bytes = std::fs::read(side).unwrap();
    std::fs::remove_file(side).unwrap();
    bytes
}

/// Cases that rewrite one member of an npz (`members`, stored or deflated): every dict of
/// [`npy_dicts`] at header versions 1 and 2 before the member's `payload`, and at version 2 before
/// none; and the member's own bytes with its magic, version and header length set to extremes.
/// `side` is a scratch path to build archives at.
fn npy_cases(
    members: &[(&'static str, Vec<u8>)],
    member: usize,
    descr: &str,
    shape: &str,
    payload: &[u8],
    deflate: bool,
    side: &Path,
) -> Vec<Case> {
    let archive = |bytes: Vec<u8>| {
        let mut m = members.to_vec();
        m[member].1 = bytes;
        npz_bytes(side, &m, deflate)
    };
    let name = members[member].0;
    let mut cases = Vec::new();
    // Each dict before the member's data, and before no data (which an empty shape describes).
    for dict in npy_dicts(descr, shape) {
        let shown: String = dict.chars().take(80).collect();
        for (version, data) in [(1, payload), (2, payload), (2, &[][..])] {
            if version == 1 && dict.len() > 60_000 {
                continue;
            }
            cases.push(Case::new(
                format!(
                    "{name} v{version} header {shown}, {} data bytes",
                    data.len()
                ),
                archive(npy_with_dict(&dict, data, version)),
            ));
        }
    }
    let valid = &members[member].1;
    let preamble = [
        Field::le("npy magic", 0, 1),
        Field::le("npy version", 6, 1),
        Field::le("npy minor version", 7, 1),
        Field::le("npy header length", 8, 2),
    ];
    for f in preamble {
        for v in [
            0,
            1,
            2,
            3,
            4,
            255,
            f.max(),
            f.get(valid) + 1,
            f.get(valid).wrapping_sub(1),
        ] {
            let v = v & f.max();
            let mut b = valid.clone();
            f.set(&mut b, v);
            cases.push(Case::new(format!("{name} {} = {v}", f.name), archive(b)));
        }
    }
    // Version 2 and 3 headers have a 4-byte length.
    let v2 = npy_with_dict(
        &format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"),
        payload,
        2,
    );
    for version in [2, 3] {
        for len in [0, 1, 1 << 20, (1 << 20) + 1, u32::MAX] {
            let mut b = v2.clone();
            b[6] = version;
            b[8..12].copy_from_slice(&len.to_le_bytes());
            cases.push(Case::new(
                format!("{name} v{version} header length {len}"),
                archive(b),
            ));
        }
    }
    cases
}

#[test]
fn npz_files_under_corruption() {
    let seed = seed();
    let mut rng = Rng::from_parts(&[seed, 4]);
    let dir = scratch("corrupt-npz");
    write_imagenet(dir.path());
    let side_dir = scratch("corrupt-npz-side");
    let side = side_dir.join("side.npz");
    // As `write_imagenet` writes them: batch 1 (ids 0, 1, `<i4` labels, stored) and the validation
    // file (ids 500..=502, `<i8` labels, deflated).
    let targets = [
        (
            "npz stored",
            "train_data_batch_1.npz",
            vec![0, 1],
            "<i4",
            false,
        ),
        (
            "npz deflated",
            "val_data.npz",
            vec![500, 501, 502],
            "<i8",
            true,
        ),
    ];
    for (format, file, ids, descr, deflate) in targets {
        let target = dir.join(file);
        let valid = std::fs::read(&target).unwrap();
        let members = imagenet_members(&ids, descr, 1);
        assert_eq!(
            npz_bytes(&side, &members, deflate),
            valid,
            "{file} is rebuilt exactly"
        );

        let mut cases = byte_cases(&mut rng, &valid, &zip_fields(&valid));
        let n = ids.len();
        let labels_payload =
            &members[1].1[members[1].1.len() - n * (descr[2..].parse::<usize>().unwrap())..];
        let data_payload = &members[0].1[members[0].1.len() - n * 3072..];
        let npy = [
            npy_cases(
                &members,
                0,
                "|u1",
                &format!("({n}, 3072)"),
                data_payload,
                deflate,
                &side,
            ),
            npy_cases(
                &members,
                1,
                descr,
                &format!("({n},)"),
                labels_payload,
                deflate,
                &side,
            ),
        ];
        cases.extend(npy.into_iter().flatten());
        // A header claiming gigabytes in an archive whose size fields claim as much.
        for (member, dict) in [
            (
                0,
                "{'descr': '|u1', 'fortran_order': False, 'shape': (1398100, 3072), }".to_string(),
            ),
            (
                1,
                format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (500000000,), }}"),
            ),
        ] {
            let mut m = members.clone();
            let payload = if member == 0 {
                data_payload
            } else {
                labels_payload
            };
            m[member].1 = npy_with_dict(&dict, payload, 1);
            let big = npz_bytes(&side, &m, deflate);
            for f in zip_size_fields(&big) {
                for v in [u64::from(u32::MAX), u64::from(u32::MAX) - 1, 0x7FFF_FFFF] {
                    let mut b = big.clone();
                    f.set(&mut b, v);
                    cases.push(Case::new(
                        format!("{} huge shape, {} at {} = {v}", m[member].0, f.name, f.at),
                        b,
                    ));
                }
            }
        }
        run(format, seed, &target, &valid, &cases, || {
            message(load(&spec(DatasetKind::ImageNet32, dir.path())))
        });
    }
}

// ---------------------------------------------------------------------------------------------
// safetensors (checkpoints)
// ---------------------------------------------------------------------------------------------

/// A safetensors file's header (parsed) and data.
fn split_safetensors(bytes: &[u8]) -> (Map<String, Value>, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, &bytes[8 + n..])
}

fn join_safetensors(header: &Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let text = serde_json::to_vec(header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend_from_slice(data);
    out
}

/// safetensors dtypes and their sizes in bytes.
const DTYPES: [(&str, usize); 13] = [
    ("BOOL", 1),
    ("U8", 1),
    ("I8", 1),
    ("I16", 2),
    ("U16", 2),
    ("F16", 2),
    ("BF16", 2),
    ("I32", 4),
    ("U32", 4),
    ("F32", 4),
    ("I64", 8),
    ("U64", 8),
    ("F64", 8),
];

/// Cases that rewrite the header entry of tensor `name`: its shape, dtype and offsets set to
/// extremes or removed, and every reinterpretation of its bytes as another dtype and shape (which
/// leaves a valid file).
fn safetensors_cases(valid: &[u8], name: &str) -> Vec<Case> {
    let (header, data) = split_safetensors(valid);
    let info = header[name].clone();
    let [s, e] = [0, 1].map(|i| info["data_offsets"][i].as_u64().unwrap());
    let bytes = e - s;
    // Each edit: the entries it sets.
    let mut edits: Vec<Vec<(&str, Value)>> = Vec::new();
    let big = 1u64 << 63;
    for shape in [
        json!([]),
        json!([0]),
        json!([1]),
        json!([bytes]),
        json!([u64::MAX]),
        json!([big]),
        json!([0, u64::MAX]),
        json!([0, big]),
        json!([u64::MAX, 0]),
        json!([1u64 << 32, 1u64 << 32]),
        json!([0, 1u64 << 62, 1u64 << 62]),
        json!([-1]),
        json!(["1"]),
        json!(3),
        json!([1.5]),
    ] {
        edits.push(vec![("shape", shape)]);
    }
    for (dtype, size) in DTYPES {
        edits.push(vec![("dtype", json!(dtype))]);
        if bytes % size as u64 == 0 {
            let n = bytes / size as u64;
            for shape in [json!([n]), json!([1, n]), json!([n, 1]), json!([n / 2, 2])] {
                edits.push(vec![("dtype", json!(dtype)), ("shape", shape)]);
            }
        }
    }
    edits.push(vec![("dtype", json!("X"))]);
    edits.push(vec![("dtype", json!(4))]);
    for offsets in [
        json!([0, u64::MAX]),
        json!([s, u64::MAX]),
        json!([u64::MAX, u64::MAX]),
        json!([s, u64::MAX - 7]),
        json!([e, s]),
        json!([s, e + 1]),
        json!([s + 1, e + 1]),
        json!([s, e.saturating_sub(1)]),
        json!([s]),
        json!([s, e, 0]),
        json!([-1, e]),
        json!([s, big]),
    ] {
        edits.push(vec![("data_offsets", offsets)]);
    }
    // Offsets up to the largest `usize`, with a shape to match.
    edits.push(vec![
        ("dtype", json!("U8")),
        ("shape", json!([u64::MAX - s])),
        ("data_offsets", json!([s, u64::MAX])),
    ]);
    let mut cases = Vec::new();
    for edit in edits {
        let mut h = header.clone();
        let entry = h[name].as_object_mut().unwrap();
        let mut what = Vec::new();
        for (key, value) in edit {
            what.push(format!("{key} = {value}"));
            entry.insert(key.into(), value);
        }
        cases.push(Case::new(
            format!("{name}: {}", what.join(", ")),
            join_safetensors(&h, data),
        ));
    }
    for key in ["dtype", "shape", "data_offsets"] {
        let mut h = header.clone();
        h[name].as_object_mut().unwrap().remove(key);
        cases.push(Case::new(
            format!("{name}: no {key}"),
            join_safetensors(&h, data),
        ));
    }
    for value in [json!(null), json!(5), json!([]), json!("x")] {
        let mut h = header.clone();
        h.insert(name.into(), value.clone());
        cases.push(Case::new(
            format!("{name} = {value}"),
            join_safetensors(&h, data),
        ));
    }
    let mut h = header.clone();
    h.remove(name);
    cases.push(Case::new(
        format!("{name} removed"),
        join_safetensors(&h, data),
    ));
    // Valid files holding other data: empty tensors whose other dimensions are huge, progress
    // scalars of other values and kinds, a bool byte that is neither 0 nor 1.
    let empty: &[u8] = &[];
    for (dtype, shape, bytes) in [
        ("U8", json!([0, big]), empty),
        ("U8", json!([0, u64::MAX]), empty),
        ("F32", json!([big, 0]), empty),
        ("F32", json!([0, 1u64 << 62, 1u64 << 62]), empty),
        ("F32", json!([0, 1u64 << 32, 1u64 << 32]), empty),
        ("I64", json!([0]), empty),
        ("I64", json!([]), &(-1i64).to_le_bytes()),
        ("I64", json!([]), &i64::MAX.to_le_bytes()),
        ("F64", json!([]), &1e300f64.to_le_bytes()),
        ("F32", json!([1]), &1f32.to_le_bytes()),
        ("BOOL", json!([1]), &[2]),
        ("F32", json!([256]), &[0; 1024]),
    ] {
        cases.push(Case::new(
            format!("{name}: {dtype} {shape} holding {bytes:?}"),
            spliced(&header, data, name, dtype, shape, bytes),
        ));
    }
    cases
}

/// A safetensors file whose tensor `name` is replaced by `bytes` of `dtype` and `shape`, the other
/// tensors' offsets moved to match.
fn spliced(
    header: &Map<String, Value>,
    data: &[u8],
    name: &str,
    dtype: &str,
    shape: Value,
    bytes: &[u8],
) -> Vec<u8> {
    let offsets = |info: &Value| [0, 1].map(|i| info["data_offsets"][i].as_u64().unwrap() as usize);
    let [s, e] = offsets(&header[name]);
    let mut h = header.clone();
    for (n, info) in h.iter_mut().filter(|(n, _)| *n != "__metadata__") {
        let [a, b] = offsets(info);
        let moved = if n == name {
            [s, s + bytes.len()]
        } else if a >= e {
            [a + bytes.len() - (e - s), b + bytes.len() - (e - s)]
        } else {
            [a, b]
        };
        info["data_offsets"] = json!(moved);
    }
    h[name]["dtype"] = json!(dtype);
    h[name]["shape"] = shape;
    join_safetensors(&h, &[&data[..s], bytes, &data[e..]].concat())
}

/// Cases that rewrite a safetensors header as a whole.
fn safetensors_header_cases(valid: &[u8]) -> Vec<Case> {
    let (header, data) = split_safetensors(valid);
    let mut cases = Vec::new();
    for meta in [
        json!({"format": "pt"}),
        json!({"a": 1}),
        json!(5),
        json!(null),
    ] {
        let mut h = header.clone();
        h.insert("__metadata__".into(), meta.clone());
        cases.push(Case::new(
            format!("__metadata__ = {meta}"),
            join_safetensors(&h, data),
        ));
    }
    let text = serde_json::to_vec(&header).unwrap();
    for (what, t) in [
        (
            "header padded with spaces",
            [text.clone(), vec![b' '; 7]].concat(),
        ),
        ("header cut", text[..text.len() / 2].to_vec()),
        ("header not utf-8", [text.clone(), vec![0xff]].concat()),
        ("header a list", b"[1, 2]".to_vec()),
        ("deep nesting", b"{\"a\":".repeat(100_000)),
        ("empty header", Vec::new()),
    ] {
        let mut b = (t.len() as u64).to_le_bytes().to_vec();
        b.extend(t);
        b.extend_from_slice(data);
        cases.push(Case::new(what, b));
    }
    cases
}

#[test]
fn safetensors_files_under_corruption() {
    let seed = seed();
    let mut rng = Rng::from_parts(&[seed, 5]);
    let dir = scratch("corrupt-safetensors");
    let target = dir.join("checkpoint.safetensors");
    let named = vec![
        (
            "a".to_string(),
            Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.]).view([2, 3]),
        ),
        ("b".to_string(), Tensor::from_slice(&[1i64, -2, 3, 4])),
        ("c".to_string(), Tensor::from_slice(&[9u8, 8, 7, 6, 5])),
        (
            "h".to_string(),
            Tensor::ones([2, 2], (Kind::Half, Device::Cpu)),
        ),
    ]
    .into_iter()
    .chain(Progress { epoch: 3, step: 7 }.to_named())
    .collect::<Vec<_>>();
    checkpoint::write_atomic(&named, &target).unwrap();
    let valid = std::fs::read(&target).unwrap();
    let mut cases = byte_cases(&mut rng, &valid, &[Field::le("header length", 0, 8)]);
    for (name, _) in &named {
        cases.extend(safetensors_cases(&valid, name));
    }
    cases.extend(safetensors_header_cases(&valid));
    run("safetensors", seed, &target, &valid, &cases, || {
        let tensors = checkpoint::read(&target).map_err(|e| e.to_string())?;
        Progress::from_named(&tensors);
        Ok(())
    });
}

#[test]
fn checkpoint_load_under_corruption() {
    let seed = seed();
    let mut rng = Rng::from_parts(&[seed, 6]);
    let dir = scratch("corrupt-checkpoint");
    let target = dir.join("checkpoint.safetensors");
    // One thread, as the training tests run (OpenMP's idle workers would spin between the many
    // small copies of each load).
    tch::set_num_threads(1);
    let config = synthetic_run("1", 1, 64);
    let plan = config.declared_plan().unwrap();
    let rng_lock = exclusive_rng();
    let mut net = Network::new(&plan, config.loss, config.sgd, Device::Cpu);
    drop(rng_lock);
    // Every tensor with a momentum buffer beside it, as a resumed run reads them.
    let mut named = checkpoint::named_state(&net, Progress { epoch: 1, step: 2 });
    let momentum: Vec<_> = net
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (format!("momentum.{n}"), t.ones_like()))
        .collect();
    named.extend(momentum);
    checkpoint::write_atomic(&named, &target).unwrap();
    let valid = std::fs::read(&target).unwrap();

    let mut cases: Vec<Case> = byte_cases(&mut rng, &valid, &[Field::le("header length", 0, 8)])
        .into_iter()
        .filter(|_| rng.below(4) == 0)
        .collect();
    let mut names: Vec<&str> = vec!["train.epoch", "train.step"];
    for _ in 0..4 {
        names.push(&named[rng.below(named.len() as u64) as usize].0);
    }
    for name in names {
        cases.extend(safetensors_cases(&valid, name));
    }
    let images = Tensor::zeros([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let labels = Tensor::from_slice(&[0i64, 1]);
    run("checkpoint load", seed, &target, &valid, &cases, || {
        checkpoint::load(&mut net, &target, checkpoint::Restore::State)
            .map_err(|e| e.to_string())?;
        // A loaded momentum buffer must fit its parameter.
        net.train_step(&images, &labels, 0.01);
        Ok(())
    });
}
