//! Seedable random streams for the data pipeline: the shuffle, the augmentation and the synthetic
//! data.
//!
//! The data pipeline needs randomness whose value depends only on explicit inputs (seed, epoch,
//! position in the epoch), never on thread scheduling, so that runs are reproducible whatever the
//! number of loader workers. [`Rng`] is xoshiro256** seeded through SplitMix64, and
//! [`Rng::from_parts`] derives an independent stream from a tuple of integers.
//!
//! # What comes from `rand_xoshiro` and what is written here
//!
//! The generator and its seeding are `rand_xoshiro`'s: `Xoshiro256StarStar::seed_from_u64` fills
//! the state with the next four outputs of SplitMix64 started at the seed, which is exactly what
//! this module did by hand before, so every stream is unchanged (the tests below pin the first
//! values, computed with the hand-written version). [`splitmix64`] is the same crate's SplitMix64.
//!
//! The samplers on top ([`Rng::below`], [`Rng::next_f32`], [`Rng::next_bool`], [`Rng::shuffle`])
//! stay here, a few lines each, instead of `rand`'s `random_range` and `SliceRandom::shuffle`:
//! those use other algorithms, so switching would change every run's data order and
//! augmentation, and rust-random's reproducibility policy allows value-breaking changes to them
//! in minor releases, whereas a seed here must give the same data order for good. The xoshiro
//! and SplitMix64 generators themselves are fixed, published algorithms.

use rand_xoshiro::rand_core::{Rng as _, SeedableRng};
use rand_xoshiro::{SplitMix64, Xoshiro256StarStar};

/// One step of SplitMix64: advances `state` and returns a well-mixed 64-bit value.
///
/// Used to expand a single seed into the 256-bit state of [`Rng`] (as recommended by the
/// xoshiro authors) and to hash tuples of integers into seeds.
pub fn splitmix64(state: &mut u64) -> u64 {
    let mut sm = SplitMix64::seed_from_u64(*state);
    let out = sm.next_u64();
    *state = u64::from_le_bytes(sm.state());
    out
}

/// Hashes a tuple of integers into one 64-bit seed.
///
/// Order matters (`[a, b]` and `[b, a]` give different seeds), so callers can separate streams by
/// a leading tag constant.
pub fn derive_seed(parts: &[u64]) -> u64 {
    let mut state = 0x6A09_E667_F3BC_C909_u64;
    let mut out = splitmix64(&mut state);
    for &p in parts {
        state ^= p.wrapping_add(out);
        out = splitmix64(&mut state);
    }
    out
}

/// xoshiro256** pseudo-random generator (fast, 256-bit state, good statistical quality).
///
/// Not cryptographic; meant for shuffling and data augmentation only.
#[derive(Clone, Debug)]
pub struct Rng {
    inner: Xoshiro256StarStar,
}

impl Rng {
    /// A generator whose whole state is expanded from `seed` with SplitMix64.
    pub fn new(seed: u64) -> Self {
        Rng {
            inner: Xoshiro256StarStar::seed_from_u64(seed),
        }
    }

    /// A generator seeded from a tuple of integers (see [`derive_seed`]).
    pub fn from_parts(parts: &[u64]) -> Self {
        Rng::new(derive_seed(parts))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A uniform integer in `0..n` (unbiased, Lemire's method); returns 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        let mut low = m as u64;
        if low < n {
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
                low = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// A uniform float in `[0, 1)` with 24 bits of precision.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// A fair coin flip.
    pub fn next_bool(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The data order and augmentation of every run follow from these streams (the README's
    //! results and the equivalence tests depend on seed -> data order), so their first values are
    //! pinned. They were computed with the hand-written xoshiro256** / SplitMix64 this module had
    //! before it used `rand_xoshiro`; any change here changes every run's data.

    use super::*;

    fn first_u64(rng: &mut Rng, n: usize) -> Vec<u64> {
        (0..n).map(|_| rng.next_u64()).collect()
    }

    #[test]
    fn seeded_stream_is_pinned() {
        assert_eq!(
            first_u64(&mut Rng::new(0), 4),
            [
                0x99ec_5f36_cb75_f2b4,
                0xbf6e_1f78_4956_452a,
                0x1a5f_849d_4933_e6e0,
                0x6aa5_94f1_262d_2d2c
            ]
        );
        assert_eq!(
            first_u64(&mut Rng::new(42), 4),
            [
                0x1578_0b2e_0c2e_c716,
                0x6104_d986_6d11_3a7e,
                0xae17_5332_39e4_99a1,
                0xecb8_ad47_03b3_60a1
            ]
        );
    }

    #[test]
    fn derived_seeds_are_pinned() {
        let mut state = 5;
        assert_eq!(splitmix64(&mut state), 0x6303_3b0c_a389_c35a);
        assert_eq!(state, 0x9e37_79b9_7f4a_7c1a);
        assert_eq!(derive_seed(&[]), 0x63cf_c62a_2b09_7592);
        assert_eq!(derive_seed(&[1, 2, 3]), 0xa227_441c_63a7_c329);
        // The loader's shuffle stream of seed 0, epoch 0.
        assert_eq!(
            first_u64(&mut Rng::from_parts(&[0x5348_5546, 0, 0]), 2),
            [0x5642_cc86_cd11_4533, 0x8cb5_f078_fb7b_8f18]
        );
    }

    #[test]
    fn samplers_are_pinned() {
        let mut rng = Rng::new(7);
        let below: Vec<u64> = (0..8).map(|_| rng.below(10)).collect();
        assert_eq!(below, [7, 2, 8, 9, 9, 8, 0, 1]);
        let floats: Vec<f32> = (0..3).map(|_| rng.next_f32()).collect();
        assert_eq!(floats, [0.403_706_5, 0.151_816_07, 0.541_367_6]);
        let coins: Vec<bool> = (0..8).map(|_| rng.next_bool()).collect();
        assert_eq!(coins, [true, true, true, false, true, false, false, false]);
        let mut items: Vec<u32> = (0..10).collect();
        Rng::from_parts(&[0x5348_5546, 1, 2]).shuffle(&mut items);
        assert_eq!(items, [4, 1, 5, 3, 9, 8, 6, 7, 2, 0]);
    }
}
