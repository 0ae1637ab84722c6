//! One sign-in's secrets, bound to the browser that started it.
//!
//! The browser gets a short-lived cookie holding a random value and the time
//! it was made; `state`, `nonce` and the PKCE verifier are hashes of that
//! cookie, each with its own label. Nothing is kept on the server, so the
//! callback may land on any instance; nothing that travels in a URL (state,
//! the PKCE challenge) or in the ID token (nonce) reveals the cookie or the
//! verifier; and a callback without the cookie that started it (a forged or
//! replayed link, login CSRF) cannot produce a matching `state`.
//!
//! The cookie is `HttpOnly`, `SameSite=Lax` (the provider's redirect back is
//! a cross-site top-level GET, which `Strict` would strip), scoped to
//! `/signin/oidc`, and cleared by the callback whatever its outcome.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};

pub const COOKIE: &str = "portcullis_oidc";
/// A sign-in must come back from the provider within this time.
pub const FLOW_TTL_SECS: u64 = 600;

/// The cookie's value: `v1.<unix time>.<32 random bytes, base64url>`.
pub struct Flow {
    value: String,
}

impl Flow {
    pub fn start(now: u64) -> Flow {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).expect("the OS random source works");
        Flow {
            value: format!("v1.{now}.{}", B64.encode(random)),
        }
    }

    /// The flow named by a cookie value, if well formed and not expired.
    pub fn from_cookie(value: &str, now: u64) -> Option<Flow> {
        let mut parts = value.splitn(3, '.');
        let (v, t, r) = (parts.next()?, parts.next()?, parts.next()?);
        let issued: u64 = t.parse().ok()?;
        let random = B64.decode(r).ok()?;
        if v != "v1" || random.len() != 32 || issued > now + 60 || now.saturating_sub(issued) > FLOW_TTL_SECS {
            return None;
        }
        Some(Flow { value: value.to_owned() })
    }

    fn derive(&self, label: &str) -> String {
        let mut h = Sha256::new();
        h.update(b"portcullis oidc ");
        h.update(label.as_bytes());
        h.update([0]);
        h.update(self.value.as_bytes());
        B64.encode(h.finalize())
    }

    pub fn state(&self) -> String {
        self.derive("state")
    }
    pub fn nonce(&self) -> String {
        self.derive("nonce")
    }
    /// 43 characters of base64url: a valid RFC 7636 verifier.
    pub fn pkce_verifier(&self) -> String {
        self.derive("pkce")
    }
    pub fn pkce_challenge(&self) -> String {
        B64.encode(Sha256::digest(self.pkce_verifier().as_bytes()))
    }

    pub fn set_cookie(&self, secure: bool) -> String {
        format!(
            "{COOKIE}={}; Path=/signin/oidc; Max-Age={FLOW_TTL_SECS}; HttpOnly; SameSite=Lax{}",
            self.value,
            if secure { "; Secure" } else { "" }
        )
    }
}

/// Clears the flow cookie (single use).
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/signin/oidc; Max-Age=0; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_are_stable_distinct_and_pkce_shaped() {
        let f = Flow::start(1000);
        let g = Flow::from_cookie(&f.value, 1100).unwrap();
        assert_eq!(f.state(), g.state());
        assert_eq!(f.nonce(), g.nonce());
        assert_ne!(f.state(), f.nonce());
        assert_ne!(f.state(), Flow::start(1000).state());
        let v = f.pkce_verifier();
        assert_eq!(v.len(), 43);
        assert!(v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(f.pkce_challenge(), v);
        // The cookie value appears in no derived value.
        assert!(!f.state().contains(f.value.rsplit('.').next().unwrap()));
    }

    #[test]
    fn expired_future_or_malformed_cookies_are_refused() {
        let f = Flow::start(1000);
        assert!(Flow::from_cookie(&f.value, 1000 + FLOW_TTL_SECS + 1).is_none());
        assert!(Flow::from_cookie(&f.value, 900).is_none());
        for bad in ["", "v1", "v1.x.y", "v2.1000.AAAA", "v1.1000.AAAA"] {
            assert!(Flow::from_cookie(bad, 1000).is_none(), "{bad}");
        }
        let c = f.set_cookie(true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Secure") && c.contains("Path=/signin/oidc"));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; portcullis_oidc=v1.2.x".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE), Some("v1.2.x"));
        assert_eq!(cookie(&h, "b"), None);
    }
}
