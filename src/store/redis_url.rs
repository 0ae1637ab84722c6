//! The three Redis deployments `store.url` names (docs/redis.md):
//!
//! - `redis://[user:password@]host:port[/db]` (also `rediss://`, `unix://`):
//!   one primary, as the `redis` crate parses it;
//! - `redis+cluster://[user:password@]host:port[,host:port…]`: a Redis
//!   Cluster, reached through any of the seed nodes listed (the client
//!   learns the others from them); no database number, Cluster has only 0;
//! - `redis+sentinel://[user:password@]host:port[,host:port…]/master[/db]`:
//!   the Sentinels to ask for the current primary of the group named
//!   `master`. The user and password are the primary's; Sentinels are
//!   asked without credentials.
//!
//! A missing port is 6379 for Redis nodes and 26379 for Sentinels. The
//! password may be percent-encoded (`%40` for `@`), as in `redis://` URLs.

/// Where the store's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One primary: the URL as the `redis` crate takes it.
    Single(String),
    /// Seed nodes of a Cluster, each as a `redis://` URL with credentials.
    Cluster(Vec<String>),
    Sentinel(SentinelTarget),
}

#[derive(Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// `(host, port)` of each Sentinel.
    pub sentinels: Vec<(String, u16)>,
    /// The monitored group's name (`sentinel monitor <name> …`).
    pub master: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Never prints the password.
impl std::fmt::Debug for SentinelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelTarget")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

pub const CLUSTER_SCHEME: &str = "redis+cluster://";
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// True for every scheme [`parse`] accepts (config validation).
pub fn is_redis_url(url: &str) -> bool {
    ["redis://", "rediss://", "unix://", CLUSTER_SCHEME, SENTINEL_SCHEME]
        .iter()
        .any(|s| url.starts_with(s))
}

/// Splits `url`; the error says what is wrong without repeating the URL
/// (which may hold a password).
pub fn parse(url: &str) -> Result<RedisTarget, String> {
    if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
        let (userinfo, rest) = split_userinfo(rest);
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !(path.is_empty() || path == "0") {
            return Err("a redis+cluster:// URL takes no database number other than /0 (Redis Cluster has only database 0)".into());
        }
        let nodes = hosts_of(hosts, 6379)?;
        let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        return Ok(RedisTarget::Cluster(
            nodes.iter().map(|(h, p)| format!("redis://{auth}{}:{p}", bracket(h))).collect(),
        ));
    }
    if let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) {
        let (userinfo, rest) = split_userinfo(rest);
        let (hosts, path) = rest
            .split_once('/')
            .ok_or("a redis+sentinel:// URL needs the master name after the hosts: redis+sentinel://host:26379,host:26380/mymaster")?;
        let (master, db) = match path.split_once('/') {
            Some((m, db)) => (m, db.parse::<i64>().map_err(|_| format!("`{db}` is not a database number"))?),
            None => (path, 0),
        };
        if master.is_empty() {
            return Err("a redis+sentinel:// URL needs the master name after the hosts".into());
        }
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = u.split_once(':').map_or((u, None), |(a, b)| (a, Some(b)));
                (
                    Some(percent_decode(user)?).filter(|s| !s.is_empty()),
                    pass.map(percent_decode).transpose()?.filter(|s| !s.is_empty()),
                )
            }
        };
        return Ok(RedisTarget::Sentinel(SentinelTarget {
            sentinels: hosts_of(hosts, 26379)?,
            master: percent_decode(master)?,
            db,
            username,
            password,
        }));
    }
    if is_redis_url(url) {
        return Ok(RedisTarget::Single(url.to_owned()));
    }
    Err("not a redis://, rediss://, unix://, redis+cluster:// or redis+sentinel:// URL".into())
}

/// `(userinfo, rest)`: userinfo ends at the last `@` (a password may hold `@`
/// only percent-encoded, but be lenient).
fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    match rest.rsplit_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, rest),
    }
}

fn hosts_of(list: &str, default_port: u16) -> Result<Vec<(String, u16)>, String> {
    let mut out = Vec::new();
    for h in list.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        // `[::1]:7000` or `host:7000` or `host`.
        let (host, port) = if let Some(v6) = h.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| format!("`{h}`: unclosed `[`"))?;
            (host, after.strip_prefix(':'))
        } else {
            match h.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (h, None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| format!("`{p}` is not a port"))?,
            None => default_port,
        };
        if host.is_empty() {
            return Err(format!("`{h}`: no host"));
        }
        out.push((host.to_owned(), port));
    }
    if out.is_empty() {
        return Err("no host listed".into());
    }
    Ok(out)
}

fn bracket(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_owned() }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("a `%` not followed by two hex digits")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "a `%` not followed by two hex digits")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoding that is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_urls_pass_through() {
        assert_eq!(parse("redis://h:1/2").unwrap(), RedisTarget::Single("redis://h:1/2".into()));
        assert_eq!(
            parse("unix:///tmp/r.sock").unwrap(),
            RedisTarget::Single("unix:///tmp/r.sock".into())
        );
        assert!(parse("http://h").is_err());
    }

    #[test]
    fn cluster_urls_list_seed_nodes_with_credentials() {
        assert_eq!(
            parse("redis+cluster://u:p%40ss@a:7000,b:7001, c ").unwrap(),
            RedisTarget::Cluster(vec![
                "redis://u:p%40ss@a:7000".into(),
                "redis://u:p%40ss@b:7001".into(),
                "redis://u:p%40ss@c:6379".into()
            ])
        );
        assert_eq!(
            parse("redis+cluster://[::1]:7000/0").unwrap(),
            RedisTarget::Cluster(vec!["redis://[::1]:7000".into()])
        );
        assert!(parse("redis+cluster://a:7000/3").unwrap_err().contains("database"));
        assert!(parse("redis+cluster://").is_err());
        assert!(parse("redis+cluster://a:notaport").is_err());
    }

    #[test]
    fn sentinel_urls_name_the_master_and_db() {
        let RedisTarget::Sentinel(t) = parse("redis+sentinel://:s%3Acret@s1:26379,s2/mymaster/3").unwrap() else {
            panic!()
        };
        assert_eq!(t.sentinels, vec![("s1".into(), 26379), ("s2".into(), 26379)]);
        assert_eq!((t.master.as_str(), t.db), ("mymaster", 3));
        assert_eq!((t.username, t.password.as_deref()), (None, Some("s:cret")));
        assert!(!format!("{:?}", parse("redis+sentinel://:pw@s/m").unwrap()).contains("pw"));
        assert!(parse("redis+sentinel://s1:26379").unwrap_err().contains("master name"));
        assert!(parse("redis+sentinel://s1:26379/").is_err());
        assert!(parse("redis+sentinel://s1/m/x").is_err());
    }
}
