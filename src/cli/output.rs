//! Printing: JSON for scripts (`--json`, stdout only), aligned text for people.

use serde_json::Value;

pub fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

/// A value as table text: strings bare, null as "-".
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
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
