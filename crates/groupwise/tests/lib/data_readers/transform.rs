//! Augmentation (padded crops and flips, against libtorch) and normalisation.

use groupwise::data::{augment_into, Crop, Padding, Transform};
use tch::Tensor;

use super::to_f32;

/// Reference crop computed with libtorch's own padding ops.
fn torch_reference(
    img: &[u8],
    shape: (usize, usize, usize),
    pad: usize,
    padding: Padding,
    crop: Crop,
) -> Vec<u8> {
    let (c, h, w) = shape;
    let t = Tensor::from_slice(img)
        .to_kind(tch::Kind::Float)
        .view([1, c as i64, h as i64, w as i64]);
    let p = pad as i64;
    let padded = match padding {
        Padding::Reflect => t.reflection_pad2d([p, p, p, p]),
        Padding::Zero => t.constant_pad_nd([p, p, p, p]),
    };
    let mut out = padded
        .narrow(2, crop.dy as i64, h as i64)
        .narrow(3, crop.dx as i64, w as i64);
    if crop.flip {
        out = out.flip([3]);
    }
    to_f32(&out).into_iter().map(|v| v as u8).collect()
}

#[test]
fn augment_matches_hand_computed_and_torch() {
    // One channel, 3x4 image with values 10*y + x.
    let img: Vec<u8> = (0..3)
        .flat_map(|y| (0..4).map(move |x| 10 * y + x))
        .collect();
    let mut out = vec![0u8; 12];
    // Reflect pad 2, crop at the top-left corner: rows -2..1 -> 2,1,0; cols -2..2 -> 2,1,0,1.
    let crop = Crop {
        dy: 0,
        dx: 0,
        flip: false,
    };
    augment_into(&img, (1, 3, 4), 2, Padding::Reflect, crop, &mut out);
    assert_eq!(out, vec![22, 21, 20, 21, 12, 11, 10, 11, 2, 1, 0, 1]);
    // Same crop flipped left-right.
    let flipped = Crop { flip: true, ..crop };
    augment_into(&img, (1, 3, 4), 2, Padding::Reflect, flipped, &mut out);
    assert_eq!(out, vec![21, 20, 21, 22, 11, 10, 11, 12, 1, 0, 1, 2]);
    // Zero padding, bottom-right corner: rows 2..5 -> 2,-,-; cols 2..6 -> 2,3,-,-.
    let corner = Crop {
        dy: 4,
        dx: 4,
        flip: false,
    };
    augment_into(&img, (1, 3, 4), 2, Padding::Zero, corner, &mut out);
    assert_eq!(out, vec![22, 23, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // Centre crop without flip is the identity.
    let centre = Crop {
        dy: 2,
        dx: 2,
        flip: false,
    };
    augment_into(&img, (1, 3, 4), 2, Padding::Reflect, centre, &mut out);
    assert_eq!(out, img);

    // Exhaustive comparison with libtorch on a 3-channel 5x6 image with pad 4.
    let shape = (3, 5, 6);
    let img: Vec<u8> = (0..90).map(|i| (i * 37 % 251) as u8).collect();
    let mut out = vec![0u8; 90];
    for padding in [Padding::Reflect, Padding::Zero] {
        for dy in 0..=8 {
            for dx in 0..=8 {
                for flip in [false, true] {
                    let crop = Crop { dy, dx, flip };
                    augment_into(&img, shape, 4, padding, crop, &mut out);
                    assert_eq!(
                        out,
                        torch_reference(&img, shape, 4, padding, crop),
                        "{padding:?} {crop:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn normalisation_values() {
    let t = Transform::normalize_only(vec![0.1, 0.2, 0.3], vec![0.5, 0.25, 2.0]);
    let img = [0u8, 255, 51, 0, 255, 51];
    let mut out = [0f32; 6];
    t.normalize_into(&img, 3, &mut out);
    let expected = [
        -0.2,
        1.8,
        (0.2 - 0.2) / 0.25,
        -0.2 / 0.25,
        (1.0 - 0.3) / 2.0,
        (0.2 - 0.3) / 2.0,
    ];
    for (o, e) in out.iter().zip(expected) {
        assert!((o - e).abs() < 1e-6, "{out:?} vs {expected:?}");
    }
}
