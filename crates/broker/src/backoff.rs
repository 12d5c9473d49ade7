//! Exponential backoff with jitter, shared by the adapters for reconnects and retries.
//!
//! Pure apart from its random seed (std's randomly keyed hasher): no clock, no sleeping —
//! the caller waits for the delay it is given.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Delays that start at `min`, double on every attempt up to `max`, each spread by a
/// random factor in [0.8, 1.2) so that many clients do not retry in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    rng: u64,
}

impl Backoff {
    /// A backoff from `min` doubling to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self::with_seed(min, max, RandomState::new().build_hasher().finish())
    }

    /// The same with a fixed seed (for tests).
    pub fn with_seed(min: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            min,
            max: max.max(min),
            next: min,
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt; the one after is twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        self.spread(base)
    }

    /// Back to `min`, after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// `base` scaled by a random factor in [0.8, 1.2).
    pub fn spread(&mut self, base: Duration) -> Duration {
        // xorshift64: enough randomness to spread retries, no extra dependency.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
        // Checked: a configured delay near `Duration::MAX` must not panic.
        Duration::try_from_secs_f64(base.as_secs_f64() * (0.8 + 0.4 * unit)).unwrap_or(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_jitters_and_resets() {
        let (min, max) = (Duration::from_millis(250), Duration::from_secs(30));
        let mut b = Backoff::with_seed(min, max, 42);
        let mut base = min;
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(
                d >= base.mul_f64(0.8) && d < base.mul_f64(1.2),
                "{d:?} around {base:?}"
            );
            base = base.saturating_mul(2).min(max);
        }
        b.reset();
        assert!(b.next_delay() < min.mul_f64(1.2));
        let mut c = Backoff::with_seed(min, max, 7);
        assert_ne!(
            c.spread(Duration::from_secs(10)),
            c.spread(Duration::from_secs(10))
        );
        for _ in 0..1000 {
            let d = c.spread(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(800) && d < Duration::from_millis(1200));
        }
        assert_eq!(c.spread(Duration::ZERO), Duration::ZERO);
        assert!(
            c.spread(Duration::MAX) > Duration::ZERO,
            "no panic near Duration::MAX"
        );
    }
}
