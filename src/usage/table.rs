//! The in-memory counters: a fixed table of slots, open addressing on a
//! 64-bit seeded hash of (workspace, token, server, tool). A slot also
//! holds its token's key (the first 8 bytes of the token's SHA-256), checked
//! with the hash: the hash needs no resistance to crafted collisions,
//! since a client can only ever collide with keys of its own token.
//!
//! A request that finds its key adds to the slot's atomics: no lock, no
//! allocation. The first request of a key claims a free slot with one
//! compare-and-swap and describes it (the only allocation and the only lock,
//! once per key while the key stays in use); a full neighbourhood sends the
//! request to its workspace's overflow counters ("other").
//!
//! Counters are split by the parity of the request's minute, so a table that
//! was in use across a minute boundary still tells the two minutes apart
//! (the flusher keeps each table in use for at most 30 s).
//!
//! Slots are freed only by the flusher, and only in the table that is not in
//! use (see `Usage`), so no request can add to a slot being freed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::store::usage::Counts;

/// Slots a request looks at before it counts under "other".
const PROBES: usize = 16;

/// A tool or method dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tool {
    /// No JSON-RPC method (a GET stream, a DELETE, a request refused before
    /// its body was read, a batch).
    None,
    /// A name that failed the checks of `name::is_valid`.
    Folded,
    Name(Box<str>),
}

/// What a slot counts, written once by the request that claimed it.
#[derive(Debug)]
pub(super) struct Desc {
    pub workspace: usize,
    pub token_id: Box<str>,
    pub member_id: Option<Box<str>>,
    pub server: Option<usize>,
    pub tool: Tool,
    /// Drains in a row that found the slot unused (the flusher's).
    idle: u32,
}

impl Desc {
    pub(super) fn new(workspace: usize, token_id: &str, member_id: Option<&str>, server: Option<usize>, tool: Tool) -> Desc {
        Desc {
            workspace,
            token_id: token_id.into(),
            member_id: member_id.map(Into::into),
            server,
            tool,
            idle: 0,
        }
    }
}

/// Requests, errors and rate-limited answers, by minute parity.
#[derive(Default)]
pub(super) struct Counters([[AtomicU64; 3]; 2]);

