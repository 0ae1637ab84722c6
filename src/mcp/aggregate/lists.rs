//! The merged lists (tools, prompts, resources, resource templates): paging
//! through each upstream, the names clients see (`<server>__<name>`, shortened
//! with a hash when too long; a resource URI rewritten only on collision),
//! and the bounded maps that route those names back.

use super::*;

impl Aggregator {
    pub(super) async fn list(&self, ctx: &Ctx<'_>, kind: ListKind, params: &Value) -> Result<Value, GatewayError> {
        Ok(self.list_owned(ctx, kind, params).await?.0)
    }

    /// The merged list, and for resources the server each plain URI of it
    /// belongs to (the first usable server, in configuration order, that
    /// lists it).
    pub(super) async fn list_owned(
        &self,
        ctx: &Ctx<'_>,
        kind: ListKind,
        params: &Value,
    ) -> Result<(Value, HashMap<String, usize>), GatewayError> {
        if params.get("cursor").is_some_and(|c| !c.is_null()) {
            // Every page of every upstream is merged into one answer, so no
            // cursor is ever issued: one sent back is not ours.
            return Err(GatewayError::InvalidParams);
        }
        let results = join_all(ctx.usable.iter().map(|&i| self.list_one(ctx, i, kind))).await;
        let mut items = Vec::new();
        let mut seen_uris = HashSet::new();
        let mut owners = HashMap::new();
        for (&i, r) in ctx.usable.iter().zip(results) {
            let list = match r {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(server = %self.name(i), error = %e, method = kind.method(), "upstream left out of the list");
                    if self.workspace.failure_mode == FailureMode::FailClosed {
                        return Err(e.into_gateway());
                    }
                    continue;
                }
            };
            if kind == ListKind::Resources {
                self.remember_resources(i, &list);
            }
            for mut item in list {
                match kind {
                    ListKind::Tools | ListKind::Prompts => {
                        let Some(name) = item.get("name").and_then(Value::as_str) else {
                            continue;
                        };
                        let exposed = expose(self.name(i), name);
                        if exposed.len() != self.name(i).len() + 2 + name.len() {
                            self.remember_mangled(i, &exposed, name);
                        }
                        item["name"] = Value::String(exposed);
                    }
                    ListKind::Resources => {
                        let Some(uri) = item.get("uri").and_then(Value::as_str).map(str::to_owned) else {
                            continue;
                        };
                        if seen_uris.insert(uri.clone()) {
                            owners.insert(uri, i);
                        } else {
                            item["uri"] = Value::String(format!("portcullis://{}/{uri}", self.name(i)));
                        }
                    }
                    ListKind::Templates => {}
                }
                items.push(item);
            }
        }
        Ok((json!({ kind.key(): items }), owners))
    }

    /// Replaces server `i`'s remembered resource URIs with those of the
    /// list it just returned (at most `MAP_CAP`; beyond that the set is
    /// marked incomplete and a lookup that misses lists again).
    pub(super) fn remember_resources(&self, i: usize, list: &[Value]) {
        let mut uris = HashSet::new();
        let mut complete = true;
        for uri in list.iter().filter_map(|item| item.get("uri").and_then(Value::as_str)) {
            if uris.len() >= MAP_CAP {
                complete = false;
                break;
            }
            uris.insert(Box::<str>::from(uri));
        }
        // Held for an assignment only; no await inside.
        *self.resources[i].write().unwrap_or_else(|p| p.into_inner()) = Some(ServerUris { uris, complete });
    }

    /// The owner of a plain `uri` for this session, from what was listed
    /// before, when that is conclusive: the first usable server (in
    /// configuration order) that lists it, provided every usable server
    /// before it has a complete list here that does not.
    pub(super) fn known_owner(&self, ctx: &Ctx<'_>, uri: &str) -> Option<usize> {
        for &i in &ctx.usable {
            let guard = self.resources[i].read().unwrap_or_else(|p| p.into_inner());
            match guard.as_ref() {
                Some(s) if s.uris.contains(uri) => return Some(i),
                Some(s) if s.complete => continue,
                _ => return None,
            }
        }
        None
    }

    /// Every page of one upstream's list. A server without that kind of list
    /// (-32601) contributes nothing; one marked down is skipped without
    /// waiting for a connect timeout (the health probe brings it back).
    pub(super) async fn list_one(&self, ctx: &Ctx<'_>, i: usize, kind: ListKind) -> Result<Vec<Value>, CallError> {
        if !self.up[i].load(Ordering::Relaxed) {
            return Err(CallError::Down("marked down".into()));
        }
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let msg = json!({"jsonrpc": "2.0", "id": internal_id(), "method": kind.method(), "params": params});
            let answer = self.call(ctx, i, &msg).await?;
            let Some(result) = answer.get("result") else {
                let code = answer.pointer("/error/code").and_then(Value::as_i64);
                if code == Some(-32601) {
                    // The upstream does not serve this kind at all.
                    return Ok(items);
                }
                return Err(CallError::Protocol(format!(
                    "{} failed: {}",
                    kind.method(),
                    answer.get("error").unwrap_or(&Value::Null)
                )));
            };
            if let Some(arr) = result.get(kind.key()).and_then(Value::as_array) {
                items.extend(arr.iter().cloned());
            }
            match result.get("nextCursor").and_then(Value::as_str) {
                Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
                _ => {
                    if matches!(kind, ListKind::Tools) {
                        self.metrics.server_tools(self.workspace.index, i, items.len());
                    }
                    return Ok(items);
                }
            }
        }
        Err(CallError::Protocol(format!("{} paginated past {MAX_PAGES} pages", kind.method())))
    }

    pub(super) fn remember_mangled(&self, i: usize, exposed: &str, original: &str) {
        let map = &self.mangled[i];
        if map.len() >= MAP_CAP {
            map.clear();
        }
        let rest = &exposed[self.name(i).len() + 2..];
        map.insert(rest.to_owned(), original.to_owned());
    }
}

