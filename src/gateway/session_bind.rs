//! Pass-through sessions bound to the token that opened them.
//!
//! A workspace with one server passes the upstream's sessions through, and
//! the gateway strips the client's identity on the way: the upstream cannot
//! tell two tokens apart. Left as it is, token S2 could use a session token
//! S1 opened (its `Mcp-Session-Id` seen in a log, a shared proxy, a leaked
//! config) and act inside it. So the upstream's id is never shown to the
//! client: the client gets it sealed (ChaCha20-Poly1305) with the workspace
//! and the token id as associated data, and a session id that does not open
//! for *this* token and workspace is answered 404 (as an aggregating
//! workspace answers a foreign session), without reaching the upstream.
//!
//! No table, so nothing to bound or share. The keys are
//! `server.session_keys` when configured (rotation: the first seals, all
//! open); otherwise a random key kept in the token store itself, made by the
//! first process that asks (SQLite: table `secrets`; Redis:
//! `secret:session-bind`), so every instance sharing the store opens every
//! session and a restart loses none. Only if that cannot be read at start
//! is a key of this process used: then a session opens only on the
//! instance that issued it, until it restarts; elsewhere the client gets
//! 404 and, as the MCP specification asks of it, starts a new session.
//!
//! Format: `pcp1.` + base64url(nonce(12) ‖ ciphertext ‖ tag(16)).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::GatewayError;

const PREFIX: &str = "pcp1.";
/// Longest id we try to open: bounds the work a client can ask for.
const MAX_SEALED_LEN: usize = 4 * 1024;

pub static MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");

pub struct SessionBinder {
    /// Newest first; only the first seals.
    ciphers: Vec<ChaCha20Poly1305>,
}

impl SessionBinder {
    /// `keys`: `server.session_keys`; empty, a random per-process key.
    pub fn new(keys: &[[u8; 32]]) -> Self {
        let ciphers = if keys.is_empty() {
            let mut k = [0u8; 32];
            getrandom::fill(&mut k).expect("OS random source");
            vec![ChaCha20Poly1305::new(Key::from_slice(&k))]
        } else {
            keys.iter().map(|k| ChaCha20Poly1305::new(Key::from_slice(k))).collect()
        };
        SessionBinder { ciphers }
    }

    fn seal(&self, workspace: &str, token_id: &str, upstream_id: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("OS random source");
        let aad = aad(workspace, token_id);
        let ct = self.ciphers[0]
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: upstream_id,
                    aad: aad.as_bytes(),
                },
            )
            .expect("encryption of a bounded message cannot fail");
        let mut raw = Vec::with_capacity(12 + ct.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ct);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
    }

    /// The upstream id sealed in `sealed`, if it was sealed for this token
    /// and workspace by one of our keys.
    fn open(&self, workspace: &str, token_id: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() > MAX_SEALED_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(sealed.strip_prefix(PREFIX.as_bytes())?).ok()?;
        if raw.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = raw.split_at(12);
        let aad = aad(workspace, token_id);
        self.ciphers.iter().find_map(|c| {
            c.decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .ok()
        })
    }

    /// On the way in: replaces the client's session id with the upstream's
    /// own. Returns the client's value (to answer with it unchanged), or
    /// 404 when it does not open for this token.
    pub fn inbound(&self, workspace: &str, token_id: &str, headers: &mut HeaderMap) -> Result<Option<HeaderValue>, GatewayError> {
        let Some(client) = headers.get(&MCP_SESSION_ID).cloned() else {
            return Ok(None);
        };
        let upstream = self
            .open(workspace, token_id, client.as_bytes())
            .and_then(|id| HeaderValue::from_bytes(&id).ok())
            .ok_or(GatewayError::SessionNotFound)?;
        headers.insert(MCP_SESSION_ID.clone(), upstream);
        Ok(Some(client))
    }

    /// On the way out: the upstream's session id, sealed for this token.
    /// The client's own value is kept when the upstream repeats the session
    /// it was sent, so that the id a client holds does not change under it.
    pub fn outbound(&self, workspace: &str, token_id: &str, sent: Option<(&HeaderValue, &HeaderValue)>, headers: &mut HeaderMap) {
        let Some(upstream) = headers.get(&MCP_SESSION_ID) else {
            return;
        };
        let sealed = match sent {
            Some((client, upstream_sent)) if upstream_sent == upstream => client.clone(),
            _ => HeaderValue::from_str(&self.seal(workspace, token_id, upstream.as_bytes())).expect("base64url is a valid header value"),
        };
        headers.insert(MCP_SESSION_ID.clone(), sealed);
    }
}

fn aad(workspace: &str, token_id: &str) -> String {
    format!("portcullis/pass-through-session/v1/{workspace}/{token_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_only_for_its_token_workspace_and_keys() {
        let b = SessionBinder::new(&[[1u8; 32]]);
        let sealed = b.seal("ws", "tkn_a", b"upstream-1");
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("upstream"));
        assert_eq!(b.open("ws", "tkn_a", sealed.as_bytes()).as_deref(), Some(&b"upstream-1"[..]));
        assert_eq!(b.open("ws", "tkn_b", sealed.as_bytes()), None);
        assert_eq!(b.open("other", "tkn_a", sealed.as_bytes()), None);
        assert_eq!(b.open("ws", "tkn_a", b"upstream-1"), None);
        // Rotation: an old key still opens; a per-process key opens nothing else's.
        let rotated = SessionBinder::new(&[[2u8; 32], [1u8; 32]]);
        assert!(rotated.open("ws", "tkn_a", sealed.as_bytes()).is_some());
        assert!(SessionBinder::new(&[]).open("ws", "tkn_a", sealed.as_bytes()).is_none());
    }

    #[test]
    fn headers_are_swapped_both_ways() {
        let b = SessionBinder::new(&[]);
        let mut resp = HeaderMap::new();
        resp.insert("mcp-session-id", HeaderValue::from_static("up-7"));
        b.outbound("ws", "tkn_a", None, &mut resp);
        let client = resp["mcp-session-id"].clone();
        assert_ne!(client, "up-7");
        let mut req = HeaderMap::new();
        req.insert("mcp-session-id", client.clone());
        assert_eq!(b.inbound("ws", "tkn_a", &mut req).unwrap(), Some(client.clone()));
        assert_eq!(req["mcp-session-id"], "up-7");
        // The upstream repeating the session: the client's id comes back as it was.
        let mut again = HeaderMap::new();
        again.insert("mcp-session-id", HeaderValue::from_static("up-7"));
        b.outbound("ws", "tkn_a", Some((&client, &req["mcp-session-id"])), &mut again);
        assert_eq!(again["mcp-session-id"], client);
        let mut other = HeaderMap::new();
        other.insert("mcp-session-id", client);
        assert!(matches!(b.inbound("ws", "tkn_b", &mut other), Err(GatewayError::SessionNotFound)));
    }
}
