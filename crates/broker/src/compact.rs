//! Giving back the memory of a burst.
//!
//! A collection keeps the capacity of its largest moment: after a fan-out to 100 000
//! destinations the core's tables stayed sized for 100 000 (about 150 MB measured in
//! use after the fan-out, docs/performance.md). [`Compact::compact`] shrinks one whose
//! capacity is more than four times what it holds (and more than [`SLACK`] entries),
//! to twice what it holds: a collection is shrunk only after it lost three quarters of
//! a size it grew to, so the work is paid for by the growth (amortised constant per
//! operation) and a steady load never shrinks and regrows.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};

/// Spare entries a collection keeps whatever it holds.
pub const SLACK: usize = 1024;

/// A collection that can give back unused capacity.
pub trait Compact {
    /// Shrinks the collection when it holds far less than its capacity; returns
    /// whether it did.
    fn compact(&mut self) -> bool;
}

fn oversized(len: usize, capacity: usize) -> Option<usize> {
    (capacity > SLACK && capacity / 4 > len).then(|| (len * 2).max(SLACK / 2))
}

/// The same policy for every collection with `len`, `capacity` and `shrink_to`.
macro_rules! compact_by_shrinking {
    ($($ty:ty => [$($bounds:tt)*]),* $(,)?) => {$(
        impl<$($bounds)*> Compact for $ty {
            fn compact(&mut self) -> bool {
                oversized(self.len(), self.capacity()).is_some_and(|to| {
                    self.shrink_to(to);
                    true
                })
            }
        }
    )*};
}

compact_by_shrinking! {
    Vec<T> => [T],
    VecDeque<T> => [T],
    BinaryHeap<T> => [T: Ord],
    HashMap<K, V, S> => [K: Eq + Hash, V, S: BuildHasher],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drained_collection_gives_back_its_capacity() {
        let mut v: VecDeque<u64> = (0..100_000).collect();
        v.truncate(10);
        assert!(v.compact());
        assert!(v.capacity() < 2 * SLACK, "{}", v.capacity());
        let mut m: HashMap<u64, [u8; 64]> = (0..100_000).map(|i| (i, [0; 64])).collect();
        m.retain(|k, _| *k < 100);
        assert!(m.compact());
        assert!(m.capacity() < 2 * SLACK, "{}", m.capacity());
        assert_eq!(m.len(), 100, "entries are kept");
    }

    #[test]
    fn a_collection_in_use_or_small_is_left_alone() {
        let mut busy: Vec<u64> = (0..100_000).collect();
        busy.truncate(30_000);
        let cap = busy.capacity();
        assert!(!busy.compact(), "holds more than a quarter");
        assert_eq!(busy.capacity(), cap);
        let mut small: Vec<u64> = Vec::with_capacity(SLACK);
        assert!(!small.compact(), "within the slack");
        assert_eq!(small.capacity(), SLACK);
    }

    #[test]
    fn shrinking_leaves_room_to_grow_again() {
        let mut v: Vec<u64> = (0..100_000).collect();
        v.truncate(5_000);
        assert!(v.compact());
        assert!(
            v.capacity() >= 10_000,
            "twice what it holds: {}",
            v.capacity()
        );
        assert!(!v.compact(), "a second call does nothing");
    }
}
