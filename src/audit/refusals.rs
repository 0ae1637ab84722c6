//! "Once per token" for `revoked_token_refused`, in fixed memory.
//!
//! A direct-mapped table of token-id hashes: a token's slot holds its hash
//! once its first refusal has been recorded. Lock-free (one atomic swap per
//! refusal) and never larger than [`SLOTS`] words, however many revoked
//! tokens knock. The price of the bound: two tokens whose hashes share a
//! slot evict each other, so a token refused again after such an eviction
//! (or after a restart) is recorded once more. Over-recording, never
//! under-recording, is the side to err on for an audit trail.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// 4 096 slots: 32 KiB.
pub const SLOTS: usize = 4096;

pub(super) struct Refusals {
    slots: Box<[AtomicU64]>,
}

impl Refusals {
    pub(super) fn new() -> Self {
        Refusals {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The hash of a token id, never 0 (0 marks an empty slot). Token ids
    /// are random and chosen by the gateway, so a fixed-key hash is fine:
    /// nobody can pick ids that collide on purpose.
    fn hash(token_id: &str) -> u64 {
        BuildHasherDefault::<DefaultHasher>::default().hash_one(token_id) | 1
    }

    /// True the first time `token_id` is seen (and remembers it); false
    /// while it is remembered. Two threads racing on one id: one wins.
    pub(super) fn first(&self, token_id: &str) -> bool {
        let h = Self::hash(token_id);
        self.slots[h as usize % SLOTS].swap(h, Ordering::AcqRel) != h
    }

    /// Forgets `token_id` (its event could not be queued).
    pub(super) fn forget(&self, token_id: &str) {
        let h = Self::hash(token_id);
        let _ = self.slots[h as usize % SLOTS].compare_exchange(h, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_token_until_forgotten() {
        let r = Refusals::new();
        assert!(r.first("tkn_a"));
        assert!(!r.first("tkn_a"));
        assert!(r.first("tkn_b"));
        assert!(!r.first("tkn_a"));
        r.forget("tkn_a");
        assert!(r.first("tkn_a"));
        assert!(!r.first("tkn_a"));
    }

    #[test]
    fn memory_stays_fixed_however_many_tokens() {
        let r = Refusals::new();
        let firsts = (0..100_000).filter(|i| r.first(&format!("tkn_{i}"))).count();
        assert_eq!(firsts, 100_000, "each new token is recorded once");
        assert_eq!(r.slots.len(), SLOTS);
    }
}
