//! safetensors checkpoints: the file read alone, and loaded into a network and trained on.

use groupwise::checkpoint::{self, Progress};
use groupwise::data::rng::Rng;
use groupwise::local::Network;
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

use super::{byte_cases, run, seed, Case, Field};
use crate::common::{exclusive_rng, resumable_state, scratch, synthetic_run};

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
    groupwise::device::set_intra_op_threads(1);
    let config = synthetic_run("1", 1, 64);
    let plan = config.declared_plan().unwrap();
    let rng_lock = exclusive_rng();
    let mut net = Network::new(&plan, config.loss, config.sgd, Device::Cpu);
    drop(rng_lock);
    // Every tensor with a momentum buffer beside it, as a resumed run reads them.
    let named = resumable_state(&net, Progress { epoch: 1, step: 2 });
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
