//! What the gateway knows about the provider: its discovery document
//! (`<issuer>/.well-known/openid-configuration`) and its signing keys (JWKS),
//! both fetched on first use and cached. The issuer in the document must be
//! the configured one, byte for byte (OpenID Connect Discovery §4.3): else a
//! document served at one address could speak for another issuer.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use serde::Deserialize;

use super::fetch::{FetchError, Fetcher, checked};

/// How long a discovery document is trusted before it is read again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// How long a key set is used before it is read again (keys rotate).
const JWKS_TTL: Duration = Duration::from_secs(3600);
/// A token signed with a key not in the set reads the set again, but not
/// more often than this, so a stream of bad tokens is not a stream of fetches.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(10);
/// More keys than this in one set is not a provider's key set.
const MAX_KEYS: usize = 64;

/// The fields of the discovery document the sign-in uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("the discovery document names issuer `{found}`, not the configured `{configured}`")]
    IssuerMismatch { configured: String, found: String },
    #[error("the provider accepts neither client_secret_basic nor client_secret_post at its token endpoint")]
    NoClientAuth,
    #[error("the provider does not support PKCE with S256")]
    NoPkce,
    #[error("the provider's key set has more than {MAX_KEYS} keys")]
    TooManyKeys,
}

/// How the client secret goes to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Basic,
    Post,
}

impl Discovery {
    /// `client_secret_basic` unless the provider lists only `_post`
    /// (absent list = basic, OpenID Connect Discovery §3).
    pub fn auth_method(&self) -> Result<AuthMethod, ProviderError> {
        match &self.token_endpoint_auth_methods_supported {
            None => Ok(AuthMethod::Basic),
            Some(m) if m.iter().any(|m| m == "client_secret_basic") => Ok(AuthMethod::Basic),
            Some(m) if m.iter().any(|m| m == "client_secret_post") => Ok(AuthMethod::Post),
            Some(_) => Err(ProviderError::NoClientAuth),
        }
    }
}

struct Cached<T> {
    value: T,
    fetched: Instant,
}

pub struct Provider {
    issuer: String,
    fetcher: Fetcher,
    discovery: tokio::sync::Mutex<Option<Cached<Discovery>>>,
    jwks: Mutex<Option<Cached<Vec<Jwk>>>>,
    /// Serializes key-set fetches, so concurrent sign-ins fetch once.
    jwks_fetch: tokio::sync::Mutex<()>,
}

impl Provider {
    pub fn new(issuer: String, fetcher: Fetcher) -> Self {
        Provider {
            issuer,
            fetcher,
            discovery: tokio::sync::Mutex::new(None),
            jwks: Mutex::new(None),
            jwks_fetch: tokio::sync::Mutex::new(()),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// The discovery document, from the cache while fresh.
    pub async fn discovery(&self) -> Result<Discovery, ProviderError> {
        let mut cached = self.discovery.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| c.fetched.elapsed() < DISCOVERY_TTL) {
            return Ok(c.value.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let d: Discovery = self.fetcher.get_json(&url).await?;
        if d.issuer != self.issuer {
            return Err(ProviderError::IssuerMismatch {
                configured: self.issuer.clone(),
                found: d.issuer,
            });
        }
        for endpoint in [&d.authorization_endpoint, &d.token_endpoint, &d.jwks_uri] {
            checked(endpoint)?;
        }
        d.auth_method()?;
        // Absent list: the provider does not say; PKCE is sent anyway and a
        // provider that ignores it is still protected by state and nonce.
        if let Some(m) = &d.code_challenge_methods_supported
            && !m.iter().any(|m| m == "S256")
        {
            return Err(ProviderError::NoPkce);
        }
        *cached = Some(Cached {
            value: d.clone(),
            fetched: Instant::now(),
        });
        Ok(d)
    }

    /// The key with id `kid` (or the only key, when the token names none).
    /// An unknown `kid` reads the set again (the provider rotated its keys),
    /// at most once per [`JWKS_MIN_REFRESH`].
    pub async fn key(&self, jwks_uri: &str, kid: Option<&str>) -> Result<Option<Jwk>, ProviderError> {
        if let Some(k) = self.cached_key(kid, JWKS_TTL) {
            return Ok(Some(k));
        }
        let _one = self.jwks_fetch.lock().await;
        // Another sign-in may have fetched while this one waited.
        if let Some(k) = self.cached_key(kid, JWKS_TTL) {
            return Ok(Some(k));
        }
        let recently = self
            .jwks
            .lock()
            .expect("jwks lock")
            .as_ref()
            .is_some_and(|c| c.fetched.elapsed() < JWKS_MIN_REFRESH);
        if recently {
            return Ok(None);
        }
        let set: JwkSet = self.fetcher.get_json(jwks_uri).await?;
        if set.keys.len() > MAX_KEYS {
            return Err(ProviderError::TooManyKeys);
        }
        *self.jwks.lock().expect("jwks lock") = Some(Cached {
            value: set.keys,
            fetched: Instant::now(),
        });
        Ok(self.cached_key(kid, Duration::MAX))
    }

    fn cached_key(&self, kid: Option<&str>, ttl: Duration) -> Option<Jwk> {
        let guard = self.jwks.lock().expect("jwks lock");
        let c = guard.as_ref().filter(|c| c.fetched.elapsed() < ttl)?;
        find_key(&c.value, kid)
    }
}

/// The signing key named `kid`; without a `kid`, the set's only signing key.
pub fn find_key(keys: &[Jwk], kid: Option<&str>) -> Option<Jwk> {
    use jsonwebtoken::jwk::PublicKeyUse;
    let signing = |k: &&Jwk| !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption));
    match kid {
        Some(kid) => keys
            .iter()
            .filter(signing)
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .cloned(),
        None => {
            let mut it = keys.iter().filter(signing);
            match (it.next(), it.next()) {
                (Some(k), None) => Some(k.clone()),
                _ => None,
            }
        }
    }
}
