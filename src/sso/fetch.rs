//! The one HTTP client of single sign-on: discovery, JWKS and token calls to
//! the provider. Every call is bounded: a whole-call timeout (connect, send,
//! read), a cap on the answer's size, and only https (http to a loopback
//! address, for a provider on this machine). Answers are never logged: the
//! token endpoint's carries tokens.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A whole call, connect to last byte. Sign-in waits on it, so short.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read. Discovery documents and key sets are a few KiB;
/// Google's are under 10.
pub const MAX_ANSWER: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{0}` is neither https nor http to a loopback address")]
    Scheme(String),
    #[error("{0} did not answer within 5 s")]
    Timeout(String),
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("{0}: the answer is larger than 256 KiB")]
    TooLarge(String),
    #[error("{url}: not the JSON expected: {message}")]
    Json { url: String, message: String },
}

/// A form POST's client authentication (RFC 6749 §2.3.1).
pub enum ClientAuth<'a> {
    /// `Authorization: Basic` (`client_secret_basic`).
    Basic { id: &'a str, secret: &'a str },
    /// Already in the form (`client_secret_post`).
    InForm,
}

#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Fetcher {
    pub fn new() -> Self {
        // Mozilla's roots compiled in: the result does not depend on the
        // image's CA bundle, which slim container images often lack.
        let https = HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(https);
        Fetcher { client }
    }

    /// GET `url`, expecting JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, FetchError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(checked(url)?)
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| transport(url, e))?;
        let body = self.call(url, req).await?;
        parse(url, &body)
    }

    /// POST a form to `url`, expecting JSON.
    pub async fn post_form<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        form: &[(&str, &str)],
        auth: ClientAuth<'_>,
    ) -> Result<T, FetchError> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(checked(url)?)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let ClientAuth::Basic { id, secret } = auth {
            use base64::Engine;
            // RFC 6749 §2.3.1: each part form-encoded before joining.
            let pair = format!("{}:{}", form_encode(id), form_encode(secret));
            let mut value = HeaderValue::try_from(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
                .map_err(|e| transport(url, e))?;
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = builder.body(Full::new(Bytes::from(body))).map_err(|e| transport(url, e))?;
        let answer = self.call(url, req).await?;
        parse(url, &answer)
    }

    async fn call(&self, url: &str, req: Request<Full<Bytes>>) -> Result<Bytes, FetchError> {
        let work = async {
            let resp = self.client.request(req).await.map_err(|e| transport(url, e))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge(url.to_owned())
                } else {
                    transport(url, e)
                }
            })?;
            if !status.is_success() {
                return Err(FetchError::Status {
                    url: url.to_owned(),
                    status,
                });
            }
            Ok(body.to_bytes())
        };
        tokio::time::timeout(FETCH_TIMEOUT, work)
            .await
            .map_err(|_| FetchError::Timeout(url.to_owned()))?
    }
}

/// `url` parsed, if it is https, or http to a loopback address.
pub fn checked(url: &str) -> Result<Uri, FetchError> {
    let uri: Uri = url.parse().map_err(|_| FetchError::Scheme(url.to_owned()))?;
    let ok = match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => true,
        (Some("http"), Some(host)) => is_loopback_host(host),
        _ => false,
    };
    if ok { Ok(uri) } else { Err(FetchError::Scheme(url.to_owned())) }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn parse<T: serde::de::DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, FetchError> {
    serde_json::from_slice(body).map_err(|e| FetchError::Json {
        url: url.to_owned(),
        // The position only: the text could be a token endpoint's answer.
        message: format!("line {} column {}", e.line(), e.column()),
    })
}

fn transport(url: &str, e: impl std::fmt::Display) -> FetchError {
    FetchError::Transport {
        url: url.to_owned(),
        message: e.to_string(),
    }
}

/// `application/x-www-form-urlencoded` of one name or value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        assert!(checked("https://id.example.com/.well-known/openid-configuration").is_ok());
        assert!(checked("http://127.0.0.1:4000/jwks").is_ok());
        assert!(checked("http://[::1]:4000/jwks").is_ok());
        assert!(checked("http://localhost:4000/jwks").is_ok());
        assert!(checked("http://id.example.com/jwks").is_err());
        assert!(checked("ftp://id.example.com/").is_err());
        assert!(checked("/relative").is_err());
    }

    #[test]
    fn form_encoding_escapes_everything_reserved() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(form_encode("Az09-._~"), "Az09-._~");
    }

    #[tokio::test]
    async fn a_silent_server_times_out_and_a_huge_answer_is_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let (_s, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let huge = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let huge_addr = huge.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = huge.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body = vec![b' '; MAX_ANSWER + 10];
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
        });
        let f = Fetcher::new();
        let started = std::time::Instant::now();
        let e = f
            .get_json::<serde_json::Value>(&format!("http://{silent_addr}/x"))
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Timeout(_)), "{e}");
        assert!(started.elapsed() < FETCH_TIMEOUT + Duration::from_secs(2));
        let e = f.get_json::<serde_json::Value>(&format!("http://{huge_addr}/x")).await.unwrap_err();
        assert!(matches!(e, FetchError::TooLarge(_)), "{e}");
    }
}