/// `<server>__<rest>` → (index of server, rest), on the longest server name
/// that is a prefix: with servers `x` and `x_`, `x___t` is `x_`'s `t`, never
/// `x`'s `_t`. (Configuration also refuses names that start or end with `_`,
/// so two names cannot overlap this way; the longest match keeps the split
/// right whatever the names.)
pub(super) fn split_prefixed<'n, 'a>(names: impl Iterator<Item = &'n str>, exposed: &'a str) -> Option<(usize, &'a str)> {
    names
        .enumerate()
        .filter(|(_, n)| exposed.strip_prefix(n).is_some_and(|r| r.starts_with("__")))
        .max_by_key(|(_, n)| n.len())
        .map(|(i, n)| (i, &exposed[n.len() + 2..]))
}

/// Pages followed per upstream list before giving up (a looping cursor).
pub(super) const MAX_PAGES: usize = 100;

/// The four lists the gateway merges.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ListKind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl ListKind {
    pub(super) fn method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/list",
            ListKind::Prompts => "prompts/list",
            ListKind::Resources => "resources/list",
            ListKind::Templates => "resources/templates/list",
        }
    }
    pub(super) fn key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }
}

/// The name a client sees: `<server>__<name>` when that matches
/// `^[A-Za-z0-9_-]{1,64}$`; otherwise the name with other characters replaced
/// by `_`, cut to fit, and `_` plus 6 base62 characters of its SHA-256, so
/// that different long names stay different.
pub fn expose(server: &str, name: &str) -> String {
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let direct = format!("{server}__{name}");
    if direct.len() <= 64 && !name.is_empty() && name.bytes().all(valid) {
        return direct;
    }
    let mut out = format!("{server}__");
    for b in name.bytes() {
        if out.len() >= 64 - 7 {
            break;
        }
        out.push(if valid(b) { b as char } else { '_' });
    }
    out.push('_');
    let digest = Sha256::digest(name.as_bytes());
    let mut n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for _ in 0..6 {
        out.push(ALPHABET[(n % 62) as usize] as char);
        n /= 62;
    }
    out
}
