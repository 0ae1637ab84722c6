//! Token format, hashing and the token record.
//!
//! A token is `<prefix>` + 30 random base62 characters + 6 base62 characters of
//! CRC32 over the random part. The checksum lets the gateway reject typos and
//! random garbage before it spends a hash, a cache lookup or a store read on it.
//! This module does no I/O apart from reading the OS random source.

mod record;

pub use record::{TokenKind, TokenRecord, TokenStatus, TokenView, format_rfc3339, is_forbidden_char, now_unix};

use sha2::{Digest, Sha256};

/// Alphabet of the random and checksum parts, in the order of their values.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Prefix of workspace (data-plane) tokens.
pub const WORKSPACE_PREFIX: &str = "mwt_";
/// Prefix of admin (control-plane) tokens.
pub const ADMIN_PREFIX: &str = "mwa_";
/// Prefix of public token ids.
pub const ID_PREFIX: &str = "tkn_";
const RANDOM_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;
/// Total length of a token: prefix, random part and checksum.
pub const TOKEN_LEN: usize = 4 + RANDOM_LEN + CHECKSUM_LEN;
/// Length of the random part of a token id (~95 bits).
const ID_RANDOM_LEN: usize = 16;

/// SHA-256 of the whole token string: the only form in which a token is stored.
pub type TokenHash = [u8; 32];

/// Why a presented token was rejected before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedToken {
    Prefix,
    Length,
    Alphabet,
    Checksum,
}

/// Checks the shape and checksum of `raw` and returns its kind.
///
/// This is the first step of every verification; it touches no shared state
/// and allocates nothing, so a flood of garbage costs almost nothing.
pub fn parse(raw: &str) -> Result<TokenKind, MalformedToken> {
    let bytes = raw.as_bytes();
    if bytes.len() != TOKEN_LEN {
        return Err(MalformedToken::Length);
    }
    // Compare bytes, not a `str` slice: byte 4 need not be a char boundary.
    let kind = match &bytes[..4] {
        b"mwt_" => TokenKind::Workspace,
        b"mwa_" => TokenKind::Admin,
        _ => return Err(MalformedToken::Prefix),
    };
    let random = &bytes[4..4 + RANDOM_LEN];
    let checksum = &bytes[4 + RANDOM_LEN..];
    if !random.iter().chain(checksum).all(u8::is_ascii_alphanumeric) {
        return Err(MalformedToken::Alphabet);
    }
    if encode_checksum(crc32fast::hash(random)) != checksum {
        return Err(MalformedToken::Checksum);
    }
    Ok(kind)
}

/// SHA-256 of the token string.
pub fn hash(raw: &str) -> TokenHash {
    Sha256::digest(raw.as_bytes()).into()
}

/// A freshly generated token: the raw value (shown once) and what is kept.
pub struct NewToken {
    pub raw: String,
    pub hash: TokenHash,
    pub hint: String,
}

/// Generates a token of `kind` from the OS CSPRNG.
pub fn generate(kind: TokenKind) -> NewToken {
    let random = random_base62(RANDOM_LEN);
    let mut raw = String::with_capacity(TOKEN_LEN);
    raw.push_str(kind.prefix());
    raw.push_str(&random);
    raw.push_str(std::str::from_utf8(&encode_checksum(crc32fast::hash(random.as_bytes()))).expect("base62 is ASCII"));
    let hint = format!("{}{}…", kind.prefix(), &random[..4]);
    NewToken {
        hash: hash(&raw),
        raw,
        hint,
    }
}

/// A new public token id, `tkn_` + 16 base62 characters.
pub fn generate_id() -> String {
    format!("{ID_PREFIX}{}", random_base62(ID_RANDOM_LEN))
}

/// Whether `id` has the shape of a token id (used to reject junk in URLs early).
pub fn is_valid_id(id: &str) -> bool {
    id.len() == ID_PREFIX.len() + ID_RANDOM_LEN
        && id.starts_with(ID_PREFIX)
        && id.as_bytes()[ID_PREFIX.len()..].iter().all(u8::is_ascii_alphanumeric)
}

/// A short, non-secret key for per-token state such as the rate limiter:
/// the first 8 bytes of the token hash. Collisions would only merge two
/// tokens' limits (probability ~2^-64 per pair), never their identity.
pub fn limiter_key(hash: &TokenHash) -> u64 {
    u64::from_le_bytes(hash[..8].try_into().expect("8 bytes"))
}

fn encode_checksum(mut crc: u32) -> [u8; CHECKSUM_LEN] {
    // 62^6 > 2^32, so six digits always suffice; left-padded with '0'.
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    out
}

/// `len` uniformly distributed base62 characters from the OS random source.
pub fn random_base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).expect("the OS random source is unavailable");
        // Rejection sampling: 248 = 4 * 62, so bytes below it map uniformly.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == len {
                break;
            }
            out.push(BASE62[(b % 62) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_have_the_contract_shape() {
        for kind in [TokenKind::Workspace, TokenKind::Admin] {
            let t = generate(kind);
            assert_eq!(t.raw.len(), 40);
            assert!(t.raw.starts_with(kind.prefix()));
            assert!(t.raw[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(parse(&t.raw), Ok(kind));
            assert_eq!(t.hash, hash(&t.raw));
            assert_eq!(t.hint, format!("{}…", &t.raw[..8]));
        }
    }

    #[test]
    fn tokens_are_distinct() {
        let a = generate(TokenKind::Workspace);
        let b = generate(TokenKind::Workspace);
        assert_ne!(a.raw, b.raw);
        assert_ne!(generate_id(), generate_id());
    }

    #[test]
    fn malformed_tokens_are_rejected_with_the_reason() {
        let t = generate(TokenKind::Workspace).raw;
        assert_eq!(parse(&t[..39]), Err(MalformedToken::Length));
        assert_eq!(parse(&format!("{t}x")), Err(MalformedToken::Length));
        assert_eq!(parse(&format!("mwx_{}", &t[4..])), Err(MalformedToken::Prefix));
        assert_eq!(parse(&format!("{}-{}", &t[..10], &t[11..])), Err(MalformedToken::Alphabet));
        // Changing one random character breaks the checksum.
        let mut bad = t.clone().into_bytes();
        bad[5] = if bad[5] == b'a' { b'b' } else { b'a' };
        assert_eq!(parse(std::str::from_utf8(&bad).unwrap()), Err(MalformedToken::Checksum));
        // Multi-byte UTF-8 of the right byte length must not panic.
        let weird = format!("mwt_{}", "é".repeat(18));
        assert_eq!(weird.len(), 40);
        assert_eq!(parse(&weird), Err(MalformedToken::Alphabet));
    }

    #[test]
    fn checksum_is_six_base62_digits_of_crc32() {
        assert_eq!(&encode_checksum(0), b"000000");
        assert_eq!(&encode_checksum(61), b"00000z");
        assert_eq!(&encode_checksum(62), b"000010");
        // u32::MAX = 4_294_967_295 fits in six digits.
        assert_eq!(&encode_checksum(u32::MAX), b"4gfFC3");
    }

    #[test]
    fn ids_have_the_expected_shape() {
        let id = generate_id();
        assert!(is_valid_id(&id));
        assert!(!is_valid_id("tkn_short"));
        assert!(!is_valid_id("abc_0123456789abcdef"));
    }
}
