//! The Redis key names of every store, in one place: which keys a script
//! or a MULTI touches together must share a Redis Cluster hash slot, and
//! only this file decides that.
//!
//! Two layouts:
//! - [`Layout::Plain`] (one primary, with or without Sentinel): the names
//!   Portcullis has always used, so that upgrading keeps every token, grant,
//!   member, audit event and usage count where it was;
//! - [`Layout::Tagged`] (Redis Cluster): the same names with a hash tag (the
//!   part in `{}`, which alone picks the slot) shared by every key that is
//!   written together:
//!   - `{t}`: the whole token store (records, hash index, sequence, list
//!     sets, revocation log and its sequence), so insert and revoke stay
//!     one atomic script and the revocation log is one ordered log;
//!   - `{g}`: grants, their member/workspace listings and token lists;
//!   - `{<workspace>}`: a workspace's members and their email index;
//!   - `{a}`: the audit streams (a batch appends to the global and the
//!     workspace stream in one script);
//!   - `{u}`: usage buckets (one flush is one MULTI over many buckets).
//!
//!   Keys always used alone (sessions, sign-in links, member sessions, OAuth
//!   secrets, the instance registry, the session-binding secret) keep their
//!   plain names and spread over the cluster. Rate-limit buckets
//!   ([`rate_limit`]) carry their token as tag in both layouts, so a token's
//!   buckets share a slot and tokens spread over the cluster.
//!
//! Data does not move between layouts by itself: a single-primary store
//! cannot be pointed at a Cluster with its tokens (docs/redis.md).

use crate::token::TokenKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Plain,
    Tagged,
}

impl Layout {
    /// `portcullis:` or `portcullis:{tag}:`.
    fn group(self, tag: &str) -> String {
        match self {
            Layout::Plain => "portcullis:".to_owned(),
            Layout::Tagged => format!("portcullis:{{{tag}}}:"),
        }
    }

    /// The token store's prefix: every key of it starts with this.
    pub fn tokens(self) -> String {
        self.group("t")
    }
    pub fn token(self, id: &str) -> String {
        format!("{}token:{id}", self.tokens())
    }
    pub fn hash_prefix(self) -> String {
        format!("{}hash:", self.tokens())
    }
    pub fn hash(self, hex: &str) -> String {
        format!("{}{hex}", self.hash_prefix())
    }
    pub fn tokens_seq(self) -> String {
        format!("{}tokens:seq", self.tokens())
    }
    pub fn list(self, kind: TokenKind, workspace: Option<&str>) -> String {
        format!("{}list:{}:{}", self.tokens(), kind.as_str(), workspace.unwrap_or("*"))
    }
    pub fn revocations(self) -> String {
        format!("{}revocations", self.tokens())
    }
    pub fn revocations_seq(self) -> String {
        format!("{}revocations:seq", self.tokens())
    }
    /// Acknowledgements still awaited, per revocation (`store::redis`).
    pub fn revocation_acks(self) -> String {
        format!("{}revocations:acks", self.tokens())
    }

    pub fn grant(self, id: &str) -> String {
        format!("{}grant:{id}", self.group("g"))
    }
    pub fn grant_tokens(self, id: &str) -> String {
        format!("{}:tokens", self.grant(id))
    }
    pub fn grants_of_member(self, member_id: &str) -> String {
        format!("{}grants:member:{member_id}", self.group("g"))
    }
    pub fn grants_of_workspace(self, workspace: &str) -> String {
        format!("{}grants:ws:{workspace}", self.group("g"))
    }

    /// The workspace as it appears in member keys (its own hash tag).
    fn ws(self, ws: &str) -> String {
        match self {
            Layout::Plain => ws.to_owned(),
            Layout::Tagged => format!("{{{ws}}}"),
        }
    }
    pub fn member(self, ws: &str, id: &str) -> String {
        format!("portcullis:member:{}:{id}", self.ws(ws))
    }
    pub fn member_email(self, ws: &str, email: &str) -> String {
        format!("portcullis:member_email:{}:{email}", self.ws(ws))
    }
    pub fn members(self, ws: &str) -> String {
        format!("portcullis:members:{}", self.ws(ws))
    }

