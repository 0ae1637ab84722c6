//! ID-token validation (OpenID Connect Core §3.1.3.7): signature with the
//! provider's published key, then `iss`, `aud`/`azp`, `exp`/`iat`, `nonce`.
//! The token came straight from the token endpoint, but it is checked as if
//! it had not: a compromised or confused endpoint must not sign anyone in.
//!
//! Only asymmetric algorithms are accepted: `none` carries no signature, and
//! HS* with a provider's public key as the HMAC secret is the classic key
//! confusion (anyone can compute it). The algorithm must also fit the key
//! (RSA key for RS*/PS*, EC key for ES*) and the key's own `alg`, if any.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Clock skew tolerated on `exp`, `iat` (and `nbf`), in seconds.
pub const SKEW_SECS: u64 = 60;

const ALLOWED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdTokenError {
    #[error("the ID token is not a signed JWT")]
    Malformed,
    #[error("the ID token's algorithm `{0}` is not accepted (RS*, PS*, ES256, ES384 only)")]
    Algorithm(String),
    #[error("no key of the provider matches the ID token's key id")]
    UnknownKey,
    #[error("the provider's key does not fit the ID token's algorithm")]
    KeyMismatch,
    #[error("the ID token's signature is not valid")]
    Signature,
    #[error("the ID token was issued by another issuer")]
    Issuer,
    #[error("the ID token is for another client")]
    Audience,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token is dated in the future or has no issue time")]
    IssuedAt,
    #[error("the ID token's nonce is not this sign-in's")]
    Nonce,
    #[error("the ID token lacks a required claim ({0})")]
    Missing(&'static str),
}

/// The header fields that pick the key.
pub struct Peeked {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// Reads the header (unverified) to find the key; refuses what no key may verify.
pub fn peek(token: &str) -> Result<Peeked, IdTokenError> {
    // `none` is not an Algorithm jsonwebtoken knows: it fails here.
    let header = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::Malformed)?;
    if !ALLOWED.contains(&header.alg) {
        return Err(IdTokenError::Algorithm(format!("{:?}", header.alg)));
    }
    Ok(Peeked {
        alg: header.alg,
        kid: header.kid,
    })
}

/// The claims read from a valid ID token.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    // Defaults here so that a missing claim reaches jsonwebtoken's
    // required-claims check and is reported as missing, not as malformed.
    #[serde(default)]
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub aud: Audience,
    #[serde(default)]
    pub azp: Option<String>,
    #[serde(default)]
    pub exp: u64,
    #[serde(default)]
    pub iat: Option<u64>,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// Some providers send `"true"` as a string.
    #[serde(default, deserialize_with = "bool_or_string")]
    pub email_verified: bool,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Default for Audience {
    fn default() -> Self {
        Audience::Many(Vec::new())
    }
}

impl Audience {
    fn as_slice(&self) -> &[String] {
        match self {
            Audience::One(a) => std::slice::from_ref(a),
            Audience::Many(v) => v,
        }
    }
}

fn bool_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        B(bool),
        S(String),
    }
    Ok(match Option::<B>::deserialize(d)? {
        Some(B::B(b)) => b,
        Some(B::S(s)) => s == "true",
        None => false,
    })
}

/// What this sign-in expects of the token.
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub now: u64,
}

/// Verifies `token` with `key` (found for `peeked`) and checks its claims.
pub fn verify(token: &str, peeked: &Peeked, key: &Jwk, expect: &Expect<'_>) -> Result<IdClaims, IdTokenError> {
    if let Some(key_alg) = key.common.key_algorithm
        && format!("{key_alg:?}") != format!("{:?}", peeked.alg)
    {
        return Err(IdTokenError::KeyMismatch);
    }
    let decoding = DecodingKey::from_jwk(key).map_err(|_| IdTokenError::KeyMismatch)?;
    if decoding.family() != peeked.alg.family() {
        return Err(IdTokenError::KeyMismatch);
    }
    let mut v = Validation::new(peeked.alg);
    v.set_issuer(&[expect.issuer]);
    v.set_audience(&[expect.client_id]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.leeway = SKEW_SECS;
    v.validate_nbf = true;
    let claims = match jsonwebtoken::decode::<IdClaims>(token, &decoding, &v) {
        Ok(data) => data.claims,
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind as K;
            return Err(match e.kind() {
                K::InvalidSignature | K::InvalidEcdsaKey | K::InvalidRsaKey(_) | K::Base64(_) => IdTokenError::Signature,
                K::InvalidAlgorithm => IdTokenError::KeyMismatch,
                K::InvalidIssuer => IdTokenError::Issuer,
                K::InvalidAudience => IdTokenError::Audience,
                K::ExpiredSignature | K::ImmatureSignature => IdTokenError::Expired,
                K::MissingRequiredClaim(c) => IdTokenError::Missing(match c.as_str() {
                    "exp" => "exp",
                    "iss" => "iss",
                    "aud" => "aud",
                    _ => "sub",
                }),
                _ => IdTokenError::Malformed,
            });
        }
    };
    // jsonwebtoken compares `iss` against a set; OpenID wants it exact, which
    // a one-element set is. Checked again so that a change there cannot pass.
    if claims.iss != expect.issuer {
        return Err(IdTokenError::Issuer);
    }
    if claims.sub.is_empty() {
        return Err(IdTokenError::Missing("sub"));
    }
    let aud = claims.aud.as_slice();
    if !aud.iter().any(|a| a == expect.client_id) {
        return Err(IdTokenError::Audience);
    }
    // §3.1.3.7 (4, 5): with several audiences, the authorized party must be
    // us; when present at all it must be us.
    match &claims.azp {
        Some(azp) if azp != expect.client_id => return Err(IdTokenError::Audience),
        None if aud.len() > 1 => return Err(IdTokenError::Audience),
        _ => {}
    }
    match claims.iat {
        Some(iat) if iat <= expect.now + SKEW_SECS => {}
        _ => return Err(IdTokenError::IssuedAt),
    }
    match &claims.nonce {
        Some(n) if constant_time_eq(n.as_bytes(), expect.nonce.as_bytes()) => {}
        _ => return Err(IdTokenError::Nonce),
    }
    Ok(claims)
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
#[path = "id_token_tests.rs"]
mod tests;
