//! `[auth.oidc]`: single sign-on for members with an OpenID Connect provider
//! (docs/sso.md). Its own file because the client secret needs care (never
//! printed, not even by `{:?}`) and its checks (an issuer URL, e-mail domains,
//! the workspaces a new member joins) are no other section's.

use super::*;

/// `[auth]` as written in the file: ways members sign in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSpec {
    /// Sign-in with an OpenID Connect provider; absent = off.
    pub oidc: Option<OidcSpec>,
}

/// `[auth.oidc]` as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSpec {
    /// The provider's issuer identifier, exactly as its discovery document
    /// and ID tokens spell it (e.g. `https://accounts.google.com`).
    pub issuer: String,
    /// This gateway's client id at the provider.
    pub client_id: String,
    /// Its client secret; write `${NAME}` to read it from the environment.
    pub client_secret: String,
    /// E-mail domains whose addresses may sign in (e.g. `["example.com"]`).
    /// Required, non-empty: a provider such as Google vouches for anyone's
    /// address, so "any domain" would let the whole world knock.
    pub allowed_email_domains: Vec<String>,
    /// When set (`"member"` or `"owner"`), an unknown but allowed e-mail
    /// becomes a member with this role instead of being refused.
    #[serde(default)]
    pub auto_join_role: Option<String>,
    /// The workspaces such a new member joins (slugs); required with
    /// `auto_join_role`.
    #[serde(default)]
    pub auto_join_workspaces: Vec<String>,
}

/// A secret read from the configuration: its `Debug` never shows it, so a
/// `{:?}` of the whole config (or a panic message) cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Debug for OidcSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSpec")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .finish_non_exhaustive()
    }
}

/// Roles a member can have (docs/contract.md §11).
pub const MEMBER_ROLES: &[&str] = &["owner", "member"];

/// The validated `[auth.oidc]`.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Without a trailing slash only if written without one: compared
    /// byte for byte with the discovery document's and the ID token's `iss`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Lower-cased, without a leading `@`.
    pub allowed_email_domains: Vec<String>,
    pub auto_join_role: Option<String>,
    pub auto_join_workspaces: Vec<String>,
}

impl OidcConfig {
    /// Is `email`'s domain (after the last `@`, case-insensitive) allowed?
    pub fn domain_allowed(&self, email: &str) -> bool {
        match email.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() => {
                let domain = domain.to_ascii_lowercase();
                self.allowed_email_domains.contains(&domain)
            }
            _ => false,
        }
    }
}

impl AuthSpec {
    pub(super) fn into_config(self, path: &Path, workspaces: &[Arc<Workspace>]) -> Result<Option<OidcConfig>, ConfigError> {
        let Some(o) = self.oidc else { return Ok(None) };
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: format!("auth.oidc.{key}"),
            message,
        };
        let issuer_ok = match o.issuer.parse::<Uri>() {
            Ok(u) => {
                matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some() && u.query().is_none() && !o.issuer.contains('#')
            }
            Err(_) => false,
        };
        if !issuer_ok {
            return Err(invalid(
                "issuer",
                format!("`{}` is not an issuer URL like https://accounts.example.com", o.issuer),
            ));
        }
        // Plain http only to this machine (a test provider): anywhere else the
        // code and the client secret would cross the network in clear.
        if o.issuer.starts_with("http://") && !is_loopback_url(&o.issuer) {
            return Err(invalid("issuer", "must be https (http only for a loopback address)".into()));
        }
        if o.client_id.trim().is_empty() {
            return Err(invalid("client_id", "must not be empty".into()));
        }
        if o.client_secret.is_empty() {
            return Err(invalid(
                "client_secret",
                "must not be empty (use ${NAME} to read it from the environment)".into(),
            ));
        }
        if o.allowed_email_domains.is_empty() {
            return Err(invalid(
                "allowed_email_domains",
                "list at least one domain whose addresses may sign in, e.g. [\"example.com\"]".into(),
            ));
        }
        let mut domains = Vec::with_capacity(o.allowed_email_domains.len());
        for d in &o.allowed_email_domains {
            let d = d.trim().trim_start_matches('@').to_ascii_lowercase();
            let ok = !d.is_empty()
                && d.contains('.')
                && d.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                && !d.starts_with('.')
                && !d.ends_with('.');
            if !ok {
                return Err(invalid("allowed_email_domains", format!("`{d}` is not a domain like example.com")));
            }
            domains.push(d);
        }
        if let Some(role) = &o.auto_join_role {
            if !MEMBER_ROLES.contains(&role.as_str()) {
                return Err(invalid("auto_join_role", format!("`{role}` must be \"member\" or \"owner\"")));
            }
            if o.auto_join_workspaces.is_empty() {
                return Err(invalid(
                    "auto_join_workspaces",
                    "name the workspaces (slugs) a new member joins, e.g. [\"team\"]".into(),
                ));
            }
        } else if !o.auto_join_workspaces.is_empty() {
            return Err(invalid("auto_join_workspaces", "has no effect without auto_join_role".into()));
        }
        for slug in &o.auto_join_workspaces {
            if !workspaces.iter().any(|w| w.slug == *slug) {
                return Err(invalid("auto_join_workspaces", format!("no workspace `{slug}`")));
            }
        }
        Ok(Some(OidcConfig {
            issuer: o.issuer,
            client_id: o.client_id,
            client_secret: Secret(o.client_secret),
            allowed_email_domains: domains,
            auto_join_role: o.auto_join_role,
            auto_join_workspaces: o.auto_join_workspaces,
        }))
    }
}

