//! Printing: JSON for scripts (`--json`, stdout only), aligned text for people.

use serde_json::Value;

pub fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

/// A value as table text: strings bare, null as "-". Control and format
/// characters are shown escaped (`\u{1b}`), never written raw: a stored
/// string that reached a terminal raw could move the cursor, recolour or
/// forge lines of output. (The admin API refuses them; records written
/// before it did, or by other means, may still hold them.)
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => escape(s),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// `s` with every character [`is_forbidden_char`] refuses as `\u{..}`.
///
/// [`is_forbidden_char`]: crate::token::is_forbidden_char
pub fn escape(s: &str) -> String {
    if !s.chars().any(crate::token::is_forbidden_char) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if crate::token::is_forbidden_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints rows under headers with columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// Key/value lines for one token record.
pub fn record(v: &Value) {
    for key in [
        "id",
        "name",
        "workspace",
        "kind",
        "status",
        "hint",
        "member_id",
        "email",
        "created_at",
        "created_by",
        "expires_at",
        "revoked_at",
        "last_used_at",
        "allowed_servers",
        "requests_per_minute",
    ] {
        if let Some(val) = v.get(key) {
            println!("{:<20} {}", format!("{key}:"), cell(val));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_format_characters_are_escaped_in_cells() {
        let v = Value::String("a\u{1b}[2Jb\nforged\u{7}\u{202e}x\u{200b}\u{feff}\u{85}".into());
        assert_eq!(cell(&v), "a\\u{1b}[2Jb\\u{a}forged\\u{7}\\u{202e}x\\u{200b}\\u{feff}\\u{85}");
        assert_eq!(cell(&Value::String("plain é ü".into())), "plain é ü");
        assert_eq!(cell(&serde_json::json!(["ok", "n\u{0}"])), "ok,n\\u{0}");
    }
}
