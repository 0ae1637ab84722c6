//! The flusher: every `usage.flush_interval_ms` it drains the table not in
//! use, switches tables, applies the daily cardinality bounds, and adds the
//! counts to the store in one transaction (kept and retried on failure).
//! It also prunes expired buckets every ten minutes, and flushes both tables
//! at shutdown, once the data plane has drained.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::Usage;
use super::table::{Desc, Tool};
use crate::config::Config;
use crate::store::TokenStore;
use crate::store::usage::{Counts, FOLDED, Increment, NONE, Retention, UsageKey};
use crate::telemetry::Metrics;
use crate::token::now_unix;

/// How often expired buckets are removed (seconds).
const PRUNE_EVERY: i64 = 600;
/// A slot unused this long is freed (seconds).
const RECLAIM_AFTER: u64 = 120;

/// Values admitted today, per bound; beyond its size a value is "other".
#[derive(Default)]
struct Seen {
    day: i64,
    tokens: HashMap<usize, HashSet<Box<str>>>,
    members: HashMap<usize, HashSet<Box<str>>>,
    tools: HashMap<(usize, Option<usize>), HashSet<Box<str>>>,
}

/// `value` if already admitted or admitted now, else [`FOLDED`].
fn admit(set: &mut HashSet<Box<str>>, max: usize, value: &str, folded: &mut bool) -> String {
    if set.contains(value) || (set.len() < max && set.insert(value.into())) {
        value.to_owned()
    } else {
        *folded = true;
        FOLDED.to_owned()
    }
}

pub struct Flusher {
    usage: Arc<Usage>,
    config: Arc<Config>,
    store: Arc<dyn TokenStore>,
    metrics: Arc<Metrics>,
    seen: Seen,
    /// Counts drained but not yet in the store.
    pending: HashMap<(i64, UsageKey), Counts>,
    last_prune: i64,
}

impl Flusher {
    pub fn new(usage: Arc<Usage>, config: Arc<Config>, store: Arc<dyn TokenStore>, metrics: Arc<Metrics>) -> Flusher {
        Flusher {
            usage,
            config,
            store,
            metrics,
            seen: Seen::default(),
            pending: HashMap::new(),
            last_prune: 0,
        }
    }

