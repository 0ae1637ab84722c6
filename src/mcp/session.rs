//! Self-contained session ids for workspaces with several servers.
//!
//! The gateway keeps no session table: its `Mcp-Session-Id` *is* the session,
//! sealed with ChaCha20-Poly1305 under `server.session_keys`. Any instance
//! holding the keys can open any session, and a restart loses none. The
//! sealed state names the token it was issued to (a session cannot be carried
//! over to another token) and is bound to the workspace through the AEAD's
//! associated data (a session of one workspace opens nowhere else).
//!
//! Format: `pcs1.` + base64url(nonce(12) ‖ ciphertext ‖ tag(16)).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "pcs1.";
/// Longest session id we try to open: bounds the work an attacker can ask for.
const MAX_SEALED_LEN: usize = 8 * 1024;

/// What a session id carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// The id of the token that opened the session.
    #[serde(rename = "t")]
    pub token_id: String,
    /// Protocol version negotiated with the client.
    #[serde(rename = "v")]
    pub version: String,
    /// The client's `initialize` params (capabilities, clientInfo), kept so an
    /// upstream that forgot its session can be initialised again unseen.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub client: Option<serde_json::Value>,
    /// One entry per upstream this session uses, in configuration order.
    #[serde(rename = "u")]
    pub upstreams: Vec<UpstreamSession>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamSession {
    /// Server name (configuration).
    #[serde(rename = "n")]
    pub server: String,
    /// The upstream's own `Mcp-Session-Id`; `None` when it issued none or
    /// could not be reached at initialisation (fail_open).
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Protocol version the upstream chose.
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The upstream was initialised.
    #[serde(rename = "ok", default)]
    pub ready: bool,
}

/// Seals and opens session ids.
pub struct Sealer {
    /// Newest first; only the first seals.
    ciphers: Vec<ChaCha20Poly1305>,
}

impl Sealer {
    pub fn new(keys: &[[u8; 32]]) -> Option<Sealer> {
        if keys.is_empty() {
            return None;
        }
        let ciphers = keys.iter().map(|k| ChaCha20Poly1305::new(Key::from_slice(k))).collect();
        Some(Sealer { ciphers })
    }

    pub fn seal(&self, workspace: &str, state: &SessionState) -> String {
        let plain = serde_json::to_vec(state).expect("serializable");
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("OS random source");
        let ct = self.ciphers[0]
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: aad(workspace).as_bytes(),
                },
            )
            .expect("encryption of a bounded message cannot fail");
        let mut raw = Vec::with_capacity(12 + ct.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ct);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(raw))
    }

    /// `None` for anything not sealed by one of our keys for this workspace.
    pub fn open(&self, workspace: &str, sealed: &str) -> Option<SessionState> {
        if sealed.len() > MAX_SEALED_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(sealed.strip_prefix(PREFIX)?).ok()?;
        if raw.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = raw.split_at(12);
        let aad = aad(workspace);
        let plain = self.ciphers.iter().find_map(|c| {
            c.decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .ok()
        })?;
        serde_json::from_slice(&plain).ok()
    }
}

fn aad(workspace: &str) -> String {
    format!("portcullis/session/v1/{workspace}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SessionState {
        SessionState {
            token_id: "tkn_abc".into(),
            version: "2025-06-18".into(),
            client: Some(serde_json::json!({"capabilities":{}})),
            upstreams: vec![
                UpstreamSession {
                    server: "a".into(),
                    session: Some("s-1".into()),
                    version: Some("2025-06-18".into()),
                    ready: true,
                },
                UpstreamSession {
                    server: "b".into(),
                    session: None,
                    version: None,
                    ready: false,
                },
            ],
        }
    }

    #[test]
    fn seal_then_open_round_trips() {
        let s = Sealer::new(&[[7; 32]]).unwrap();
        let id = s.seal("team", &state());
        assert!(id.starts_with("pcs1."));
        assert!(id.bytes().all(|b| b.is_ascii_graphic()), "usable as a header value");
        assert_eq!(s.open("team", &id), Some(state()));
        // Fresh nonce each time: the same state never gives the same id.
        assert_ne!(id, s.seal("team", &state()));
    }

    #[test]
    fn other_workspace_other_key_or_tampering_do_not_open() {
        let s = Sealer::new(&[[7; 32]]).unwrap();
        let id = s.seal("team", &state());
        assert_eq!(s.open("other", &id), None);
        assert_eq!(Sealer::new(&[[8; 32]]).unwrap().open("team", &id), None);
        let mut bytes = id.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(s.open("team", std::str::from_utf8(&bytes).unwrap()), None);
        for junk in ["", "pcs1.", "pcs1.!!!", "x", &"pcs1.AAAA".repeat(5000)] {
            assert_eq!(s.open("team", junk), None, "{junk:.20}");
        }
    }

    #[test]
    fn rotated_keys_still_open_old_sessions_but_seal_with_the_newest() {
        let old = Sealer::new(&[[1; 32]]).unwrap();
        let id = old.seal("team", &state());
        let rotated = Sealer::new(&[[2; 32], [1; 32]]).unwrap();
        assert_eq!(rotated.open("team", &id), Some(state()));
        let new_id = rotated.seal("team", &state());
        assert_eq!(old.open("team", &new_id), None, "new sessions use the newest key");
    }
}
