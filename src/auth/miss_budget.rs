//! Who may spend a store read on an index miss.
//!
//! A flood of random well-formed tokens passes the checksum and misses the
//! index and the negative cache every time. A single global budget of store
//! reads stops it from becoming a flood of store reads, but then the flood
//! spends the budget and a real token that is not in the index (after a
//! restart, after the idle sweep, every new token) gets 503. Two things keep
//! the flood from starving real tokens:
//!
//! - [`HashFilter`], a Bloom filter of the token hashes that exist, loaded
//!   from the store at start and updated when this process creates a token.
//!   The global budget is split in two halves that do not share: misses of
//!   hashes the filter knows spend one, misses of hashes it does not know
//!   the other. A flood can spend only its half, so hashes that exist
//!   always have theirs.
//! - A fair share per client address within the pool of unknown hashes
//!   (the whole budget when there is no filter, e.g. the Redis store): an
//!   address within its share (a fiftieth of the budget per second) spends
//!   from the pool; an address beyond it may spend only from an overflow
//!   of half the pool. Addresses within their share therefore always find
//!   half the pool, however hard one address floods. Over-share traffic is
//!   slowed, not cut off: behind a load balancer or a NAT every client has
//!   the same address, and those clients' new tokens must still be read.
//! - The filter never refuses anything. A hash it does not know still gets
//!   its store read when its address's budget allows: a token created by
//!   another instance (cluster mode) or by the offline CLI writing the same
//!   SQLite file is absent from this filter, and must still be found. A
//!   false "absent" therefore costs priority, never a wrong refusal; a false
//!   "present" (about 1% for random hashes) only lets a random token use the
//!   larger budget.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::token::TokenHash;

/// Bits per expected token (about 1% false positives with 4 probes) and
/// the headroom for tokens created after start.
const BITS_PER_TOKEN: usize = 10;
const PROBES: usize = 4;
/// Smallest filter: 64 Ki entries' worth (80 KiB).
const MIN_ENTRIES: usize = 1 << 16;

/// A Bloom filter over SHA-256 token hashes. The hash is already uniform,
/// so its bytes are the probe positions: no hashing here. Fixed size from
/// start; inserting beyond the design capacity only raises the false
/// positive rate.
pub struct HashFilter {
    bits: Box<[AtomicU64]>,
    mask: u64,
}

impl HashFilter {
    /// A filter sized for `expected` tokens (twice that, for growth).
    pub fn with_capacity(expected: usize) -> Self {
        let entries = expected.saturating_mul(2).max(MIN_ENTRIES);
        let bits = entries.saturating_mul(BITS_PER_TOKEN).next_power_of_two();
        HashFilter {
            bits: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: bits as u64 - 1,
        }
    }

    fn probes(&self, hash: &TokenHash) -> [(usize, u64); PROBES] {
        // Bytes 16..32: the limiter key uses 0..8 and the negative cache 8..16.
        std::array::from_fn(|p| {
            let at = 16 + p * 4;
            let v = u64::from(u32::from_le_bytes(hash[at..at + 4].try_into().expect("4 bytes"))) | (u64::from(hash[p]) << 32);
            let bit = v & self.mask;
            ((bit / 64) as usize, 1u64 << (bit % 64))
        })
    }

    pub fn insert(&self, hash: &TokenHash) {
        for (word, bit) in self.probes(hash) {
            self.bits[word].fetch_or(bit, Ordering::Relaxed);
        }
    }

    /// False only if `hash` was never inserted.
    pub fn may_contain(&self, hash: &TokenHash) -> bool {
        self.probes(hash)
            .into_iter()
            .all(|(word, bit)| self.bits[word].load(Ordering::Relaxed) & bit != 0)
    }
}

/// Per-address budget slots: direct-mapped, so memory is fixed and a flood
/// from many addresses cannot grow it (a collision only shares or resets a
/// budget).
const CLIENT_SLOTS: usize = 4096;

/// One address's reads in the current second.
#[derive(Clone, Copy, Default)]
struct ClientSlot {
    key: u64,
    second: i64,
    used: u32,
}

/// The budgets of store reads for index misses (see the module docs).
pub struct MissBudget {
    /// Without a filter, every miss counts here (`store_miss_reads_per_second`).
    all: Option<DefaultDirectRateLimiter>,
    /// Misses of hashes the filter knows: half of the global budget.
    known: Option<DefaultDirectRateLimiter>,
    /// Misses of hashes the filter does not know: the other half.
    unknown: Option<DefaultDirectRateLimiter>,
    /// What addresses beyond their share may spend of `unknown` (half of
    /// it), and of `all` (half of it).
    unknown_overflow: Option<DefaultDirectRateLimiter>,
    all_overflow: Option<DefaultDirectRateLimiter>,
    per_client: Option<(u32, Box<[Mutex<ClientSlot>]>)>,
}

