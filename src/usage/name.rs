//! Which tool and method names may become a usage key. They are client
//! input: only short names of a small alphabet are kept as they are, and
//! anything else is folded into "other" before it reaches memory beyond the
//! request or the store.

/// Longest name kept (MCP tool names are 1-128 characters, but anything
/// this long is rare, and an aggregating workspace's exposed names are at
/// most 64).
pub const MAX_NAME: usize = 64;

/// A name of 1 to [`MAX_NAME`] bytes of `A-Z a-z 0-9 _ - . /` (the MCP
/// tool-name alphabet, plus `/` for method names such as `tools/list`).
pub fn is_valid(name: &[u8]) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_in_length_and_alphabet() {
        for ok in ["echo", "tools/list", "a__b", "x.y-z_1", &"a".repeat(64)] {
            assert!(is_valid(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "a b", "é", "a\"b", "x\n", "<script>", &"a".repeat(65), "mwt_x\u{0}"] {
            assert!(!is_valid(bad.as_bytes()), "{bad:?}");
        }
    }
}
