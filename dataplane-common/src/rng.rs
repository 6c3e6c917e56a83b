//! The one pseudo-random generator of tests and benchmarks (the server's unit tests, the
//! integration kit, the bench): xorshift64, seeded, so a failure reproduces from its seed and a
//! benchmark measures the same tables every run. Here, not in a test crate, because the server's
//! own unit tests use it too and cannot depend on the integration crate.

/// Deterministic xorshift64 (13, 7, 17). The seed must not be 0.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next value of the sequence.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value below `n` (modulo bias is irrelevant at test sizes).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An index below `n`.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// One of `choices`.
    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.index(choices.len())]
    }
}
