//! CIFAR-10 and CIFAR-100 binary batches.

use groupwise::data::rng::Rng;
use groupwise::data::{load, DatasetKind};

use super::{byte_cases, message, run, seed, Field};
use crate::common::scratch;
use crate::data_readers::{cifar_record, spec, write, write_cifar10};

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
