//! Usage buckets: request counts per workspace, token, member, server and
//! tool (or method), by minute and by hour ([`UsageStore`]).
//!
//! Every flush adds its counts to the minute bucket **and** to the hour
//! bucket of the same requests, so the hourly roll-up is done as counts
//! arrive: pruning minute buckets (after `usage.minute_retention_hours`)
//! loses nothing the hour buckets do not hold, and a crash can never count
//! a minute twice in its hour. Day buckets are hour buckets summed when
//! queried (UTC days). Every instance of a cluster adds to the same buckets.
//!
//! Dimension values are what the gateway knows of a request, never client
//! secrets: the token's public id (`tkn_…`), the token's member id, the
//! configured server name, and a tool or method name already checked for
//! length and characters. [`NONE`] marks a dimension that does not apply
//! (a token without a member, a request no single server answers) and
//! [`FOLDED`] one folded into "other" by a cardinality bound; neither can be
//! a real value (member ids refuse control characters, and tool names are
//! limited to a small alphabet).

mod redis;
mod sqlite;

pub(super) use sqlite::migrate as migrate_sqlite;

use async_trait::async_trait;

use super::StoreError;

/// The dimension does not apply to the request.
pub const NONE: &str = "";
/// The value was folded into "other" (a cardinality bound, or a name that
/// failed the checks).
pub const FOLDED: &str = "\u{1}";

/// What a bucket counts, apart from its time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsageKey {
    pub workspace: String,
    pub token_id: String,
    pub member_id: String,
    pub server: String,
    pub tool: String,
}

/// The counts of a bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    /// Answers with status 400 or above, except 429.
    pub errors: u64,
    /// 429 answers.
    pub rate_limited: u64,
}

impl Counts {
    pub fn add(&mut self, o: Counts) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.rate_limited += o.rate_limited;
    }
}

/// Counts to add to one minute (and its hour).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Increment {
    /// Start of the minute, Unix seconds (a multiple of 60).
    pub minute: i64,
    pub key: UsageKey,
    pub counts: Counts,
}

/// Bucket width of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Minute,
    Hour,
    Day,
}

impl Bucket {
    pub fn parse(s: &str) -> Option<Bucket> {
        match s {
            "minute" => Some(Bucket::Minute),
            "hour" => Some(Bucket::Hour),
            "day" => Some(Bucket::Day),
            _ => None,
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Bucket::Minute => 60,
            Bucket::Hour => 3600,
            Bucket::Day => 86_400,
        }
    }

    /// Width of the stored buckets a query of this width reads.
    pub fn stored_seconds(self) -> i64 {
        match self {
            Bucket::Minute => 60,
            Bucket::Hour | Bucket::Day => 3600,
        }
    }
}

/// The dimension a query groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Token,
    Member,
    Server,
    Tool,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "token" => Some(GroupBy::Token),
            "member" => Some(GroupBy::Member),
            "server" => Some(GroupBy::Server),
            "tool" => Some(GroupBy::Tool),
            _ => None,
        }
    }

    /// This dimension's value in `key`.
    pub fn of(self, key: &UsageKey) -> &str {
        match self {
            GroupBy::Token => &key.token_id,
            GroupBy::Member => &key.member_id,
            GroupBy::Server => &key.server,
            GroupBy::Tool => &key.tool,
        }
    }
}

/// A query over one workspace's buckets.
#[derive(Debug, Clone, Copy)]
pub struct UsageQuery<'a> {
    pub workspace: &'a str,
    /// Unix seconds; stored buckets starting in `[from, to)` are read
    /// (`from` is first aligned down to the stored bucket width).
    pub from: i64,
    pub to: i64,
    pub bucket: Bucket,
    pub group_by: GroupBy,
}

impl UsageQuery<'_> {
    /// `from` aligned down to the stored buckets this query reads.
    pub fn aligned_from(&self) -> i64 {
        self.from.div_euclid(self.bucket.stored_seconds()) * self.bucket.stored_seconds()
    }
}

/// One bucket of a query's answer, oldest first, then by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// Unix seconds, a multiple of the query's bucket width.
    pub start: i64,
    /// The grouped dimension's stored value ([`NONE`], [`FOLDED`] or a name).
    pub key: String,
    pub counts: Counts,
}

/// How long buckets are kept, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub minute: i64,
    pub hour: i64,
}

#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds each increment to its minute bucket and its hour bucket. One
    /// transaction: a failed call added nothing and may be retried.
    async fn add_usage(&self, batch: &[Increment], retention: Retention) -> Result<(), StoreError>;
    /// Buckets of `q.workspace`, summed by bucket start and grouped value.
    async fn query_usage(&self, q: &UsageQuery<'_>) -> Result<Vec<UsageRow>, StoreError>;
    /// Removes minute buckets older than `retention.minute` and hour buckets
    /// older than `retention.hour` before `now`; the number of rows removed
    /// (stores that expire keys by themselves remove none here).
    async fn prune_usage(&self, now: i64, retention: Retention) -> Result<u64, StoreError>;
}

/// Sums rows with the same start and key into ordered rows (both backends
/// group the same way).
fn grouped(map: std::collections::BTreeMap<(i64, String), Counts>) -> Vec<UsageRow> {
    map.into_iter()
        .map(|((start, key), counts)| UsageRow { start, key, counts })
        .collect()
}
