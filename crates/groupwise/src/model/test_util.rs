//! What the kernels' unit tests share.

use tch::Tensor;

/// Asserts that `ours` has the shape of `theirs` and lies within `tolerance` x max(1, max |theirs|) of
/// it everywhere; `what` names the pair in the message.
pub(super) fn assert_close(ours: &Tensor, theirs: &Tensor, tolerance: f64, what: &str) {
    assert_eq!(ours.size(), theirs.size(), "{what}: shape");
    let diff = (ours - theirs).abs().max().double_value(&[]);
    let scale = theirs.abs().max().double_value(&[]).max(1.0);
    assert!(
        diff <= tolerance * scale,
        "{what}: off by {diff} (scale {scale})"
    );
}
