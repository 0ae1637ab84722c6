//! `[dashboard]`: the web dashboard on the admin listener (docs/dashboard.md).
//! Its own file because its keys are durations written as text (`"30m"`),
//! which no other section uses, and its checks are its own.

use super::*;

/// `[dashboard]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSpec {
    /// Serve the dashboard at `/` on the admin listener.
    pub enabled: bool,
    /// A session unused for this long ends (e.g. `"30m"`; units s, m, h, d).
    pub idle_timeout: String,
    /// A session ends this long after sign-in, used or not (e.g. `"12h"`).
    pub absolute_timeout: String,
    /// `Secure` on the session cookie: `"auto"` (when `server.public_url`
    /// is https, or the request came through a proxy that says
    /// `X-Forwarded-Proto: https`), `"always"` or `"never"`.
    pub secure_cookie: String,
}

impl Default for DashboardSpec {
    fn default() -> Self {
        DashboardSpec {
            enabled: true,
            idle_timeout: "30m".into(),
            absolute_timeout: "12h".into(),
            secure_cookie: "auto".into(),
        }
    }
}

/// When the session cookie carries `Secure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureCookie {
    Auto,
    Always,
    Never,
}

/// The validated `[dashboard]`.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    pub enabled: bool,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub secure_cookie: SecureCookie,
}

impl DashboardSpec {
    pub(super) fn into_config(self, path: &Path) -> Result<DashboardConfig, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        let idle_timeout = parse_duration(&self.idle_timeout).ok_or_else(|| {
            invalid(
                "dashboard.idle_timeout",
                format!("`{}` is not a duration like \"30m\" (units s, m, h, d)", self.idle_timeout),
            )
        })?;
        let absolute_timeout = parse_duration(&self.absolute_timeout).ok_or_else(|| {
            invalid(
                "dashboard.absolute_timeout",
                format!("`{}` is not a duration like \"12h\" (units s, m, h, d)", self.absolute_timeout),
            )
        })?;
        if idle_timeout > absolute_timeout {
            return Err(invalid(
                "dashboard.idle_timeout",
                "must not be longer than dashboard.absolute_timeout".into(),
            ));
        }
        // A session longer than a week is a standing credential in a browser.
        if absolute_timeout > Duration::from_secs(7 * 86_400) {
            return Err(invalid("dashboard.absolute_timeout", "must be at most 7d".into()));
        }
        let secure_cookie = match self.secure_cookie.as_str() {
            "auto" => SecureCookie::Auto,
            "always" => SecureCookie::Always,
            "never" => SecureCookie::Never,
            other => {
                return Err(invalid(
                    "dashboard.secure_cookie",
                    format!("`{other}` must be \"auto\", \"always\" or \"never\""),
                ));
            }
        };
        Ok(DashboardConfig {
            enabled: self.enabled,
            idle_timeout,
            absolute_timeout,
            secure_cookie,
        })
    }
}

/// `"90s"`, `"30m"`, `"12h"`, `"7d"`: a positive whole number and one unit.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok().filter(|&n| n > 0)?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(secs).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_one_unit() {
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        for bad in ["", "0m", "m", "30", "30 m", "1h30m", "-1h", "1w"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    fn load(dashboard: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[dashboard]\n{dashboard}\n[[workspaces]]\nslug = \"a\"\n[[workspaces.servers]]\nname = \"s\"\nurl = \"http://127.0.0.1:9/mcp\"\n"
        );
        Config::from_toml(Path::new("t.toml"), &text, &|_| None)
    }

    #[test]
    fn the_dashboard_section_is_checked() {
        let c = load("idle_timeout = \"5m\"\nabsolute_timeout = \"1h\"").unwrap();
        assert_eq!(c.dashboard.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.dashboard.secure_cookie, SecureCookie::Auto);
        assert!(c.dashboard.enabled);
        for (bad, key) in [
            ("idle_timeout = \"30\"", "dashboard.idle_timeout"),
            ("absolute_timeout = \"forever\"", "dashboard.absolute_timeout"),
            ("idle_timeout = \"2h\"\nabsolute_timeout = \"1h\"", "dashboard.idle_timeout"),
            ("absolute_timeout = \"8d\"", "dashboard.absolute_timeout"),
            ("secure_cookie = \"yes\"", "dashboard.secure_cookie"),
        ] {
            let e = load(bad).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
        let e = load("idle = \"5m\"").unwrap_err().to_string();
        assert!(e.contains("unknown field") && e.contains("idle"), "{e}");
    }
}