    /// Flushes every interval until `stop`, then flushes what is left.
    /// `stop` must come after the data plane has drained, or the last
    /// requests' counts are lost.
    pub async fn run(mut self, stop: CancellationToken) {
        if !self.usage.enabled() {
            return;
        }
        let mut tick = tokio::time::interval(self.config.usage.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.tick(now_unix()).await,
                _ = stop.cancelled() => break,
            }
        }
        self.flush_all(now_unix()).await;
    }

    /// One interval: drain the table out of use since the last tick, switch,
    /// write, and prune now and then.
    pub async fn tick(&mut self, now: i64) {
        self.drain_idle(now);
        self.usage.switch(now_unix());
        self.write().await;
        if now - self.last_prune >= PRUNE_EVERY {
            self.prune(now).await;
        }
    }

    /// Both tables, at once: only when no request can still be counting.
    pub async fn flush_all(&mut self, now: i64) {
        self.drain_idle(now);
        self.usage.switch(now_unix());
        self.drain_idle(now);
        self.write().await;
    }

    /// Removes expired buckets.
    pub async fn prune(&mut self, now: i64) {
        self.last_prune = now;
        if let Some(store) = self.store.usage() {
            match store.prune_usage(now, self.retention()).await {
                Ok(n) => tracing::debug!(rows = n, "pruned expired usage buckets"),
                Err(e) => tracing::warn!(error = %e, "cannot prune usage buckets; will retry"),
            }
        }
    }

    fn retention(&self) -> Retention {
        Retention {
            minute: self.config.usage.minute_retention,
            hour: self.config.usage.hour_retention,
        }
    }

    fn drain_idle(&mut self, now: i64) {
        let usage = Arc::clone(&self.usage);
        let table = usage.idle_table();
        // The table was in use for at most one interval (≤ 30 s) before
        // `ended_at`: a count of parity p belongs to the latest minute of
        // that parity at or before the one it ended in.
        let last = table.ended_at.load(Ordering::Relaxed).div_euclid(60);
        let minute_of = |p: usize| if (last & 1) as usize == p { last * 60 } else { (last - 1) * 60 };
        let interval_ms = self.config.usage.flush_interval.as_millis().max(1) as u64;
        let reclaim_after = (RECLAIM_AFTER * 1000 / (2 * interval_ms)).clamp(1, u32::MAX as u64) as u32;
        let items = std::cell::RefCell::new(Vec::<(i64, Item, Counts)>::new());
        table.drain(
            reclaim_after,
            |d, c| {
                for (p, counts) in c.into_iter().enumerate() {
                    if counts.requests > 0 {
                        items.borrow_mut().push((minute_of(p), Item::Key(Item::of(d)), counts));
                    }
                }
            },
            |ws, c| {
                for (p, counts) in c.into_iter().enumerate() {
                    if counts.requests > 0 {
                        items.borrow_mut().push((minute_of(p), Item::Overflow(ws), counts));
                    }
                }
            },
        );
        let day = now.div_euclid(86_400);
        if self.seen.day != day {
            self.seen = Seen { day, ..Seen::default() };
        }
        let mut folded_requests = 0;
        for (minute, item, counts) in items.into_inner() {
            let (key, folded) = self.key(item);
            if folded {
                folded_requests += counts.requests;
            }
            self.pending.entry((minute, key)).or_default().add(counts);
        }
        if folded_requests > 0 {
            self.metrics.usage_folded(folded_requests);
        }
    }

    /// The stored key of a drained slot, with the daily bounds applied; true
    /// when some dimension was folded into "other".
    fn key(&mut self, item: Item) -> (UsageKey, bool) {
        let u = &self.config.usage;
        let (ws, token, member, server, tool) = match item {
            Item::Overflow(ws) => {
                let key = UsageKey {
                    workspace: self.config.workspaces[ws].slug.clone(),
                    token_id: FOLDED.into(),
                    member_id: FOLDED.into(),
                    server: FOLDED.into(),
                    tool: FOLDED.into(),
                };
                return (key, true);
            }
            Item::Key(k) => k,
        };
        let workspace = &self.config.workspaces[ws];
        let mut folded = false;
        let token_id = admit(
            self.seen.tokens.entry(ws).or_default(),
            u.max_tokens_per_workspace,
            &token,
            &mut folded,
        );
        let member_id = match member {
            None => NONE.to_owned(),
            Some(m) => admit(
                self.seen.members.entry(ws).or_default(),
                u.max_members_per_workspace,
                &m,
                &mut folded,
            ),
        };
        let server_name = match server.and_then(|i| workspace.servers.get(i)) {
            None => NONE.to_owned(),
            Some(s) => s.name.clone(),
        };
        let tool = match tool {
            Tool::None => NONE.to_owned(),
            Tool::Folded => {
                folded = true;
                FOLDED.to_owned()
            }
            Tool::Name(n) => admit(
                self.seen.tools.entry((ws, server)).or_default(),
                u.max_tools_per_server,
                &n,
                &mut folded,
            ),
        };
        let key = UsageKey {
            workspace: workspace.slug.clone(),
            token_id,
            member_id,
            server: server_name,
            tool,
        };
        (key, folded)
    }

    async fn write(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let Some(store) = self.store.usage() else {
            self.pending.clear();
            return;
        };
        let batch: Vec<Increment> = self
            .pending
            .iter()
            .map(|((minute, key), counts)| Increment {
                minute: *minute,
                key: key.clone(),
                counts: *counts,
            })
            .collect();
        match store.add_usage(&batch, self.retention()).await {
            Ok(()) => self.pending.clear(),
            Err(e) => {
                // Kept for the next tick, within a bound: an outage longer
                // than a few intervals loses counts rather than memory.
                let cap = self.config.usage.max_keys * 8;
                if self.pending.len() > cap {
                    tracing::error!(error = %e, buckets = self.pending.len(), "cannot write usage counts; dropping them");
                    self.pending.clear();
                } else {
                    tracing::warn!(error = %e, buckets = self.pending.len(), "cannot write usage counts; will retry");
                }
            }
        }
    }
}

/// A drained count: a described key, or a workspace's overflow.
enum Item {
    Key((usize, Box<str>, Option<Box<str>>, Option<usize>, Tool)),
    Overflow(usize),
}

impl Item {
    fn of(d: &Desc) -> (usize, Box<str>, Option<Box<str>>, Option<usize>, Tool) {
        (d.workspace, d.token_id.clone(), d.member_id.clone(), d.server, d.tool.clone())
    }
}
