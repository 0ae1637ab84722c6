//! Per-member usage analytics: requests counted in memory per workspace,
//! token (and so member), server, tool (or method) and minute, then added
//! to the store's buckets every `usage.flush_interval_ms`
//! (`store::usage`).
//!
//! On the data plane a counted request costs a keyed hash of its key, a
//! few probes and two relaxed atomic adds: no lock and no allocation
//! (`table`). Two tables alternate: requests add to one while the flusher
//! drains the other, which went out of use one whole interval earlier, so
//! a request that picked a table just before the switch has long finished
//! adding to it when it is drained.
//!
//! What is counted: every answer to a request whose token was valid for the
//! workspace (so per token); `errors` are statuses of 400 and above except
//! 429, counted as `rate_limited`. Unauthenticated requests (401) have no
//! token and are not counted here; `portcullis_requests_total` counts them
//! per workspace. Only the token's public id, its member id, the configured
//! server name and a checked tool or method name become keys (`name`);
//! never the raw token nor any argument.
//!
//! Bounded: the tables have `usage.max_keys` slots each; each day the
//! flusher admits at most `max_tools_per_server` tool names per server and
//! `max_members_per_workspace` members and `max_tokens_per_workspace` tokens
//! per workspace. Anything beyond (and any name that fails the checks) is
//! counted under "other", and `portcullis_usage_folded_total` counts those
//! requests.

mod flush;
pub mod name;
mod table;

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

pub use flush::Flusher;
use table::{Desc, Table, Tool};

use crate::config::{Config, UsageConfig};
use crate::token::now_unix;

/// One answered request, as the gateway knows it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Configuration index of the workspace.
    pub workspace: usize,
    /// The token's public id (`tkn_…`).
    pub token_id: &'a str,
    /// A number that identifies the token (`token::limiter_key`): hashed
    /// and compared instead of the id.
    pub token_key: u64,
    pub member_id: Option<&'a str>,
    /// Configuration index of the server within the workspace, when one
    /// server answers the request.
    pub server: Option<usize>,
    /// The tool of a `tools/call`, else the JSON-RPC method, as sent (it is
    /// checked here); `None` when there is no method.
    pub tool: Option<&'a [u8]>,
    pub status: u16,
}

pub struct Usage {
    config: UsageConfig,
    tables: [Table; 2],
    /// Index of the table requests add to.
    active: AtomicUsize,
    /// Seeded per process, so clients cannot aim tool names at one slot
    /// (and a slot's token is checked besides its hash: see `table`).
    hasher: foldhash::fast::RandomState,
}

impl Usage {
    pub fn new(config: &Config) -> Usage {
        let u = &config.usage;
        let capacity = if u.enabled { u.max_keys } else { 0 };
        let workspaces = config.workspaces.len();
        Usage {
            config: u.clone(),
            tables: [Table::new(capacity, workspaces), Table::new(capacity, workspaces)],
            active: AtomicUsize::new(0),
            hasher: Default::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Counts one answered request.
    #[inline]
    pub fn record(&self, r: Request<'_>) {
        if !self.config.enabled {
            return;
        }
        let parity = (now_unix().div_euclid(60) & 1) as usize;
        let tool = match r.tool {
            None => ToolRef::None,
            Some(t) if name::is_valid(t) => ToolRef::Name(t),
            Some(_) => ToolRef::Folded,
        };
        let mut h = self.hasher.build_hasher();
        h.write_u64(r.token_key);
        h.write_u64((r.workspace as u64) << 32 | r.server.map_or(0xffff_ffff, |s| s as u64 & 0xffff_ffff));
        match tool {
            ToolRef::None => h.write_u8(0),
            ToolRef::Folded => h.write_u8(1),
            ToolRef::Name(n) => {
                h.write_u8(2);
                h.write(n);
            }
        }
        let hash = h.finish().max(1);
        let table = &self.tables[self.active.load(Ordering::Acquire) & 1];
        table.add(hash, r.token_key, parity, r.status, r.workspace, || {
            let tool = match tool {
                ToolRef::None => Tool::None,
                ToolRef::Folded => Tool::Folded,
                // Checked: ASCII only.
                ToolRef::Name(n) => Tool::Name(String::from_utf8_lossy(n).into()),
            };
            Desc::new(r.workspace, r.token_id, r.member_id, r.server, tool)
        });
    }

    /// Switches tables; the one that was in use is returned with the time
    /// it went out of use.
    fn switch(&self, now: i64) -> &Table {
        let old = self.active.load(Ordering::Acquire) & 1;
        self.tables[old].ended_at.store(now, Ordering::Relaxed);
        self.active.store(old ^ 1, Ordering::Release);
        &self.tables[old]
    }

    /// The table not in use.
    fn idle_table(&self) -> &Table {
        &self.tables[(self.active.load(Ordering::Acquire) & 1) ^ 1]
    }
}

#[derive(Clone, Copy)]
enum ToolRef<'a> {
    None,
    Folded,
    Name(&'a [u8]),
}
