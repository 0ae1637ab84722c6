//! A bounded cache of token hashes known not to exist.
//!
//! Direct-mapped: a fixed array of slots indexed by bits of the hash. A new
//! entry simply overwrites whatever shares its slot, so memory is fixed at
//! start and a flood of random well-formed tokens cannot grow it. A false
//! "unknown" is impossible (the whole hash is compared); an overwritten entry
//! only costs one more store read.

use std::sync::Mutex;

use crate::token::TokenHash;

/// An unknown hash and the time (ms) until which it is remembered.
type Slot = Mutex<Option<(TokenHash, i64)>>;

pub struct NegativeCache {
    slots: Box<[Slot]>,
    ttl_ms: i64,
}

impl NegativeCache {
    /// `slots` is rounded up to a power of two.
    pub fn new(slots: usize, ttl_ms: i64) -> Self {
        let n = slots.max(1).next_power_of_two();
        NegativeCache {
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            ttl_ms,
        }
    }

    fn slot(&self, hash: &TokenHash) -> &Slot {
        // Hash bits are uniformly distributed; the limiter key uses bytes 0..8,
        // so take 8..16 here to keep the two independent.
        let i = u64::from_le_bytes(hash[8..16].try_into().expect("8 bytes")) as usize & (self.slots.len() - 1);
        &self.slots[i]
    }

    /// Whether `hash` was recorded as unknown less than the TTL ago.
    pub fn contains(&self, hash: &TokenHash, now_ms: i64) -> bool {
        // The lock guards 40 bytes for a few nanoseconds; no await inside.
        let slot = self.slot(hash).lock().unwrap_or_else(|p| p.into_inner());
        matches!(*slot, Some((h, until)) if h == *hash && until > now_ms)
    }

    pub fn insert(&self, hash: &TokenHash, now_ms: i64) {
        *self.slot(hash).lock().unwrap_or_else(|p| p.into_inner()) = Some((*hash, now_ms + self.ttl_ms));
    }

    pub fn remove(&self, hash: &TokenHash) {
        let mut slot = self.slot(hash).lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*slot, Some((h, _)) if h == *hash) {
            *slot = None;
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_ttl_and_is_bounded() {
        let c = NegativeCache::new(4, 1000);
        let h = [7u8; 32];
        assert!(!c.contains(&h, 0));
        c.insert(&h, 0);
        assert!(c.contains(&h, 999));
        assert!(!c.contains(&h, 1000));
        c.remove(&h);
        assert!(!c.contains(&h, 1));
        // Many distinct hashes never grow it past its slots: of 1000
        // inserted, at most 4 are still remembered (the last one written to
        // each slot), and those are exactly the last 4, one per slot.
        let hashes: Vec<TokenHash> = (0..1000u32)
            .map(|i| {
                let mut x = [0u8; 32];
                x[8..12].copy_from_slice(&i.to_le_bytes());
                x
            })
            .collect();
        for x in &hashes {
            c.insert(x, 0);
        }
        let remembered: Vec<usize> = (0..hashes.len()).filter(|&i| c.contains(&hashes[i], 1)).collect();
        assert_eq!(remembered, [996, 997, 998, 999]);
    }
}
