//! npz archives and `.npy` arrays (ImageNet32), stored and deflated, and their errors.

use groupwise::data::{load, read_npz_array, Augment, DataError, DatasetKind, NpyData, Padding};

use super::{
    assert_mentions, encode_labels, imagenet_pixel, load_err, npy, npz, spec, write, write_imagenet,
};
use crate::common::scratch;

#[test]
fn imagenet32_reads_npz_stored_and_deflated() {
    let dir = scratch("imagenet");
    write_imagenet(dir.path());
    let s = load(&spec(DatasetKind::ImageNet32, dir.path())).unwrap();
    assert_eq!(s.train.len(), 21);
    assert_eq!(s.test.len(), 3);
    assert_eq!(s.train.shape(), (3, 32, 32));
    assert_eq!(s.train.classes(), 1000);
    let mut ids: Vec<usize> = (0..20).collect();
    ids.push(999);
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(
            s.train.label(i),
            (id % 1000) as u16,
            "label of train image {i}"
        );
        let expected: Vec<u8> = (0..3072).map(|p| imagenet_pixel(id, p)).collect();
        assert_eq!(s.train.image(i), expected.as_slice(), "train image {i}");
    }
    assert_eq!(s.train.label(20), 999);
    assert_eq!(s.test.labels(), &[500, 501, 502]);
    assert_eq!(
        s.train_transform.augment,
        Augment::PadCropFlip {
            pad: 4,
            padding: Padding::Zero
        }
    );
    let v = s.test_transform.normalize_value(2, 255);
    assert!((v - (1.0 - 0.406) / 0.225).abs() < 1e-5, "{v}");
}

#[test]
fn npz_array_reader() {
    let dir = scratch("npz");
    for deflate in [false, true] {
        let path = dir.join(format!("a-{deflate}.npz"));
        let values = [-3i64, 0, 7, 1 << 40];
        npz(
            &path,
            &[
                (
                    "x.npy",
                    npy("<i8", &[2, 2], &encode_labels("<i8", &values), 2, false),
                ),
                ("y.npy", npy("|u1", &[3], &[9, 8, 7], 1, false)),
                (
                    "z.npy",
                    npy("<i2", &[2], &encode_labels("<i2", &[-2, 5]), 1, false),
                ),
            ],
            deflate,
        );
        let x = read_npz_array(&path, "x").unwrap();
        assert_eq!(x.shape, vec![2, 2]);
        assert_eq!(x.data, NpyData::Int(values.to_vec()));
        let y = read_npz_array(&path, "y").unwrap();
        assert_eq!(y.data, NpyData::U8(vec![9, 8, 7]));
        assert_eq!(
            read_npz_array(&path, "z").unwrap().data,
            NpyData::Int(vec![-2, 5])
        );
        let msg = read_npz_array(&path, "w").unwrap_err().to_string();
        assert_mentions(&msg, &format!("a-{deflate}.npz"));
    }
}

#[test]
fn imagenet32_errors_name_the_file() {
    let dir = scratch("imagenet-bad");
    write_imagenet(dir.path());
    let p = dir.join("train_data_batch_4.npz");

    // Label 0 (labels are 1-based).
    let data: Vec<u8> = vec![0; 3072];
    npz(
        &p,
        &[
            ("data.npy", npy("|u1", &[1, 3072], &data, 1, false)),
            (
                "labels.npy",
                npy("<i8", &[1], &encode_labels("<i8", &[0]), 1, false),
            ),
        ],
        true,
    );
    let err = load(&spec(DatasetKind::ImageNet32, dir.path())).unwrap_err();
    assert!(
        matches!(err, DataError::LabelOutOfRange { label: 0, .. }),
        "{err}"
    );
    assert_mentions(&err.to_string(), "train_data_batch_4.npz");

    // Fortran order.
    npz(
        &p,
        &[
            ("data.npy", npy("|u1", &[1, 3072], &data, 1, true)),
            (
                "labels.npy",
                npy("<i8", &[1], &encode_labels("<i8", &[3]), 1, false),
            ),
        ],
        false,
    );
    let msg = load_err(DatasetKind::ImageNet32, dir.path());
    assert_mentions(&msg, "train_data_batch_4.npz");
    assert!(msg.contains("Fortran"), "{msg}");

    // Data shorter than its shape.
    npz(
        &p,
        &[
            ("data.npy", npy("|u1", &[2, 3072], &data, 1, false)),
            (
                "labels.npy",
                npy("<i8", &[2], &encode_labels("<i8", &[3, 4]), 1, false),
            ),
        ],
        true,
    );
    assert_mentions(
        &load_err(DatasetKind::ImageNet32, dir.path()),
        "train_data_batch_4.npz",
    );

    // Wrong row size, label count mismatch, unsupported dtype, missing member, not a zip.
    let cases: Vec<Vec<(&str, Vec<u8>)>> = vec![
        vec![
            ("data.npy", npy("|u1", &[1, 3071], &data[..3071], 1, false)),
            (
                "labels.npy",
                npy("<i8", &[1], &encode_labels("<i8", &[3]), 1, false),
            ),
        ],
        vec![
            ("data.npy", npy("|u1", &[1, 3072], &data, 1, false)),
            (
                "labels.npy",
                npy("<i8", &[2], &encode_labels("<i8", &[3, 4]), 1, false),
            ),
        ],
        vec![
            ("data.npy", npy("|u1", &[1, 3072], &data, 1, false)),
            ("labels.npy", npy("<f4", &[1], &[0, 0, 128, 63], 1, false)),
        ],
        vec![("data.npy", npy("|u1", &[1, 3072], &data, 1, false))],
    ];
    for members in cases {
        npz(&p, &members, false);
        assert_mentions(
            &load_err(DatasetKind::ImageNet32, dir.path()),
            "train_data_batch_4.npz",
        );
    }
    write(&p, b"not a zip file at all");
    assert_mentions(
        &load_err(DatasetKind::ImageNet32, dir.path()),
        "train_data_batch_4.npz",
    );

    // A missing file is reported before anything is read.
    write_imagenet(dir.path());
    std::fs::remove_file(dir.join("val_data.npz")).unwrap();
    assert_mentions(
        &load_err(DatasetKind::ImageNet32, dir.path()),
        "val_data.npz",
    );
}
