//! Environment: the `PORTCULLIS__SECTION__KEY` overrides, `${NAME}` /
//! `${NAME:-default}` expansion on the parsed value (never on the text),
//! and hiding expanded secrets from error messages.

use super::*;

/// Expands `${NAME}` in every string under `value` (whose dotted key is `key`).
/// Returns each value read from the environment with its variable's name,
/// for [`hide_expanded`].
pub(super) fn expand_env_at(
    path: &Path,
    value: &mut toml::Value,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let expanded = std::cell::RefCell::new(Vec::new());
    expand_env(value, key, &|var, key| {
        let v = env(var).ok_or_else(|| ConfigError::MissingEnv {
            path: path.to_owned(),
            var: var.to_owned(),
            key: key.to_owned(),
        })?;
        expanded.borrow_mut().push((v.clone(), var.to_owned()));
        Ok(v)
    })
    .map_err(|e| match e {
        ExpandError::Missing(err) => err,
        ExpandError::Syntax { key, message } => ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        },
    })?;
    Ok(expanded.into_inner())
}

/// Prefix of the environment variables that override configuration keys:
/// `PORTCULLIS__SERVER__LISTEN` sets `server.listen`.
pub const ENV_OVERRIDE_PREFIX: &str = "PORTCULLIS__";

/// The `PORTCULLIS__…` variables of this process, sorted so that the result
/// does not depend on the environment's order.
pub fn process_overrides() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with(ENV_OVERRIDE_PREFIX)).collect();
    v.sort();
    v
}

/// Applies `PORTCULLIS__A__B__C=value` as `a.b.c = value` (env > file).
///
/// Segments are lower-cased; a numeric segment indexes an existing array
/// (`PORTCULLIS__WORKSPACES__0__SERVERS__0__URL`); a table key that exists
/// with another case is matched case-insensitively (header names). The value
/// replaces a string as a string; otherwise it is read as a TOML value when
/// it parses as one (`8080`, `true`, `["https://a.example"]`), else as a
/// string. New array elements cannot be created this way: the file defines
/// the shape, the environment changes values.
pub(super) fn apply_env_overrides(path: &Path, value: &mut toml::Value, overrides: &[(String, String)]) -> Result<(), ConfigError> {
    for (var, raw) in overrides {
        let bad = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: var.clone(),
            message,
        };
        let rest = var.strip_prefix(ENV_OVERRIDE_PREFIX).unwrap_or(var);
        let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if segments.iter().any(String::is_empty) {
            return Err(bad("is not of the form PORTCULLIS__SECTION__KEY".into()));
        }
        let mut cur = &mut *value;
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            cur = match cur {
                toml::Value::Array(items) => {
                    let idx: usize = seg
                        .parse()
                        .map_err(|_| bad(format!("`{seg}` must be an index into the array defined in the file")))?;
                    let len = items.len();
                    items
                        .get_mut(idx)
                        .ok_or_else(|| bad(format!("index {idx} is past the {len} element(s) the file defines")))?
                }
                toml::Value::Table(t) => {
                    let key = t
                        .keys()
                        .find(|k| k.eq_ignore_ascii_case(seg))
                        .cloned()
                        .unwrap_or_else(|| seg.clone());
                    if last {
                        let new = override_value(t.get(&key), raw);
                        t.insert(key, new);
                        break;
                    }
                    t.entry(key).or_insert_with(|| toml::Value::Table(Default::default()))
                }
                _ => return Err(bad(format!("`{seg}` is below a value that is not a table or an array"))),
            };
            if last {
                *cur = override_value(Some(cur), raw);
            }
        }
    }
    Ok(())
}

pub(super) fn override_value(existing: Option<&toml::Value>, raw: &str) -> toml::Value {
    if matches!(existing, Some(toml::Value::String(_))) {
        return toml::Value::String(raw.to_owned());
    }
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

/// `e` with every value that came from an environment variable shown as
/// `${NAME}` instead (longest first, so that a value containing another is
/// replaced whole). Values of one or two characters are left alone: they
/// hide nothing, and replacing them would garble the message.
pub(super) fn hide_expanded(e: ConfigError, expanded: &[(String, String)]) -> ConfigError {
    let hide = |mut message: String| {
        let mut values: Vec<&(String, String)> = expanded.iter().filter(|(v, _)| v.len() >= 3).collect();
        values.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
        for (v, name) in values {
            message = message.replace(v.as_str(), &format!("${{{name}}}"));
        }
        message
    };
    match e {
        ConfigError::Invalid { path, key, message } => ConfigError::Invalid {
            path,
            key,
            message: hide(message),
        },
        ConfigError::Parse { path, message } => ConfigError::Parse {
            path,
            message: hide(message),
        },
        other => other,
    }
}

/// A URL as an error message may show it: without userinfo (a password)
/// and without query or fragment (tokens), since the value may have come
/// from an environment variable and the message lands in logs and
/// journald. Anything that does not look like a URL is not shown at all.
pub(super) fn redact_url(v: &str) -> String {
    let Some((scheme, rest)) = v.split_once("://") else {
        return "<value not shown>".into();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_owned(),
    };
    format!("{scheme}://{host}{path}")
}

pub(super) enum ExpandError {
    Missing(ConfigError),
    Syntax { key: String, message: String },
}

/// Replaces `${NAME}` and `${NAME:-default}` in every string of `v`.
/// `$${` stays a literal `${`.
pub(super) fn expand_env(
    v: &mut toml::Value,
    key: &str,
    lookup: &dyn Fn(&str, &str) -> Result<String, ConfigError>,
) -> Result<(), ExpandError> {
    match v {
        toml::Value::String(s) if s.contains('$') => *s = expand_str(s, key, lookup)?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_env(item, &format!("{key}[{i}]"), lookup)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, item) in t.iter_mut() {
                let child = if key.is_empty() { k.clone() } else { format!("{key}.{k}") };
                expand_env(item, &child, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

pub(super) fn expand_str(s: &str, key: &str, lookup: &dyn Fn(&str, &str) -> Result<String, ConfigError>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| ExpandError::Syntax {
                key: key.to_owned(),
                message: "unterminated `${` in value".into(),
            })?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(ExpandError::Syntax {
                    key: key.to_owned(),
                    message: format!("`${{{expr}}}` is not a valid variable reference"),
                });
            }
            match lookup(name, key) {
                Ok(val) => out.push_str(&val),
                Err(e) => match default {
                    Some(d) => out.push_str(d),
                    None => return Err(ExpandError::Missing(e)),
                },
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}
