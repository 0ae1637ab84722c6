//! Just enough JSON-RPC 2.0 to validate a request body and find its id.
//!
//! The body is parsed into borrowed fields and `IgnoredAny`, so checking a
//! message allocates nothing for its params, however large.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    jsonrpc: Option<Str<'a>>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<Str<'a>>,
    #[serde(borrow)]
    params: Option<ParamsName<'a>>,
    result: Option<IgnoredAny>,
    error: Option<IgnoredAny>,
}

/// A string borrowed from the body unless it has escapes. serde borrows a
/// `Cow<str>` field, but not one inside an `Option` (it would allocate two
/// strings per request); inside this newtype it does.
#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

impl Str<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

/// `params.name` (the tool of a `tools/call`, for usage analytics) when
/// `params` is an object whose `name` is a string without escapes, borrowed
/// from the body; every other value of `params` is skipped as before, so
/// this costs a key comparison per member of `params` and no allocation.
struct ParamsName<'a>(Option<&'a str>);

impl<'de: 'a, 'a> Deserialize<'de> for ParamsName<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParamsVisitor(std::marker::PhantomData))
    }
}

struct ParamsVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for ParamsVisitor<'a> {
    type Value = ParamsName<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut name = None;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            if key.as_str() == "name" {
                // The last `name` wins, as in most JSON parsers upstream.
                let raw: &'de RawValue = map.next_value()?;
                name = raw
                    .get()
                    .strip_prefix('"')
                    .and_then(|r| r.strip_suffix('"'))
                    .filter(|r| !r.contains('\\'));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(ParamsName(name))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(ParamsName(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(ParamsName(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(ParamsName(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(ParamsName(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(ParamsName(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(ParamsName(None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(ParamsName(None))
    }
}

impl Envelope<'_> {
    fn is_valid(&self) -> bool {
        let id_ok = self.id.is_none_or(|id| is_valid_id(id.get()));
        let is_request_or_notification =
            self.method.as_ref().is_some_and(|m| !m.as_str().is_empty()) && self.result.is_none() && self.error.is_none();
        let is_response = self.method.is_none() && self.id.is_some() && (self.result.is_some() != self.error.is_some());
        self.jsonrpc.as_ref().map(Str::as_str) == Some("2.0") && id_ok && (is_request_or_notification || is_response)
    }
}

/// A string, a number or null (JSON-RPC 2.0 §4).
fn is_valid_id(raw: &str) -> bool {
    match raw.as_bytes().first() {
        Some(b'"') => true,
        // A number must be one clients can read back: beyond f64's range
        // (`1e400`) serde_json refuses the error body that echoes it, and
        // other parsers turn it into infinity. Costs one short parse, for
        // numeric ids only.
        Some(b'-' | b'0'..=b'9') => raw.parse::<f64>().is_ok_and(f64::is_finite),
        _ => raw == "null",
    }
}

/// What a request body turned out to be.
#[derive(Debug)]
pub enum Body<'a> {
    /// A single message; `id` is its raw JSON id when it has one.
    Message {
        id: Option<&'a RawValue>,
        method: Option<Cow<'a, str>>,
        /// `params.name` as a string without escapes (a `tools/call`'s tool),
        /// borrowed from the body.
        name: Option<&'a str>,
    },
    /// A batch (allowed by protocol revision 2025-03-26).
    Batch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON: -32700.
    Parse,
    /// JSON, but not a JSON-RPC message: -32600.
    InvalidRequest,
}

/// Classifies a POST body.
pub fn inspect(bytes: &[u8]) -> Result<Body<'_>, BodyError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let batch: Vec<Envelope<'_>> = serde_json::from_slice(bytes).map_err(classify)?;
        return if !batch.is_empty() && batch.iter().all(Envelope::is_valid) {
            Ok(Body::Batch)
        } else {
            Err(BodyError::InvalidRequest)
        };
    }
    let env: Envelope<'_> = serde_json::from_slice(bytes).map_err(classify)?;
    if env.is_valid() {
        Ok(Body::Message {
            id: env.id,
            method: env.method.map(|m| m.0),
            name: env.params.and_then(|p| p.0),
        })
    } else {
        Err(BodyError::InvalidRequest)
    }
}

/// Best-effort id of a body that may be invalid (for error responses).
pub fn request_id(bytes: &[u8]) -> Option<&RawValue> {
    match inspect(bytes) {
        Ok(Body::Message { id, .. }) => id,
        _ => serde_json::from_slice::<Envelope<'_>>(bytes)
            .ok()
            .and_then(|e| e.id)
            .filter(|id| is_valid_id(id.get())),
    }
}

fn classify(e: serde_json::Error) -> BodyError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => BodyError::Parse,
        Category::Data => BodyError::InvalidRequest,
    }
}

/// The JSON-RPC error body. It is encoded in `error`, the one place that
/// decides what a failing client sees, so that `error` needs nothing from
/// `mcp` (which uses `error` throughout); the name stays here for callers.
pub use crate::error::jsonrpc_error_body as error_body;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_notifications_and_responses_are_valid() {
        match inspect(br#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"x":[1,2]}}"#).unwrap() {
            Body::Message { id, method, .. } => {
                assert_eq!(id.unwrap().get(), "7");
                assert_eq!(method.as_deref(), Some("tools/list"));
                // Borrowed from the body, not copied (no allocation per request).
                assert!(matches!(method, Some(Cow::Borrowed(_))));
            }
            Body::Batch => panic!(),
        }
        assert!(inspect(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).is_ok());
        assert!(inspect(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).is_ok());
        assert!(inspect(br#"{"jsonrpc":"2.0","id":"a","error":{"code":1,"message":"x"}}"#).is_ok());
        assert!(inspect(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).is_ok());
        assert!(inspect(br#"{"jsonrpc":"2.0","id":1,"method":"esc\u0061ped"}"#).is_ok());
    }

    /// Found by the `jsonrpc` fuzz target: an id beyond f64's range was
    /// accepted and echoed into error bodies that serde_json (and so Rust
    /// clients) cannot parse ("number out of range").
    #[test]
    fn a_numeric_id_beyond_f64_is_invalid_and_never_echoed() {
        for body in [
            &br#"{"jsonrpc":"2.0","id":1e400,"method":"ping"}"#[..],
            br#"{"jsonrpc":"2.0","id":-2E222222222222222222,"method":"ping"}"#,
        ] {
            assert_eq!(inspect(body).unwrap_err(), BodyError::InvalidRequest);
            assert!(request_id(body).is_none());
            let err = error_body(request_id(body), -32600, "Invalid Request", None);
            assert!(serde_json::from_slice::<serde_json::Value>(&err).is_ok());
        }
        // Large but finite numbers stay valid ids.
        assert!(inspect(br#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"ping"}"#).is_ok());
        assert!(inspect(br#"{"jsonrpc":"2.0","id":-1.5e300,"method":"ping"}"#).is_ok());
    }

    #[test]
    fn not_json_is_a_parse_error() {
        for b in [&b"not json"[..], b"{", b"", b"{\"jsonrpc\":"] {
            assert_eq!(inspect(b).unwrap_err(), BodyError::Parse, "{:?}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn json_that_is_not_jsonrpc_is_an_invalid_request() {
        for b in [
            &br#"{}"#[..],
            br#"42"#,
            br#"[]"#,
            br#""str""#,
            br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            br#"{"id":1,"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":{"a":1},"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":""}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}, 3]"#,
        ] {
            assert_eq!(inspect(b).unwrap_err(), BodyError::InvalidRequest, "{}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn params_name_is_borrowed_when_plain_and_skipped_otherwise() {
        let name = |body: &str| match inspect(body.as_bytes()).unwrap() {
            Body::Message { name, .. } => name.map(str::to_owned),
            Body::Batch => panic!(),
        };
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"name":"inner"},"name":"echo"}}"#;
        assert_eq!(name(call).as_deref(), Some("echo"));
        match inspect(call.as_bytes()).unwrap() {
            Body::Message { name: Some(n), .. } => assert!(call.as_bytes().as_ptr_range().contains(&n.as_ptr())),
            _ => panic!(),
        }
        // The last `name` wins; escaped, non-string or absent names are none.
        assert_eq!(
            name(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"name":"a","name":"b"}}"#).as_deref(),
            Some("b")
        );
        assert_eq!(name(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"name":"e\u0063ho"}}"#), None);
        assert_eq!(name(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"name":7}}"#), None);
        assert_eq!(name(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":[1,{"name":"x"}]}"#), None);
        assert_eq!(name(r#"{"jsonrpc":"2.0","id":1,"method":"m","params":null}"#), None);
        assert_eq!(name(r#"{"jsonrpc":"2.0","id":1,"method":"m"}"#), None);
        // Params of any shape stay valid, as before.
        assert!(inspect(br#"{"jsonrpc":"2.0","id":1,"method":"m","params":"s"}"#).is_ok());
        assert_eq!(
            inspect(br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"name":}}"#).unwrap_err(),
            BodyError::Parse
        );
    }

    #[test]
    fn request_id_is_found_even_in_invalid_messages() {
        assert_eq!(request_id(br#"{"jsonrpc":"1.0","id":"x","method":"m"}"#).unwrap().get(), r#""x""#);
        assert!(request_id(b"garbage").is_none());
        assert!(request_id(br#"{"id":{"bad":1}}"#).is_none());
    }

    #[test]
    fn error_body_has_the_contract_shape() {
        let id = RawValue::from_string("12".into()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&error_body(
            Some(&id),
            -32000,
            "Rate limit exceeded",
            Some(&serde_json::json!({"retryAfter": 3})),
        ))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"jsonrpc":"2.0","id":12,"error":{"code":-32000,"message":"Rate limit exceeded","data":{"retryAfter":3}}})
        );
        let v: serde_json::Value = serde_json::from_slice(&error_body(None, -31001, "Unauthorized", None)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"jsonrpc":"2.0","id":null,"error":{"code":-31001,"message":"Unauthorized"}})
        );
    }
}