impl MissBudget {
    /// `per_second` 0: unlimited.
    pub fn new(per_second: u32) -> Self {
        let Some(n) = NonZeroU32::new(per_second) else {
            return MissBudget {
                all: None,
                known: None,
                unknown: None,
                unknown_overflow: None,
                all_overflow: None,
                per_client: None,
            };
        };
        let half = NonZeroU32::new(per_second / 2).unwrap_or(NonZeroU32::MIN);
        let rest = NonZeroU32::new(per_second - per_second / 2).unwrap_or(NonZeroU32::MIN);
        let quarter = NonZeroU32::new(per_second / 4).unwrap_or(NonZeroU32::MIN);
        // An address's share: a fiftieth of the global budget per second
        // (40/s at the default 2000), plenty for a client connecting with
        // new tokens.
        let per_client = (per_second / 50).max(1);
        MissBudget {
            all: Some(RateLimiter::direct(Quota::per_second(n))),
            known: Some(RateLimiter::direct(Quota::per_second(rest))),
            unknown: Some(RateLimiter::direct(Quota::per_second(half))),
            unknown_overflow: Some(RateLimiter::direct(Quota::per_second(quarter))),
            all_overflow: Some(RateLimiter::direct(Quota::per_second(half))),
            per_client: Some((per_client, (0..CLIENT_SLOTS).map(|_| Mutex::new(ClientSlot::default())).collect())),
        }
    }

    /// Whether a store read may be spent on a miss. `known`: the filter
    /// knows the hash (or there is no filter and every miss is treated the
    /// same, `unfiltered`); `client`: the peer address, when known.
    pub fn allow(&self, known: bool, unfiltered: bool, client: Option<IpAddr>, now_secs: i64) -> bool {
        let spend = |b: &Option<DefaultDirectRateLimiter>| b.as_ref().is_none_or(|b| b.check().is_ok());
        if known && !unfiltered {
            return spend(&self.known);
        }
        let (pool, overflow) = if unfiltered {
            (&self.all, &self.all_overflow)
        } else {
            (&self.unknown, &self.unknown_overflow)
        };
        if self.within_share(client, now_secs) {
            spend(pool)
        } else {
            spend(overflow) && spend(pool)
        }
    }

    fn within_share(&self, client: Option<IpAddr>, now_secs: i64) -> bool {
        let (Some((limit, slots)), Some(addr)) = (&self.per_client, client) else {
            return true;
        };
        let key = client_key(addr);
        // Fibonacci hashing spreads nearby addresses over the slots.
        let i = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 52) as usize % slots.len();
        // Held for a few comparisons; no await inside.
        let mut s = slots[i].lock().unwrap_or_else(|p| p.into_inner());
        if s.key != key || s.second != now_secs {
            *s = ClientSlot {
                key,
                second: now_secs,
                used: 0,
            };
        }
        if s.used >= *limit {
            return false;
        }
        s.used += 1;
        true
    }
}

/// An address as a budget key: IPv4 whole, IPv6 by its /64 (one host
/// usually holds a whole /64, so per-address would be no limit at all).
fn client_key(addr: IpAddr) -> u64 {
    match addr {
        IpAddr::V4(a) => u64::from(u32::from(a)) | (1 << 63),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => u64::from(u32::from(v4)) | (1 << 63),
            None => (u128::from(a) >> 64) as u64 & !(1 << 63),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u32) -> TokenHash {
        crate::token::hash(&format!("token-{i}"))
    }

    #[test]
    fn the_filter_has_no_false_negatives_and_few_false_positives() {
        let f = HashFilter::with_capacity(1000);
        for i in 0..1000 {
            f.insert(&h(i));
        }
        assert!((0..1000).all(|i| f.may_contain(&h(i))));
        let false_positives = (1000..101_000).filter(|&i| f.may_contain(&h(i))).count();
        assert!(false_positives < 2000, "{false_positives} of 100000");
    }

    #[test]
    fn over_share_addresses_get_the_overflow_and_known_hashes_keep_their_half() {
        let b = MissBudget::new(100);
        let flood: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        // Unknown hashes: the pool is 50/s; an address's share 100 / 50 = 2;
        // beyond it, the overflow of 25. One address flooding gets 2 + 25.
        let flooded = (0..100).filter(|_| b.allow(false, false, Some(flood), 10)).count();
        assert_eq!(flooded, 27);
        // Another address within its share still finds the rest of the pool.
        assert!(b.allow(false, false, Some(other), 10));
        // A known hash from the flooding address is not held by any of it.
        assert!(b.allow(true, false, Some(flood), 10));
        // Unknown hashes from many addresses stop at the pool.
        let allowed = (0..1000u32)
            .filter(|i| b.allow(false, false, Some(IpAddr::from(i.to_be_bytes())), 10))
            .count();
        assert!(allowed <= 50 - 28, "{allowed}");
        // ... and the other half is there for hashes that exist.
        assert_eq!((0..60).filter(|_| b.allow(true, false, Some(flood), 10)).count(), 49);
        // Without a filter: the same shares over the whole budget.
        let b = MissBudget::new(100);
        assert_eq!((0..200).filter(|_| b.allow(true, true, Some(flood), 10)).count(), 2 + 50);
        assert!(b.allow(true, true, Some(other), 10));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_prefix() {
        let a = client_key("2001:db8:1:2::1".parse().unwrap());
        let b = client_key("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = client_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            client_key("::ffff:192.0.2.1".parse().unwrap()),
            client_key("192.0.2.1".parse().unwrap())
        );
    }
}
