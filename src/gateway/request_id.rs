//! `X-Request-Id`: kept when the client sends a sane one, generated otherwise.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header's name, parsed once: a `&str` key is parsed and hashed anew
/// at every lookup (over a thousand instructions per request for the two
/// uses on the hot path, `benches/callgrind.sh`).
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Generates unique ids cheaply: a random per-process prefix and a counter,
/// so the hot path makes no system call for randomness.
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        let mut b = [0u8; 8];
        // Uniqueness across processes only needs a random prefix; if the OS
        // source failed we would have panicked long before (token generation).
        getrandom::fill(&mut b).expect("OS random source");
        RequestIds {
            prefix: u64::from_le_bytes(b),
            counter: AtomicU64::new(0),
        }
    }

    pub fn take_or_generate(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(v) = headers.get(&X_REQUEST_ID)
            && is_acceptable(v.as_bytes())
        {
            return v.clone();
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // Hex digits written into a stack buffer: one allocation (the
        // header value's own) instead of a formatted String plus a copy.
        let mut buf = [0u8; 32];
        hex(self.prefix, &mut buf[..16]);
        hex(n, &mut buf[16..]);
        HeaderValue::from_bytes(&buf).expect("hex is a valid header value")
    }
}

/// A client's id is kept only if it is 1-128 of `[A-Za-z0-9._-]`: it goes
/// into every log line of the request and upstream, and a quote, brace,
/// `=` or space could forge a field there (`r1"}token_id="tkn_x"`).
/// Anything else is replaced, not escaped, so no consumer has to escape it.
fn is_acceptable(v: &[u8]) -> bool {
    (1..=128).contains(&v.len()) && v.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `v` as 16 lowercase hex digits into `out`.
fn hex(mut v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_junk() {
        let ids = RequestIds::new();
        let mut h = HeaderMap::new();
        let a = ids.take_or_generate(&h);
        let b = ids.take_or_generate(&h);
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let n = u64::from_str_radix(&a.to_str().unwrap()[16..], 16).unwrap();
        assert_eq!(b.to_str().unwrap()[16..], format!("{:016x}", n + 1));
        assert_eq!(a.to_str().unwrap()[..16], format!("{:016x}", ids.prefix));
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(ids.take_or_generate(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("A.b_c-9"));
        assert_eq!(ids.take_or_generate(&h), "A.b_c-9");
        for junk in ["has space", r#"r1"}token_id="tkn_FORGED""#, "a=b", "a,b", "{x}", "a\\b", "a/b"] {
            h.insert("x-request-id", HeaderValue::from_str(junk).unwrap());
            let got = ids.take_or_generate(&h);
            assert_ne!(got, junk);
            assert_eq!(got.len(), 32, "a fresh id replaces {junk}");
        }
        h.insert("x-request-id", HeaderValue::from_str(&"a".repeat(128)).unwrap());
        assert_eq!(ids.take_or_generate(&h).len(), 128);
        h.insert("x-request-id", HeaderValue::from_str(&"a".repeat(129)).unwrap());
        assert_eq!(ids.take_or_generate(&h).len(), 32);
    }
}
