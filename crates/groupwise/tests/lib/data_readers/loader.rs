//! The batch loader: determinism across workers, order, augmentation, settings and early drop.

use std::sync::Arc;
use std::time::Duration;

use groupwise::data::{
    augment_into, Augment, Crop, Dataset, Loader, LoaderConfig, Padding, Transform,
};

use super::{to_f32, to_i64};

fn small_dataset(n: usize) -> Arc<Dataset> {
    let size = 3 * 6 * 5;
    let images: Vec<u8> = (0..n * size).map(|i| (i * 7 % 256) as u8).collect();
    let labels: Vec<u16> = (0..n).map(|i| (i % 10) as u16).collect();
    Arc::new(Dataset::new(images, labels, (3, 6, 5), 10).unwrap())
}

fn aug_transform() -> Transform {
    Transform {
        mean: vec![0.5, 0.4, 0.3],
        std: vec![0.2, 0.3, 0.4],
        augment: Augment::PadCropFlip {
            pad: 2,
            padding: Padding::Reflect,
        },
    }
}

fn collect(ds: &Arc<Dataset>, t: &Transform, cfg: &LoaderConfig) -> Vec<(Vec<f32>, Vec<i64>)> {
    let loader = Loader::new(Arc::clone(ds), t.clone(), cfg).unwrap();
    let steps = loader.steps_per_epoch();
    let batches: Vec<_> = loader
        .enumerate()
        .map(|(i, b)| {
            assert_eq!(b.index, i);
            (to_f32(&b.images), to_i64(&b.labels))
        })
        .collect();
    assert_eq!(batches.len(), steps);
    batches
}

#[test]
fn loader_is_deterministic_across_workers() {
    let ds = small_dataset(37);
    let t = aug_transform();
    let cfg = LoaderConfig {
        batch_size: 8,
        shuffle: true,
        augment: true,
        seed: 42,
        epoch: 3,
        workers: 1,
        prefetch: 2,
        drop_last: false,
    };
    let one = collect(&ds, &t, &cfg);
    assert_eq!(one.len(), 5);
    assert_eq!(one[4].1.len(), 5);
    for workers in [0, 3, 8] {
        for prefetch in [0, 1, 4] {
            let other = collect(
                &ds,
                &t,
                &LoaderConfig {
                    workers,
                    prefetch,
                    ..cfg.clone()
                },
            );
            assert!(one == other, "workers {workers} prefetch {prefetch} differ");
        }
    }
    // Shuffling visits every image once.
    let mut labels: Vec<i64> = one.iter().flat_map(|b| b.1.clone()).collect();
    labels.sort_unstable();
    let mut expected: Vec<i64> = (0..37).map(|i| i % 10).collect();
    expected.sort_unstable();
    assert_eq!(labels, expected);
    // Another epoch or seed gives other batches.
    let other_epoch = collect(
        &ds,
        &t,
        &LoaderConfig {
            epoch: 4,
            ..cfg.clone()
        },
    );
    assert!(one != other_epoch);
    let other_seed = collect(
        &ds,
        &t,
        &LoaderConfig {
            seed: 43,
            ..cfg.clone()
        },
    );
    assert!(one != other_seed);
    // Same shuffle, augmentation off: other pixels, same labels.
    let plain = collect(
        &ds,
        &t,
        &LoaderConfig {
            augment: false,
            ..cfg.clone()
        },
    );
    assert!(plain.iter().zip(&one).all(|(a, b)| a.1 == b.1));
    assert!(plain.iter().zip(&one).any(|(a, b)| a.0 != b.0));
}

