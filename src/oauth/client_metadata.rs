//! Client ID Metadata Documents: a `client_id` that is an https URL names
//! a JSON document (`client_id`, `client_name`, `redirect_uris`) that the
//! server fetches, instead of the client registering.
//!
//! Fetching a URL a stranger chose is a server-side request forgery risk,
//! so:
//! - only `https` URLs with a path, no userinfo, no fragment, at most 512
//!   bytes;
//! - the resolved addresses are checked, not the name: a name that resolves
//!   to any loopback, private, link-local, shared (CGNAT), unique-local,
//!   multicast, documentation or unspecified address is refused (the
//!   resolver of the HTTP client does the check, so the address checked is
//!   the address connected to); an IP literal is checked the same way;
//! - no redirect is followed (a 3xx is a failure), so none can lead to a
//!   private address;
//! - 3 s to connect, 5 s in all, a body of at most 16 KiB;
//! - results, failures included, are cached (5 minutes, 30 s for a
//!   failure) in a map of at most 1000 entries.
//!
//! `[oauth] allow_private_client_metadata = true` lifts the address check
//! and allows plain `http`, for tests only.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::register::{Client, check_redirect_uri, clean_name};

/// Whether the metadata advertises support.
pub const SUPPORTED: bool = true;

const MAX_URL_LEN: usize = 512;
const MAX_DOCUMENT_BYTES: usize = 16 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CACHED: usize = 1000;
const TTL: Duration = Duration::from_secs(300);
const FAILURE_TTL: Duration = Duration::from_secs(30);

type Https = hyper_rustls::HttpsConnector<HttpConnector<Guarded>>;

/// The fetcher and its bounded cache.
pub struct Cache {
    allow_private: bool,
    client: HttpClient<Https, Empty<Bytes>>,
    entries: Mutex<HashMap<String, (Instant, Option<Client>)>>,
}

impl Cache {
    pub fn new(allow_private: bool) -> Self {
        let mut http = HttpConnector::new_with_resolver(Guarded { allow_private });
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Cache {
            allow_private,
            client: HttpClient::builder(TokioExecutor::new()).build(https),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The client the document at `url` describes, or `None` (refused).
    pub async fn resolve(&self, url: &str) -> Option<Client> {
        if !self.acceptable_url(url) {
            return None;
        }
        let now = Instant::now();
        if let Some((until, c)) = self.entries.lock().unwrap_or_else(|p| p.into_inner()).get(url)
            && *until > now
        {
            return c.clone();
        }
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.fetch(url)).await.ok().flatten();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_CACHED {
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= MAX_CACHED {
                // Still full of live entries: drop the one closest to expiry.
                if let Some(k) = entries.iter().min_by_key(|(_, (u, _))| *u).map(|(k, _)| k.clone()) {
                    entries.remove(&k);
                }
            }
        }
        let ttl = if fetched.is_some() { TTL } else { FAILURE_TTL };
        entries.insert(url.to_owned(), (now + ttl, fetched.clone()));
        fetched
    }

    fn acceptable_url(&self, url: &str) -> bool {
        if url.len() > MAX_URL_LEN || url.contains('#') || url.contains('@') {
            return false;
        }
        let Ok(u) = url.parse::<http::Uri>() else { return false };
        let scheme_ok = match u.scheme_str() {
            Some("https") => true,
            Some("http") => self.allow_private,
            _ => false,
        };
        let has_path = u.path().len() > 1;
        let host_ok = match u.host().map(|h| h.trim_start_matches('[').trim_end_matches(']')) {
            Some(h) => match h.parse::<IpAddr>() {
                Ok(ip) => self.allow_private || is_public(ip),
                Err(_) => !h.is_empty(),
            },
            None => false,
        };
        scheme_ok && has_path && host_ok
    }

    async fn fetch(&self, url: &str) -> Option<Client> {
        let req = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "portcullis-oauth")
            .body(Empty::new())
            .ok()?;
        let resp = self.client.request(req).await.ok()?;
        // No redirect is followed: anything but 200 is a refusal.
        if resp.status() != http::StatusCode::OK {
            return None;
        }
        let body = Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES).collect().await.ok()?.to_bytes();
        parse(url, &body)
    }
}

#[derive(Deserialize)]
struct Document {
    client_id: String,
    #[serde(default)]
    client_name: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

/// The client of a fetched document: its `client_id` must be the URL it
/// was fetched from, it must be a public client, and its redirect URIs
/// follow the registration rules.
fn parse(url: &str, body: &[u8]) -> Option<Client> {
    let d: Document = serde_json::from_slice(body).ok()?;
    if d.client_id != url || d.token_endpoint_auth_method.as_deref().is_some_and(|m| m != "none") {
        return None;
    }
    if d.redirect_uris.is_empty() || d.redirect_uris.len() > 8 || d.redirect_uris.iter().any(|u| check_redirect_uri(u).is_err()) {
        return None;
    }
    let host = url.parse::<http::Uri>().ok()?.host()?.to_owned();
    Some(Client {
        name: clean_name(d.client_name.as_deref().unwrap_or(&host)),
        redirect_uris: d.redirect_uris,
    })
}

/// Whether `ip` is an address of the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space (CGNAT)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking
                || o[0] >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || s[0] == 0x2001 && s[1] == 0x0db8 // documentation
                || s[0] == 0x0064 && s[1] == 0xff9b) // NAT64, may reach private v4
        }
    }
}

/// DNS for the fetcher: resolves, then refuses the name if any address it
/// has is not public, so the connection can only go to a checked address.
#[derive(Clone)]
struct Guarded {
    allow_private: bool,
}

impl tower_service::Service<Name> for Guarded {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if addrs.is_empty() || (!allow_private && addrs.iter().any(|a| !is_public(a.ip()))) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "client metadata host resolves to a non-public address",
                ));
            }
            Ok(addrs.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_fetch() {
        let strict = Cache::new(false);
        for bad in [
            "http://example.com/client.json",
            "https://example.com/",
            "https://example.com",
            "https://user@example.com/c.json",
            "https://example.com/c.json#x",
            "https://127.0.0.1/c.json",
            "https://[::1]/c.json",
            "https://169.254.169.254/latest",
        ] {
            assert!(!strict.acceptable_url(bad), "{bad}");
        }
        assert!(strict.acceptable_url("https://app.example/oauth/client.json"));
        let lax = Cache::new(true);
        assert!(lax.acceptable_url("http://127.0.0.1:8000/client.json"));
    }

    #[test]
    fn documents_must_name_themselves_and_be_public_clients() {
        let url = "https://app.example/c.json";
        let ok = br#"{"client_id":"https://app.example/c.json","client_name":"App","redirect_uris":["http://127.0.0.1:3000/cb"]}"#;
        assert_eq!(parse(url, ok).unwrap().name, "App");
        for bad in [
            &br#"{"client_id":"https://other.example/c.json","redirect_uris":["https://a.example/cb"]}"#[..],
            br#"{"client_id":"https://app.example/c.json","redirect_uris":["http://evil.example/cb"]}"#,
            br#"{"client_id":"https://app.example/c.json","redirect_uris":[]}"#,
            br#"{"client_id":"https://app.example/c.json","redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt"}"#,
            b"not json",
        ] {
            assert!(parse(url, bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
        let unnamed = br#"{"client_id":"https://app.example/c.json","redirect_uris":["https://a.example/cb"]}"#;
        assert_eq!(parse(url, unnamed).unwrap().name, "app.example", "no name: the host");
    }
}
