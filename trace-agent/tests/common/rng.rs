//! Deterministic pseudo-random numbers for generated data (an LCG, Knuth's MMIX constants):
//! the same data on every machine. Shared by the local store's benches.

/// The generator; the seed is its only state.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next number (the top 53 bits of the state).
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }

    /// A number in `0..n` (`0` when `n` is 0).
    #[allow(dead_code)] // not every user draws bounded numbers
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
