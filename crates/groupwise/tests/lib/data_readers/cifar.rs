//! CIFAR-10 and CIFAR-100 binary batches.

use groupwise::data::{load, Augment, DataError, DataSpec, DatasetKind, Padding};

use super::{assert_mentions, cifar_pixel, cifar_record, load_err, spec, write, write_cifar10};
use crate::common::scratch;

#[test]
fn cifar10_reads_batches_in_order() {
    for nested in [false, true] {
        let root = scratch("cifar10");
        let dir = if nested {
            root.join("cifar-10-batches-bin")
        } else {
            root.path().to_path_buf()
        };
        write_cifar10(&dir);
        let s = load(&spec(DatasetKind::Cifar10, root.path())).unwrap();
        assert_eq!(s.train.len(), 10);
        assert_eq!(s.test.len(), 1);
        assert_eq!(s.train.shape(), (3, 32, 32));
        assert_eq!(s.train.classes(), 10);
        for id in 0..10 {
            assert_eq!(s.train.label(id), (id % 10) as u16);
            let expected: Vec<u8> = (0..3072).map(|p| cifar_pixel(id, p)).collect();
            assert_eq!(s.train.image(id), expected.as_slice());
        }
        assert_eq!(s.test.label(0), 4);
        assert_eq!(
            s.train_transform.augment,
            Augment::PadCropFlip {
                pad: 4,
                padding: Padding::Reflect
            }
        );
        assert_eq!(s.test_transform.augment, Augment::None);
        let v = s.test_transform.normalize_value(1, 0);
        assert!(
            (v - (-(123.0 / 255.0) / (62.1 / 255.0))).abs() < 1e-5,
            "{v}"
        );
    }
}

#[test]
fn cifar10_bad_length_label_and_missing() {
    let dir = scratch("cifar10-bad");
    write_cifar10(dir.path());
    let mut bytes = cifar_record(&[1], 0);
    bytes.extend_from_slice(&[0; 100]);
    write(&dir.join("data_batch_3.bin"), &bytes);
    let msg = load_err(DatasetKind::Cifar10, dir.path());
    assert_mentions(&msg, "data_batch_3.bin");

    write_cifar10(dir.path());
    write(&dir.join("test_batch.bin"), &cifar_record(&[10], 0));
    let err = load(&spec(DatasetKind::Cifar10, dir.path())).unwrap_err();
    assert!(matches!(err, DataError::LabelOutOfRange { .. }), "{err}");
    assert_mentions(&err.to_string(), "test_batch.bin");

    write_cifar10(dir.path());
    std::fs::remove_file(dir.join("data_batch_5.bin")).unwrap();
    assert_mentions(
        &load_err(DatasetKind::Cifar10, dir.path()),
        "data_batch_5.bin",
    );

    assert!(matches!(
        load(&DataSpec {
            kind: DatasetKind::Cifar10,
            ..DataSpec::default()
        }),
        Err(DataError::NoPath { .. })
    ));
}

#[test]
fn cifar100_uses_fine_labels() {
    for nested in [false, true] {
        let root = scratch("cifar100");
        let dir = if nested {
            root.join("cifar-100-binary")
        } else {
            root.path().to_path_buf()
        };
        std::fs::create_dir_all(&dir).unwrap();
        let mut train = cifar_record(&[3, 77], 0);
        train.extend(cifar_record(&[19, 99], 1));
        write(&dir.join("train.bin"), &train);
        write(&dir.join("test.bin"), &cifar_record(&[0, 5], 2));
        let s = load(&spec(DatasetKind::Cifar100, root.path())).unwrap();
        assert_eq!(s.train.labels(), &[77, 99]);
        assert_eq!(s.test.labels(), &[5]);
        assert_eq!(s.train.classes(), 100);
        let expected: Vec<u8> = (0..3072).map(|p| cifar_pixel(1, p)).collect();
        assert_eq!(s.train.image(1), expected.as_slice());

        // A fine label of 100 is out of range.
        write(&dir.join("test.bin"), &cifar_record(&[0, 100], 2));
        let msg = load_err(DatasetKind::Cifar100, root.path());
        assert_mentions(&msg, "test.bin");
        // A record of CIFAR-10 size is not a CIFAR-100 record.
        write(&dir.join("test.bin"), &cifar_record(&[0], 2));
        assert_mentions(&load_err(DatasetKind::Cifar100, root.path()), "test.bin");
    }
}
