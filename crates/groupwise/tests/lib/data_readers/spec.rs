//! Synthetic data, training subsets, empty splits and the serialised names of [`DataSpec`].

use std::path::Path;

use groupwise::data::{load, DataError, DataSpec, DatasetKind, SyntheticSpec};

fn synthetic_spec(seed: u64) -> DataSpec {
    DataSpec {
        kind: DatasetKind::Synthetic,
        synthetic: SyntheticSpec {
            channels: 2,
            size: 5,
            classes: 4,
            train: 40,
            test: 20,
        },
        seed,
        ..DataSpec::default()
    }
}

#[test]
fn synthetic_is_deterministic_and_learnable() {
    let a = load(&synthetic_spec(7)).unwrap();
    let b = load(&synthetic_spec(7)).unwrap();
    let c = load(&synthetic_spec(8)).unwrap();
    assert_eq!(a.train, b.train);
    assert_eq!(a.test, b.test);
    assert_ne!(a.train.images(), c.train.images());
    assert_eq!(a.train.shape(), (2, 5, 5));
    assert_eq!(a.train.len(), 40);
    assert_eq!(a.test.len(), 20);
    assert_eq!(a.train.classes(), 4);
    assert_ne!(a.train.images(), a.test.images());

    // Nearest class mean (from train) classifies the test split.
    let size = a.train.image_size();
    let mut means = vec![vec![0f64; size]; 4];
    let mut counts = [0usize; 4];
    for i in 0..a.train.len() {
        let l = a.train.label(i) as usize;
        counts[l] += 1;
        for (m, &p) in means[l].iter_mut().zip(a.train.image(i)) {
            *m += f64::from(p);
        }
    }
    for (m, n) in means.iter_mut().zip(counts) {
        m.iter_mut().for_each(|v| *v /= n as f64);
    }
    let mut correct = 0;
    for i in 0..a.test.len() {
        let dist = |m: &Vec<f64>| -> f64 {
            m.iter()
                .zip(a.test.image(i))
                .map(|(m, &p)| (m - f64::from(p)).powi(2))
                .sum()
        };
        let best = (0..4)
            .min_by(|&x, &y| dist(&means[x]).total_cmp(&dist(&means[y])))
            .unwrap();
        correct += usize::from(best == a.test.label(i) as usize);
    }
    assert!(correct >= 18, "{correct}/20 correct");
}

#[test]
fn train_subset_is_seeded() {
    let mut s = synthetic_spec(1);
    s.train_subset = Some(10);
    let a = load(&s).unwrap();
    let b = load(&s).unwrap();
    assert_eq!(a.train.len(), 10);
    assert_eq!(a.train, b.train);
    assert_eq!(a.test.len(), 20);
    s.train_subset = Some(41);
    assert!(matches!(load(&s), Err(DataError::Invalid(_))));
    s.train_subset = Some(0);
    let err = load(&s).unwrap_err().to_string();
    assert!(
        err.contains("--train-subset 0 must be between 1 and 40"),
        "{err}"
    );
}

/// A split without images is an error, not a run that trains or tests on nothing.
#[test]
fn empty_splits_are_errors() {
    let mut s = synthetic_spec(1);
    s.synthetic.test = 0;
    let err = load(&s).unwrap_err();
    assert!(
        matches!(err, DataError::Empty { split: "test", .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "--synthetic: the test split holds no images"
    );
    let mut s = synthetic_spec(1);
    s.synthetic.train = 0;
    let err = load(&s).unwrap_err().to_string();
    assert!(err.contains("the training split holds no images"), "{err}");
}

#[test]
fn spec_serde_names() {
    for (kind, name) in [
        (DatasetKind::FashionMnist, "fashion-mnist"),
        (DatasetKind::Mnist, "mnist"),
        (DatasetKind::Cifar10, "cifar10"),
        (DatasetKind::Cifar100, "cifar100"),
        (DatasetKind::ImageNet32, "imagenet32"),
        (DatasetKind::Synthetic, "synthetic"),
    ] {
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
        assert_eq!(name.parse::<DatasetKind>().unwrap(), kind);
    }
    let s: DataSpec =
        serde_json::from_str(r#"{"kind": "cifar10", "path": "/data/c10", "train_subset": 5}"#)
            .unwrap();
    assert_eq!(s.kind, DatasetKind::Cifar10);
    assert_eq!(s.path.as_deref(), Some(Path::new("/data/c10")));
    assert_eq!(s.train_subset, Some(5));
    assert_eq!(s.synthetic, SyntheticSpec::default());
    let back: DataSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    assert_eq!(
        DatasetKind::FashionMnist.default_dir(),
        Some(Path::new("/usr/share/datasets/fashion-mnist"))
    );
    assert_eq!(DatasetKind::ImageNet32.default_dir(), None);
}