impl Counters {
    #[inline]
    fn add(&self, parity: usize, status: u16) {
        let c = &self.0[parity & 1];
        c[0].fetch_add(1, Ordering::Relaxed);
        if status == 429 {
            c[2].fetch_add(1, Ordering::Relaxed);
        } else if status >= 400 {
            c[1].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts by parity, leaving zeros.
    fn take(&self) -> [Counts; 2] {
        let one = |c: &[AtomicU64; 3]| Counts {
            requests: c[0].swap(0, Ordering::Relaxed),
            errors: c[1].swap(0, Ordering::Relaxed),
            rate_limited: c[2].swap(0, Ordering::Relaxed),
        };
        [one(&self.0[0]), one(&self.0[1])]
    }
}

#[derive(Default)]
struct Slot {
    /// 0: free; otherwise the key's hash (never 0).
    key: AtomicU64,
    /// The token's key, written just after the slot is claimed (a request
    /// that reads it before then takes another slot for the same key, which
    /// the flusher sums: harmless).
    token: AtomicU64,
    counters: Counters,
    desc: Mutex<Option<Desc>>,
}

pub(super) struct Table {
    slots: Box<[Slot]>,
    mask: usize,
    /// Per workspace: requests whose key found no slot.
    overflow: Box<[Counters]>,
    /// When this table stopped being the one in use (Unix seconds).
    pub ended_at: AtomicI64,
}

impl Table {
    /// `capacity` rounded up to a power of two (0: an empty table, usage off).
    pub(super) fn new(capacity: usize, workspaces: usize) -> Table {
        let n = if capacity == 0 { 0 } else { capacity.next_power_of_two() };
        Table {
            slots: (0..n).map(|_| Slot::default()).collect(),
            mask: n.saturating_sub(1),
            overflow: (0..workspaces).map(|_| Counters::default()).collect(),
            ended_at: AtomicI64::new(0),
        }
    }

    /// Counts one answer under key `hash`; `describe` runs only when the key
    /// claims a slot. False: counted in the workspace's overflow.
    #[inline]
    pub(super) fn add(&self, hash: u64, token: u64, parity: usize, status: u16, workspace: usize, describe: impl FnOnce() -> Desc) -> bool {
        let mut describe = Some(describe);
        if !self.slots.is_empty() {
            let start = hash as usize;
            for i in 0..PROBES {
                let slot = &self.slots[start.wrapping_add(i) & self.mask];
                let mut k = slot.key.load(Ordering::Acquire);
                if k == 0 {
                    match slot.key.compare_exchange(0, hash, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => {
                            slot.token.store(token, Ordering::Release);
                            if let Some(d) = describe.take() {
                                *slot.desc.lock().unwrap_or_else(|p| p.into_inner()) = Some(d());
                            }
                            slot.counters.add(parity, status);
                            return true;
                        }
                        Err(current) => k = current,
                    }
                }
                if k == hash && slot.token.load(Ordering::Acquire) == token {
                    slot.counters.add(parity, status);
                    return true;
                }
            }
        }
        if let Some(o) = self.overflow.get(workspace) {
            o.add(parity, status);
        }
        false
    }

    /// Takes every count of this table (which must not be in use): `f` gets
    /// each described slot's counts by parity, `overflow` each workspace's.
    /// Slots unused for `reclaim_after` drains in a row are freed (at once
    /// when keys overflowed: the table is too small for the keys in use).
    pub(super) fn drain(&self, reclaim_after: u32, mut f: impl FnMut(&Desc, [Counts; 2]), mut overflow: impl FnMut(usize, [Counts; 2])) {
        let mut overflowed = false;
        for (ws, o) in self.overflow.iter().enumerate() {
            let c = o.take();
            if c[0].requests + c[1].requests > 0 {
                overflowed = true;
                overflow(ws, c);
            }
        }
        let reclaim_after = if overflowed { 1 } else { reclaim_after.max(1) };
        for slot in self.slots.iter() {
            if slot.key.load(Ordering::Acquire) == 0 {
                continue;
            }
            let mut guard = slot.desc.lock().unwrap_or_else(|p| p.into_inner());
            // Claimed but not yet described: its claimer is still at work;
            // its counts wait for the next drain.
            let Some(desc) = guard.as_mut() else { continue };
            let counts = slot.counters.take();
            if counts[0].requests + counts[1].requests == 0 {
                desc.idle += 1;
                if desc.idle >= reclaim_after {
                    *guard = None;
                    slot.token.store(0, Ordering::Relaxed);
                    slot.key.store(0, Ordering::Release);
                }
            } else {
                desc.idle = 0;
                f(desc, counts);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(tool: &str) -> Desc {
        Desc::new(0, "tkn_a", None, Some(0), Tool::Name(tool.into()))
    }

    #[test]
    fn keys_count_apart_and_overflow_when_full() {
        let t = Table::new(16, 1);
        assert!(t.add(5, 1, 0, 200, 0, || desc("a")));
        assert!(t.add(5, 1, 0, 500, 0, || panic!("described once")));
        assert!(t.add(5, 1, 1, 429, 0, || panic!("described once")));
        assert!(t.add(21, 1, 0, 200, 0, || desc("b")));
        // The same hash under another token is another key (a client can
        // only collide with its own token's keys).
        let mut described = false;
        assert!(t.add(5, 2, 0, 200, 0, || {
            described = true;
            desc("c")
        }));
        assert!(described);
        let mut seen = Vec::new();
        t.drain(3, |d, c| seen.push((d.tool.clone(), c)), |_, _| panic!("no overflow"));
        seen.sort_by_key(|(t, _)| format!("{t:?}"));
        assert_eq!(
            seen[0].1[0],
            Counts {
                requests: 2,
                errors: 1,
                rate_limited: 0
            }
        );
        assert_eq!(
            seen[0].1[1],
            Counts {
                requests: 1,
                errors: 0,
                rate_limited: 1
            }
        );
        assert_eq!(seen[1].1[0].requests, 1);
        assert_eq!(
            seen[2].1[0],
            Counts {
                requests: 1,
                errors: 0,
                rate_limited: 0
            }
        );
        assert_eq!(seen.len(), 3);
        // Every slot taken: the 17th key overflows to "other".
        let t = Table::new(16, 1);
        for k in 1..=16u64 {
            assert!(t.add(k, 1, 0, 200, 0, || desc("x")));
        }
        assert!(!t.add(99, 1, 0, 200, 0, || desc("y")));
        let mut over = 0;
        t.drain(3, |_, _| {}, |_, c| over += c[0].requests);
        assert_eq!(over, 1);
    }

    #[test]
    fn idle_slots_are_reclaimed_after_some_drains() {
        let t = Table::new(16, 1);
        t.add(7, 1, 0, 200, 0, || desc("a"));
        t.drain(2, |_, _| {}, |_, _| {});
        t.drain(2, |_, _| {}, |_, _| {});
        assert_eq!(t.slots.iter().filter(|s| s.key.load(Ordering::Relaxed) != 0).count(), 1);
        t.drain(2, |_, _| {}, |_, _| {});
        assert_eq!(t.slots.iter().filter(|s| s.key.load(Ordering::Relaxed) != 0).count(), 0);
        // A reclaimed key is described afresh.
        let mut described = false;
        t.add(7, 1, 0, 200, 0, || {
            described = true;
            desc("a")
        });
        assert!(described);
    }
}
