//! `[oauth]`: the built-in OAuth 2.1 authorization server (docs/oauth.md).
//! Off by default: with it off the data listener keeps answering the
//! `/.well-known/oauth-*` probes with a quick 404 (contract §3).

use super::*;

/// `[oauth]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthSpec {
    /// Serve discovery, `/oauth/*` and add `resource_metadata` to 401s.
    pub enabled: bool,
    /// Lifetime of an access token (`mwt_…` of kind `oauth`), e.g. `"1h"`.
    pub access_token_ttl: String,
    /// Lifetime of a refresh token (`mwr_…`) from its issue, e.g. `"30d"`.
    pub refresh_token_ttl: String,
    /// Fetch Client ID Metadata Documents also from private, loopback and
    /// link-local addresses, and over plain http. For tests only: it turns
    /// off the SSRF guard (`oauth::client_metadata`).
    pub allow_private_client_metadata: bool,
}

impl Default for OAuthSpec {
    fn default() -> Self {
        OAuthSpec {
            enabled: false,
            access_token_ttl: "1h".into(),
            refresh_token_ttl: "30d".into(),
            allow_private_client_metadata: false,
        }
    }
}

/// The validated `[oauth]`.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    pub enabled: bool,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub allow_private_client_metadata: bool,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthSpec::default().into_config(Path::new("-")).expect("the defaults are valid")
    }
}

impl OAuthSpec {
    pub(super) fn into_config(self, path: &Path) -> Result<OAuthConfig, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        let duration = |key: &str, v: &str| {
            parse_duration(v).ok_or_else(|| invalid(key, format!("`{v}` is not a duration like \"1h\" (units s, m, h, d)")))
        };
        let access_token_ttl = duration("oauth.access_token_ttl", &self.access_token_ttl)?;
        let refresh_token_ttl = duration("oauth.refresh_token_ttl", &self.refresh_token_ttl)?;
        // An access token is a bearer credential that revocation reaches at
        // once, but a day is already long for one a laptop app holds.
        if access_token_ttl > Duration::from_secs(86_400) {
            return Err(invalid("oauth.access_token_ttl", "must be at most 1d".into()));
        }
        if refresh_token_ttl > Duration::from_secs(365 * 86_400) {
            return Err(invalid("oauth.refresh_token_ttl", "must be at most 365d".into()));
        }
        if refresh_token_ttl < access_token_ttl {
            return Err(invalid(
                "oauth.refresh_token_ttl",
                "must not be shorter than oauth.access_token_ttl".into(),
            ));
        }
        Ok(OAuthConfig {
            enabled: self.enabled,
            access_token_ttl,
            refresh_token_ttl,
            allow_private_client_metadata: self.allow_private_client_metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(oauth: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[oauth]\n{oauth}\n[[workspaces]]\nslug = \"a\"\n[[workspaces.servers]]\nname = \"s\"\nurl = \"http://127.0.0.1:9/mcp\"\n"
        );
        Config::from_toml(Path::new("t.toml"), &text, &|_| None)
    }

    #[test]
    fn the_oauth_section_is_checked() {
        let c = load("").unwrap();
        assert!(!c.oauth.enabled, "off by default");
        assert_eq!(c.oauth.access_token_ttl, Duration::from_secs(3600));
        let c = load("enabled = true\naccess_token_ttl = \"5s\"\nrefresh_token_ttl = \"1h\"").unwrap();
        assert!(c.oauth.enabled);
        assert_eq!(c.oauth.access_token_ttl, Duration::from_secs(5));
        for (bad, key) in [
            ("access_token_ttl = \"soon\"", "oauth.access_token_ttl"),
            ("access_token_ttl = \"2d\"", "oauth.access_token_ttl"),
            ("access_token_ttl = \"2h\"\nrefresh_token_ttl = \"1h\"", "oauth.refresh_token_ttl"),
            ("refresh_token_ttl = \"400d\"", "oauth.refresh_token_ttl"),
        ] {
            let e = load(bad).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
        assert!(load("nope = 1").is_err(), "unknown keys are errors");
    }
}
