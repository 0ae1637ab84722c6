//! `application/x-www-form-urlencoded`: the bodies of the token, revoke
//! and consent endpoints and the authorization request's query. Bounded by
//! the caller (the body is at most `MAX_BODY`); a parameter given twice is
//! an error (RFC 6749 §3.1), which [`Form::get`] reports as such.

/// The decoded pairs of one form.
pub struct Form {
    pairs: Vec<(String, String)>,
}

/// A parameter was repeated or is not valid UTF-8 once decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

impl Form {
    pub fn parse(text: &[u8]) -> Result<Form, Malformed> {
        let mut pairs = Vec::new();
        for part in text.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (k, v) = match part.iter().position(|&b| b == b'=') {
                Some(i) => (&part[..i], &part[i + 1..]),
                None => (part, &b""[..]),
            };
            let (k, v) = (decode(k)?, decode(v)?);
            if pairs.iter().any(|(pk, _): &(String, String)| *pk == k) {
                return Err(Malformed);
            }
            pairs.push((k, v));
        }
        Ok(Form { pairs })
    }

    /// The value of `key`; an empty value counts as absent (RFC 6749 §3.1).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Every value whose key is `prefix` + something, with that something.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs.iter().filter_map(move |(k, _)| k.strip_prefix(prefix))
    }
}

fn decode(s: &[u8]) -> Result<String, Malformed> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or(Malformed)?;
                let hex = std::str::from_utf8(hex).map_err(|_| Malformed)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| Malformed)?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Malformed)
}

/// Percent-encodes everything but the RFC 3986 unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_refuse_repeats() {
        let f = Form::parse(b"a=1&b=x+y%2Fz&c=&d").unwrap();
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.get("b"), Some("x y/z"));
        assert_eq!(f.get("c"), None);
        assert_eq!(f.get("d"), None);
        assert!(Form::parse(b"a=1&a=2").is_err());
        assert!(Form::parse(b"a=%zz").is_err());
        assert!(Form::parse(b"a=%f").is_err());
        assert!(Form::parse(b"a=%ff").is_err(), "not UTF-8");
        assert_eq!(encode("a b/é"), "a%20b%2F%C3%A9");
        let f = Form::parse(b"server_x=on&server_y=on&other=1").unwrap();
        assert_eq!(f.with_prefix("server_").collect::<Vec<_>>(), ["x", "y"]);
    }
}