fn is_loopback_url(url: &str) -> bool {
    let Ok(u) = url.parse::<Uri>() else { return false };
    match u.host() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(oidc: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[auth.oidc]\n{oidc}\n[[workspaces]]\nslug = \"a\"\n[[workspaces.servers]]\nname = \"s\"\nurl = \"http://127.0.0.1:9/mcp\"\n"
        );
        Config::from_toml(Path::new("t.toml"), &text, &|v| {
            (v == "OIDC_SECRET").then(|| "s3cret-from-env".to_string())
        })
    }

    const BASE: &str = "issuer = \"https://id.example.com\"\nclient_id = \"pc\"\nclient_secret = \"${OIDC_SECRET}\"\nallowed_email_domains = [\"Example.com\"]\n";

    #[test]
    fn a_good_section_loads_and_the_secret_is_never_printed() {
        let c = load(BASE).unwrap();
        let o = c.oidc.as_ref().unwrap();
        assert_eq!(o.client_secret.expose(), "s3cret-from-env");
        assert_eq!(o.allowed_email_domains, vec!["example.com"]);
        assert!(o.domain_allowed("Ann@EXAMPLE.com"));
        assert!(!o.domain_allowed("ann@example.com.evil.org"));
        assert!(!o.domain_allowed("ann@sub.example.com"));
        assert!(!o.domain_allowed("@example.com"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(load("").is_err());
        let none = Config::from_toml(
            Path::new("t.toml"),
            "[[workspaces]]\nslug = \"a\"\n[[workspaces.servers]]\nname = \"s\"\nurl = \"http://127.0.0.1:9/mcp\"\n",
            &|_| None,
        )
        .unwrap();
        assert!(none.oidc.is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (extra, key) in [
            (
                "auto_join_role = \"admin\"\nauto_join_workspaces = [\"a\"]",
                "auth.oidc.auto_join_role",
            ),
            ("auto_join_role = \"member\"", "auth.oidc.auto_join_workspaces"),
            (
                "auto_join_role = \"member\"\nauto_join_workspaces = [\"nope\"]",
                "auth.oidc.auto_join_workspaces",
            ),
            ("auto_join_workspaces = [\"a\"]", "auth.oidc.auto_join_workspaces"),
        ] {
            let e = load(&format!("{BASE}{extra}")).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        for (text, key) in [
            (BASE.replace("https://id.example.com", "http://id.example.com"), "auth.oidc.issuer"),
            (BASE.replace("https://id.example.com", "not a url"), "auth.oidc.issuer"),
            (BASE.replace("[\"Example.com\"]", "[]"), "auth.oidc.allowed_email_domains"),
            (
                BASE.replace("[\"Example.com\"]", "[\"exa mple\"]"),
                "auth.oidc.allowed_email_domains",
            ),
            (BASE.replace("\"pc\"", "\"\""), "auth.oidc.client_id"),
        ] {
            let e = load(&text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        assert!(load(&BASE.replace("https://id.example.com", "http://127.0.0.1:4000")).is_ok());
        let e = load(&format!("{BASE}scopes = [\"x\"]")).unwrap_err().to_string();
        assert!(e.contains("unknown field") && e.contains("scopes"), "{e}");
        let e = load(&BASE.replace("${OIDC_SECRET}", "${NOT_SET}")).unwrap_err().to_string();
        assert!(e.contains("NOT_SET"), "{e}");
    }
}
