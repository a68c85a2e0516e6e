//! A tiny deterministic random generator.
//!
//! The benchmark needs fast, reproducible draws (ids, the 90/10 mix), not statistical quality,
//! so a 64-bit xorshift is enough and keeps a dependency out of the graph.

/// Marsaglia's xorshift64 generator.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator for task number `stream`; each task gets a different, reproducible sequence.
    pub fn new(stream: u64) -> Self {
        // Spread small stream numbers over the state space; the state must never be zero.
        let seed = stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        XorShift(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..bound` (`bound > 0`); the modulo bias is negligible for our bounds.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

#[cfg(test)]
mod tests {
    use super::XorShift;

    #[test]
    fn streams_differ_and_stay_in_bounds() {
        let mut a = XorShift::new(0);
        let mut b = XorShift::new(1);
        assert_ne!(a.next_u64(), b.next_u64());
        assert!((0..1000).all(|_| a.below(10) < 10));
    }
}
