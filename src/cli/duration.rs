//! `--expires-in 90d|12h|30m|45s|2w|3600` and `--expires-at RFC3339`, as clap
//! value parsers, so a bad value is reported by clap with the flag's name
//! ("invalid value '9x' for '--expires-in <DURATION>': …").

/// Seconds from `90d`, `12h`, `30m`, `45s`, `2w` or a bare number of seconds.
/// `0` means "never expires", as in the admin API.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "`{s}` is not a duration; use e.g. 90d, 12h, 30m, 45s, 2w or seconds (3600)"
        ));
    }
    let n: u64 = digits.parse().map_err(|_| format!("`{s}` is too large"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => return Err(format!("unknown unit `{other}`; use s, m, h, d or w (e.g. 90d, 12h, 3600)")),
    };
    n.checked_mul(mult)
        .filter(|v| *v <= i64::MAX as u64 / 2)
        .ok_or_else(|| format!("`{s}` is too far in the future"))
}

/// A UTC instant, RFC 3339 (`2027-01-01T00:00:00Z`), as Unix seconds.
pub fn parse_instant(s: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| format!("`{s}` is not an RFC 3339 time like 2027-01-01T00:00:00Z"))
}

/// `expires_in` seconds from either flag; `--expires-at` must be in the future.
pub fn expires_in(expires_in: Option<u64>, expires_at: Option<i64>, now: i64) -> Result<Option<u64>, super::CliError> {
    match (expires_in, expires_at) {
        (Some(s), _) => Ok(Some(s)),
        (None, Some(at)) if at > now => Ok(Some((at - now) as u64)),
        (None, Some(_)) => Err(super::CliError::usage("--expires-at must be in the future")),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3600"), Ok(3600));
        assert_eq!(parse_duration("45s"), Ok(45));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("90d"), Ok(90 * 86_400));
        assert_eq!(parse_duration("2w"), Ok(14 * 86_400));
        assert_eq!(parse_duration("0"), Ok(0));
        for bad in ["", "d", "9x", "1.5h", "-3", "99999999999999999999", "999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instants() {
        assert_eq!(parse_instant("2027-01-01T00:00:00Z"), Ok(1_798_761_600));
        assert_eq!(parse_instant("2027-01-01T01:00:00+01:00"), Ok(1_798_761_600));
        assert!(parse_instant("2027-01-01").is_err());
        assert_eq!(expires_in(None, Some(100), 40).unwrap(), Some(60));
        assert!(expires_in(None, Some(10), 40).is_err());
    }
}
