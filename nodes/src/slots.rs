//! Places among a cap: [`Slots`] counts what a node holds of one kind (connections, calls, peer calls in flight)
//! and admits one more only below its maximum; each admitted one holds a [`Slot`] and gives its place back when
//! the slot is dropped, however it ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A count of places taken; cheap to clone, and clones share the count.
#[derive(Debug, Clone, Default)]
pub struct Slots(Arc<AtomicUsize>);

impl Slots {
    /// A place for one more, or `None` when `max` are taken.
    pub fn take(&self, max: usize) -> Option<Slot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < max).then_some(taken + 1)
            })
            .ok()
            .map(|_| Slot(self.0.clone()))
    }

    /// A place taken whatever the count: for what a bound elsewhere already limits (a bounded queue's items),
    /// counted here so it can be read.
    pub fn count(&self) -> Slot {
        self.0.fetch_add(1, Ordering::AcqRel);
        Slot(self.0.clone())
    }

    /// Places taken now.
    pub fn taken(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One place among a [`Slots`]' cap, given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_beyond_the_cap_are_refused_and_a_dropped_slot_frees_its_place() {
        let slots = Slots::default();
        let held: Vec<Slot> = (0..3).filter_map(|_| slots.take(3)).collect();
        assert_eq!(held.len(), 3);
        assert!(slots.take(3).is_none());
        assert_eq!(slots.taken(), 3);
        drop(held);
        assert_eq!(slots.taken(), 0);
        assert!(slots.take(3).is_some());
    }
}