#[test]
fn loader_without_shuffle_keeps_order_and_normalises() {
    let ds = small_dataset(10);
    let t = aug_transform();
    let cfg = LoaderConfig {
        batch_size: 4,
        workers: 2,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(Arc::clone(&ds), t.clone(), &cfg).unwrap();
    assert_eq!(loader.steps_per_epoch(), 3);
    assert_eq!(loader.len(), 3);
    let batches: Vec<_> = loader.collect();
    assert_eq!(batches[0].images.size(), vec![4, 3, 6, 5]);
    assert_eq!(batches[2].images.size(), vec![2, 3, 6, 5]);
    assert_eq!(batches[2].images.kind(), tch::Kind::Float);
    assert_eq!(batches[2].labels.kind(), tch::Kind::Int64);
    let mut pos = 0;
    for b in &batches {
        let px = to_f32(&b.images);
        let labels = to_i64(&b.labels);
        for (k, &l) in labels.iter().enumerate() {
            assert_eq!(l, i64::from(ds.label(pos)));
            let img = ds.image(pos);
            for (j, &p) in img.iter().enumerate() {
                let c = j / 30;
                let expected = (f32::from(p) / 255.0 - t.mean[c]) / t.std[c];
                assert!((px[k * 90 + j] - expected).abs() < 1e-5);
            }
            pos += 1;
        }
    }
    assert_eq!(pos, 10);

    let dropped = Loader::new(
        Arc::clone(&ds),
        t,
        &LoaderConfig {
            drop_last: true,
            ..cfg
        },
    )
    .unwrap();
    assert_eq!(dropped.steps_per_epoch(), 2);
    assert_eq!(dropped.count(), 2);
    assert_eq!(Loader::steps_for(10, 4, false), 3);
    assert_eq!(Loader::steps_for(8, 4, true), 2);
}

#[test]
fn loader_augmentation_matches_augment_into() {
    // With augmentation, every output image is one of the valid crops of its source image.
    let ds = small_dataset(6);
    let t = aug_transform();
    let cfg = LoaderConfig {
        batch_size: 6,
        augment: true,
        seed: 5,
        workers: 1,
        ..LoaderConfig::default()
    };
    let batch = Loader::new(Arc::clone(&ds), t.clone(), &cfg)
        .unwrap()
        .next()
        .unwrap();
    let px = to_f32(&batch.images);
    let mut changed = 0;
    for i in 0..6 {
        let got = &px[i * 90..(i + 1) * 90];
        let mut found = false;
        for dy in 0..=4 {
            for dx in 0..=4 {
                for flip in [false, true] {
                    let mut aug = vec![0u8; 90];
                    let crop = Crop { dy, dx, flip };
                    augment_into(ds.image(i), (3, 6, 5), 2, Padding::Reflect, crop, &mut aug);
                    let mut norm = vec![0f32; 90];
                    t.normalize_into(&aug, 3, &mut norm);
                    if norm.iter().zip(got).all(|(a, b)| (a - b).abs() < 1e-6) {
                        found = true;
                        changed += usize::from(dy != 2 || dx != 2 || flip);
                    }
                }
            }
        }
        assert!(found, "image {i} is not a crop of its source");
    }
    assert!(changed > 0, "augmentation never changed an image");
}

#[test]
fn loader_rejects_bad_settings() {
    let ds = small_dataset(4);
    let cfg = LoaderConfig {
        batch_size: 0,
        ..LoaderConfig::default()
    };
    assert!(Loader::new(Arc::clone(&ds), aug_transform(), &cfg).is_err());
    let bad = Transform::normalize_only(vec![0.5, 0.5], vec![0.5, 0.5]);
    assert!(Loader::new(ds, bad, &LoaderConfig::default()).is_err());
}

#[test]
fn dropping_loader_early_does_not_hang() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ds = small_dataset(400);
        let cfg = LoaderConfig {
            batch_size: 2,
            shuffle: true,
            augment: true,
            workers: 3,
            prefetch: 1,
            ..LoaderConfig::default()
        };
        for take in [0, 1, 5] {
            let mut loader = Loader::new(Arc::clone(&ds), aug_transform(), &cfg).unwrap();
            for _ in 0..take {
                loader.next().unwrap();
            }
            drop(loader);
        }
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("dropping a loader early hung");
}
