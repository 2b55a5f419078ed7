//! npz archives (ImageNet32): zip headers and sizes, and the `.npy` members' headers.

use std::path::Path;

use groupwise::data::rng::Rng;
use groupwise::data::{load, DatasetKind};

use super::{byte_cases, message, run, seed, Case, Field};
use crate::common::scratch;
use crate::data_readers::{imagenet_members, npy_with_dict, npz, spec, write_imagenet};

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