    pub fn audit_all(self) -> String {
        format!("{}audit:all", self.group("a"))
    }
    pub fn audit_workspace(self, ws: &str) -> String {
        format!("{}audit:ws:{ws}", self.group("a"))
    }

    pub fn usage_bucket(self, kind: char, workspace: &str, start: i64) -> String {
        format!("{}usage:{kind}:{workspace}:{start}", self.group("u"))
    }
}

/// A token's cluster-scope rate-limit bucket (`limit::cluster`), by the
/// limiter's token key and the limit in force: the same name in both
/// layouts, tagged by token.
pub fn rate_limit(key: u64, per_minute: u32) -> String {
    format!("portcullis:rl:{{{key:016x}}}:{per_minute}")
}

/// The part of `key` Redis Cluster hashes: the first non-empty `{…}`, or
/// the whole key (Redis's rule, for the tests).
#[cfg(test)]
fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_the_ones_stores_always_used() {
        let p = Layout::Plain;
        assert_eq!(p.token("tok_1"), "portcullis:token:tok_1");
        assert_eq!(p.hash("ab"), "portcullis:hash:ab");
        assert_eq!(p.tokens_seq(), "portcullis:tokens:seq");
        assert_eq!(p.list(TokenKind::Admin, None), "portcullis:list:admin:*");
        assert_eq!(p.revocations(), "portcullis:revocations");
        assert_eq!(p.revocations_seq(), "portcullis:revocations:seq");
        assert_eq!(p.revocation_acks(), "portcullis:revocations:acks");
        assert_eq!(p.grant("g1"), "portcullis:grant:g1");
        assert_eq!(p.grant_tokens("g1"), "portcullis:grant:g1:tokens");
        assert_eq!(p.grants_of_member("m"), "portcullis:grants:member:m");
        assert_eq!(p.grants_of_workspace("w"), "portcullis:grants:ws:w");
        assert_eq!(p.member("w", "m"), "portcullis:member:w:m");
        assert_eq!(p.member_email("w", "a@b"), "portcullis:member_email:w:a@b");
        assert_eq!(p.members("w"), "portcullis:members:w");
        assert_eq!(p.audit_all(), "portcullis:audit:all");
        assert_eq!(p.audit_workspace("w"), "portcullis:audit:ws:w");
        assert_eq!(p.usage_bucket('m', "w", 60), "portcullis:usage:m:w:60");
    }

    #[test]
    fn tagged_keys_written_together_share_a_slot() {
        let t = Layout::Tagged;
        let same = |keys: &[String]| {
            let tags: Vec<&str> = keys.iter().map(|k| hash_tag(k)).collect();
            assert!(tags.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
            tags[0].to_owned()
        };
        let tokens = same(&[
            t.token("tok_1"),
            t.hash("ab"),
            t.tokens_seq(),
            t.list(TokenKind::Workspace, Some("w")),
            t.list(TokenKind::Admin, None),
            t.revocations(),
            t.revocations_seq(),
            t.revocation_acks(),
        ]);
        let grants = same(&[
            t.grant("g"),
            t.grant_tokens("g"),
            t.grants_of_member("m"),
            t.grants_of_workspace("w"),
        ]);
        let members = same(&[t.member("acme", "m"), t.member_email("acme", "a{x}@b"), t.members("acme")]);
        let audit = same(&[t.audit_all(), t.audit_workspace("w")]);
        let usage = same(&[t.usage_bucket('m', "w1", 0), t.usage_bucket('h', "w2", 3600)]);
        assert_eq!((tokens.as_str(), grants.as_str(), members.as_str()), ("t", "g", "acme"));
        assert_eq!((audit.as_str(), usage.as_str()), ("a", "u"));
        assert_ne!(hash_tag(&t.members("acme")), hash_tag(&t.members("other")));
    }
}
