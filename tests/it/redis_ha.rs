//! High-availability Redis deployments (docs/redis.md): a real Redis
//! Cluster (3 primaries, 3 replicas) and a real Sentinel group (1 primary,
//! 2 replicas, 3 Sentinels), every process a private `redis-server` on free
//! loopback ports, with gateway instances in this process (as in
//! `cluster.rs`).
//!
//! The quick tests run in the suite. The failover tests kill a primary under
//! light load and are `#[ignore]`d: `scripts/test-redis-ha.sh` runs them
//! (and prints how long each failover took). `PORTCULLIS_REDIS_SERVER` /
//! `PORTCULLIS_REDIS_CLI` pick other binaries (e.g. Valkey's).

use std::path::Path;
use std::time::{Duration, Instant};

use http::Method;
use portcullis::app::{self, Running};

use portcullis::config::Config;
use portcullis::token::{TokenKind, now_unix};

use crate::harness::*;

fn server_bin() -> String {
    std::env::var("PORTCULLIS_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn cli_bin() -> String {
    std::env::var("PORTCULLIS_REDIS_CLI").unwrap_or_else(|_| "redis-cli".into())
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

/// One `redis-server` process; killed when dropped.
struct Node {
    port: u16,
    child: Option<std::process::Child>,
    dir: std::path::PathBuf,
    args: Vec<String>,
}

impl Node {
    fn spawn(dir: &Path, port: u16, args: &[&str]) -> Node {
        let mut n = Node {
            port,
            child: None,
            dir: dir.to_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        n.start();
        n
    }

    fn start(&mut self) {
        let child = std::process::Command::new(server_bin())
            .args(&self.args)
            .current_dir(&self.dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test-deps.sh installs it)");
        self.child = Some(child);
    }

    /// Stops (`STOP`) or resumes (`CONT`) the process: a frozen node, as
    /// in a long GC-like pause or a network partition.
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success();
        assert!(ok, "kill {sig} {pid}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn conn(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url()).ok()?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        client.get_multiplexed_async_connection_with_config(&config).await.ok()
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> Option<T> {
        cmd.query_async(&mut self.conn().await?).await.ok()
    }

    /// Until this primary has a replica that follows it (`WAIT 1` can succeed).
    async fn wait_replica_online(&self, secs: u64, what: &str) {
        eventually(secs, what, || async {
            self.query::<String>(redis::cmd("INFO").arg("replication"))
                .await
                .is_some_and(|t| t.contains("state=online"))
        })
        .await;
    }

    async fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.query::<String>(&mut redis::cmd("PING")).await.is_none() {
            assert!(Instant::now() < deadline, "redis-server on {} did not start", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no final save, no goodbye to the others.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for `f` to hold, polling; panics with `what` after `secs`.
async fn eventually<F: std::future::Future<Output = bool>>(secs: u64, what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 3 primaries and 3 replicas, AOF on, failure detection after 1 s.
struct RedisCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for i in 0..6 {
            let port = free_port();
            let d = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let p = port.to_string();
            nodes.push(Node::spawn(
                &d,
                port,
                &[
                    "--port",
                    &p,
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--appendonly",
                    "yes",
                    "--save",
                    "",
                    // Replicas sync at once (the default waits 5 s).
                    "--repl-diskless-sync-delay",
                    "0",
                ],
            ));
        }
        for n in &nodes {
            n.wait_up().await;
        }
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = std::process::Command::new(cli_bin())
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let c = RedisCluster { nodes, _dir: dir };
        for i in 0..6 {
            let n = &c.nodes[i];
            eventually(20, "cluster_state:ok on every node", || async {
                n.query::<String>(redis::cmd("CLUSTER").arg("INFO"))
                    .await
                    .is_some_and(|t| t.contains("cluster_state:ok"))
            })
            .await;
            // Every primary's replica in sync, so that WAIT 1 can succeed.
            eventually(20, "replicas online", || async {
                n.query::<String>(redis::cmd("INFO").arg("replication")).await.is_some_and(|t| {
                    t.contains("role:slave") && t.contains("master_link_status:up")
                        || t.contains("role:master") && t.contains("state=online")
                })
            })
            .await;
        }
        c
    }

    fn url(&self) -> String {
        // Two seeds are enough: the client learns the rest from them.
        format!("redis+cluster://127.0.0.1:{},127.0.0.1:{}", self.nodes[0].port, self.nodes[1].port)
    }

    /// The index of the live node serving `key` as primary.
    async fn primary_of(&self, key: &str) -> usize {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.child.is_none() {
                continue;
            }
            // Only the slot's primary answers GET (the others redirect).
            let own = n.query::<Option<String>>(redis::cmd("GET").arg(key)).await.is_some();
            if own {
                return i;
            }
        }
        panic!("no live primary serves {key}");
    }
}

/// One primary, two replicas, three Sentinels (quorum 2), failure detection
/// after 1 s.
struct SentinelGroup {
    data: Vec<Node>,
    sentinels: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl SentinelGroup {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut data = Vec::new();
        let primary = free_port();
        for i in 0..3 {
            let port = if i == 0 { primary } else { free_port() };
            let d = dir.path().join(format!("d{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let p = port.to_string();
            let mut args = vec![
                "--port",
                &p,
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--save",
                "",
                "--repl-diskless-sync-delay",
                "0",
            ];
            let of = primary.to_string();
            if i > 0 {
                args.extend(["--replicaof", "127.0.0.1", &of]);
            }
            data.push(Node::spawn(&d, port, &args));
        }
        for n in &data {
            n.wait_up().await;
        }
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let d = dir.path().join(format!("s{i}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("sentinel.conf"),
                format!(
                    "port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 3000\n\
                     sentinel parallel-syncs mymaster 2\n"
                ),
            )
            .unwrap();
            sentinels.push(Node::spawn(&d, port, &["sentinel.conf", "--sentinel"]));
        }
        for s in &sentinels {
            s.wait_up().await;
        }
        let g = SentinelGroup {
            data,
            sentinels,
            _dir: dir,
        };
        // Ready for a failover: every Sentinel knows both replicas and the
        // two other Sentinels, and the replicas are in sync.
        for s in &g.sentinels {
            eventually(30, "Sentinels discover the replicas and each other", || async {
                let r = s
                    .query::<Vec<redis::Value>>(redis::cmd("SENTINEL").arg("REPLICAS").arg("mymaster"))
                    .await;
                let o = s
                    .query::<Vec<redis::Value>>(redis::cmd("SENTINEL").arg("SENTINELS").arg("mymaster"))
                    .await;
                r.is_some_and(|r| r.len() == 2) && o.is_some_and(|o| o.len() == 2)
            })
            .await;
        }
        for n in &g.data[1..] {
            eventually(20, "replicas in sync", || async {
                n.query::<String>(redis::cmd("INFO").arg("replication"))
                    .await
                    .is_some_and(|t| t.contains("master_link_status:up"))
            })
            .await;
        }
        g
    }

    fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        format!("redis+sentinel://{}/mymaster", hosts.join(","))
    }

    /// The primary the Sentinels name.
    async fn primary_port(&self) -> Option<u16> {
        for s in &self.sentinels {
            if s.child.is_none() {
                continue;
            }
            if let Some((_, port)) = s
                .query::<(String, u16)>(redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg("mymaster"))
                .await
            {
                return Some(port);
            }
        }
        None
    }

    fn node(&mut self, port: u16) -> &mut Node {
        self.data.iter_mut().find(|n| n.port == port).expect("a data node")
    }
}

/// Gateway instances sharing one Redis deployment.
struct Gateways {
    instances: Vec<Running>,
    admin_token: String,
    text: String,
}

fn config(url: &str, upstream: &str, wait_replicas: u32) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_ms = 500\nrevocation_poll_ms = 250\n\
         [store]\nbackend = \"redis\"\nurl = \"{url}\"\nrevocation_grace_ms = 0\ntimeout_ms = 500\nwait_replicas = {wait_replicas}\n\
         [limits]\nrequests_per_minute = 100000\n\
         [[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"main\"\nurl = \"{upstream}\"\nheaders = {{ Authorization = \"Bearer {DEMO_KEY}\" }}\n"
    )
}

async fn start_instance(text: &str) -> Running {
    let config = Config::from_toml(Path::new("ha.toml"), text, &|_| None).expect("valid config");
    app::start(config).await.expect("instance starts")
}

impl Gateways {
    async fn start(n: usize, text: String) -> Self {
        let mut instances = Vec::new();
        for _ in 0..n {
            instances.push(start_instance(&text).await);
        }
        let state = &instances[0].state;
        let admin_token = crate::harness::bootstrap_admin(state, "admin").await;
        let g = Gateways {
            instances,
            admin_token,
            text,
        };
        for r in &g.instances {
            eventually(10, "instance subscribed", || async { r.state.verifier.is_trusted() }).await;
        }
        g
    }

    async fn add_instance(&mut self) -> usize {
        let r = start_instance(&self.text).await;
        eventually(10, "new instance subscribed", || async { r.state.verifier.is_trusted() }).await;
        self.instances.push(r);
        self.instances.len() - 1
    }

    async fn post(&self, i: usize, token: &str) -> u16 {
        let url = format!("http://{}/ws/demo", self.instances[i].data_addr);
        let auth = format!("Bearer {token}");
        let r = send(
            Method::POST,
            &url,
            &[("authorization", &auth), ("content-type", "application/json")],
            echo_call(1, "x"),
        )
        .await;
        r.status.as_u16()
    }

    async fn admin(&self, i: usize, method: Method, path: &str, body: &str) -> Resp {
        let url = format!("http://{}{path}", self.instances[i].admin_addr);
        let auth = format!("Bearer {}", self.admin_token);
        send(method, &url, &[("authorization", &auth)], body.to_string()).await
    }

    async fn create_token(&self, i: usize) -> (String, String) {
        let r = self.admin(i, Method::POST, "/v1/workspaces/demo/tokens", r#"{"name":"t"}"#).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        (v["token"].as_str().unwrap().into(), v["info"]["id"].as_str().unwrap().into())
    }

    async fn revoke(&self, i: usize, id: &str) -> u16 {
        let r = self.admin(i, Method::DELETE, &format!("/v1/workspaces/demo/tokens/{id}"), "").await;
        r.status.as_u16()
    }

    async fn listed_ids(&self, i: usize) -> Vec<String> {
        let r = self.admin(i, Method::GET, "/v1/workspaces/demo/tokens", "").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        let items = v["items"].as_array().or_else(|| v["tokens"].as_array()).expect("a token list");
        items.iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
    }
}

impl Drop for Gateways {
    fn drop(&mut self) {
        for r in &self.instances {
            r.shutdown();
        }
    }
}

/// Create on one instance, use on the other, list, revoke on one and be
/// refused by the other as soon as the revoke has returned.
/// After a failover: an instance that never saw the revocations refuses both
/// revoked tokens (`late` was revoked with `wait_replicas` acknowledged just
/// before the failure), accepts the valid one, and everything works again.
async fn nothing_lost(g: &mut Gateways, late: &str, revoked: &str, valid: &str) {
    let fresh = g.add_instance().await;
    assert_eq!(g.post(fresh, late).await, 401, "an acknowledged revocation survived the failover");
    assert_eq!(g.post(fresh, revoked).await, 401);
    assert_eq!(g.post(fresh, valid).await, 200);
    lifecycle_across_instances(g).await;
}

async fn lifecycle_across_instances(g: &Gateways) {
    let (t, id) = g.create_token(0).await;
    let (t2, id2) = g.create_token(1).await;
    assert_eq!(g.post(1, &t).await, 200, "a token created on instance 0 works on instance 1");
    assert_eq!(g.post(0, &t2).await, 200);
    assert_eq!(g.post(0, "pcs_not_a_token").await, 401);
    let listed = g.listed_ids(1).await;
    assert!(listed.contains(&id) && listed.contains(&id2), "{listed:?}");
    assert_eq!(listed.iter().position(|x| *x == id2), Some(0), "newest first: {listed:?}");
    assert_eq!(g.revoke(0, &id).await, 200);
    assert_eq!(g.post(1, &t).await, 401, "revoked on 0, refused by 1 at once");
    assert_eq!(g.post(0, &t).await, 401);
    assert_eq!(g.post(1, &t2).await, 200, "the other token still works");
    assert_eq!(g.revoke(1, &id).await, 200, "revoking twice is fine");
}

#[tokio::test]
async fn cluster_create_verify_list_and_revoke_across_instances() {
    let cluster = RedisCluster::start().await;
    let up = DemoUpstream::start().await;
    let g = Gateways::start(2, config(&cluster.url(), &up.url, 1)).await;
    lifecycle_across_instances(&g).await;
    // The token store lives under one hash tag, in one slot.
    let owner = cluster.primary_of("portcullis:{t}:tokens:seq").await;
    let seq: Option<u64> = cluster.nodes[owner].query(redis::cmd("GET").arg("portcullis:{t}:tokens:seq")).await;
    assert!(seq.unwrap_or(0) >= 3, "tokens counted under portcullis:{{t}}: {seq:?}");
    // A fresh instance loads its filter (SCAN on the token slot's node) and
    // knows every token.
    let mut g = g;
    let i = g.add_instance().await;
    let (t, _) = g.create_token(0).await;
    assert_eq!(g.post(i, &t).await, 200);
}

#[tokio::test]
async fn sentinel_create_verify_list_and_revoke_across_instances() {
    let group = SentinelGroup::start().await;
    let up = DemoUpstream::start().await;
    let g = Gateways::start(2, config(&group.url(), &up.url, 1)).await;
    lifecycle_across_instances(&g).await;
    // Plain key names, as on a single primary.
    let seq: Option<u64> = group.data[0].query(redis::cmd("GET").arg("portcullis:tokens:seq")).await;
    assert!(seq.unwrap_or(0) >= 3, "{seq:?}");
}

/// What one probe round saw.
#[derive(Default)]
struct Observed {
    /// First and last moment a valid token was refused with 503.
    outage: Option<(Instant, Instant)>,
    /// Any other status than 200/503 for the valid token, or than 401/503
    /// for the revoked one, with the instance.
    wrong: Vec<String>,
}

/// Probes every instance with a valid and a revoked token every 20 ms
/// until the valid token has worked on every instance for 2 s in a row
/// (or `limit` passes), recording the 503 window.
async fn probe_through_failover(g: &Gateways, valid: &str, revoked: &str, limit: Duration) -> Observed {
    let start = Instant::now();
    let mut seen = Observed::default();
    let mut healthy_since: Option<Instant> = None;
    while start.elapsed() < limit {
        let mut all_ok = true;
        for i in 0..g.instances.len() {
            let v = g.post(i, valid).await;
            let r = g.post(i, revoked).await;
            let now = Instant::now();
            if v == 503 {
                all_ok = false;
                seen.outage = Some(seen.outage.map_or((now, now), |(a, _)| (a, now)));
            } else if v != 200 {
                all_ok = false;
                seen.wrong.push(format!("instance {i}: valid token got {v}"));
            }
            if r != 401 && r != 503 {
                seen.wrong.push(format!("instance {i}: REVOKED token got {r}"));
            }
        }
        if all_ok {
            let since = *healthy_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(2) && seen.outage.is_some() {
                return seen;
            }
        } else {
            healthy_since = None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen.wrong.push(format!("service did not return within {limit:?}"));
    seen
}

fn report(what: &str, seen: &Observed, killed_at: Instant) {
    match seen.outage {
        Some((a, b)) => println!(
            "{what}: 503 answers from {} ms to {} ms after the failure (between them {} ms)",
            a.duration_since(killed_at).as_millis(),
            b.duration_since(killed_at).as_millis(),
            b.duration_since(a).as_millis()
        ),
        None => println!("{what}: no request failed"),
    }
}

#[tokio::test]
#[ignore = "slow: kills a primary; run by scripts/test-redis-ha.sh"]
async fn cluster_primary_failover_fails_closed_and_recovers() {
    let mut cluster = RedisCluster::start().await;
    let up = DemoUpstream::start().await;
    let mut g = Gateways::start(2, config(&cluster.url(), &up.url, 1)).await;
    let (valid, _) = g.create_token(0).await;
    let (revoked, rid) = g.create_token(0).await;
    let (late, late_id) = g.create_token(1).await;
    assert_eq!(g.post(1, &valid).await, 200);
    assert_eq!(g.post(1, &late).await, 200);
    assert_eq!(g.revoke(0, &rid).await, 200);
    // Acknowledged (WAIT 1) just before the primary dies: must survive.
    assert_eq!(g.revoke(1, &late_id).await, 200);
    let victim = cluster.primary_of("portcullis:{t}:tokens:seq").await;
    let killed_at = Instant::now();
    cluster.nodes[victim].kill();
    let seen = probe_through_failover(&g, &valid, &revoked, Duration::from_secs(40)).await;
    report("cluster failover of the token slot's primary", &seen, killed_at);
    assert!(seen.wrong.is_empty(), "{:?}", seen.wrong);
    assert!(seen.outage.is_some(), "killing the primary was noticed (503s)");
    // A replica took over the slot.
    let now_owner = cluster.primary_of("portcullis:{t}:tokens:seq").await;
    assert_ne!(now_owner, victim);
    // The old primary comes back as the new one's replica, so that WAIT 1
    // (store.wait_replicas) can succeed again; until then revokes fail.
    let (t, id) = g.create_token(0).await;
    assert_eq!(
        g.revoke(0, &id).await,
        503,
        "no replica to WAIT for: the revoke is not acknowledged"
    );
    assert_eq!(g.post(1, &t).await, 401, "but it is applied");
    cluster.nodes[victim].start();
    let n = &cluster.nodes[now_owner];
    n.wait_replica_online(20, "the old primary rejoins as a replica").await;
    nothing_lost(&mut g, &late, &revoked, &valid).await;
}

#[tokio::test]
#[ignore = "slow: kills the primary; run by scripts/test-redis-ha.sh"]
async fn sentinel_primary_failover_fails_closed_and_recovers() {
    let mut group = SentinelGroup::start().await;
    let up = DemoUpstream::start().await;
    let mut g = Gateways::start(2, config(&group.url(), &up.url, 1)).await;
    let (valid, _) = g.create_token(0).await;
    let (revoked, rid) = g.create_token(0).await;
    let (late, late_id) = g.create_token(1).await;
    assert_eq!(g.post(1, &valid).await, 200);
    assert_eq!(g.post(1, &late).await, 200);
    assert_eq!(g.revoke(0, &rid).await, 200);
    assert_eq!(g.revoke(1, &late_id).await, 200);
    let old = group.primary_port().await.unwrap();
    let killed_at = Instant::now();
    group.node(old).kill();
    let seen = probe_through_failover(&g, &valid, &revoked, Duration::from_secs(40)).await;
    report("sentinel failover (primary killed)", &seen, killed_at);
    assert!(seen.wrong.is_empty(), "{:?}", seen.wrong);
    assert!(seen.outage.is_some(), "killing the primary was noticed (503s)");
    let new = group.primary_port().await.unwrap();
    assert_ne!(new, old, "Sentinel promoted a replica");
    // WAIT 1 needs the other replica to follow the new primary first (until
    // then revokes answer 503, applied but not acknowledged).
    let n = group.node(new);
    n.wait_replica_online(30, "the remaining replica follows the new primary").await;
    nothing_lost(&mut g, &late, &revoked, &valid).await;
}

#[tokio::test]
#[ignore = "slow: freezes the primary; run by scripts/test-redis-ha.sh"]
async fn sentinel_frozen_primary_is_demoted_and_never_read_again() {
    // SIGSTOP: the old primary comes back after the failover, still
    // believing it is a primary until Sentinel demotes it; a revocation made
    // on the new primary meanwhile must hold everywhere.
    let mut group = SentinelGroup::start().await;
    let up = DemoUpstream::start().await;
    let g = Gateways::start(2, config(&group.url(), &up.url, 1)).await;
    let (valid, _) = g.create_token(0).await;
    let (revoked, rid) = g.create_token(0).await;
    let (after, after_id) = g.create_token(0).await;
    assert_eq!(g.revoke(0, &rid).await, 200);
    assert_eq!(g.post(1, &after).await, 200);
    let old = group.primary_port().await.unwrap();
    let frozen_at = Instant::now();
    group.node(old).signal("-STOP");
    let seen = probe_through_failover(&g, &valid, &revoked, Duration::from_secs(40)).await;
    report("sentinel failover (primary frozen)", &seen, frozen_at);
    assert!(seen.wrong.is_empty(), "{:?}", seen.wrong);
    let new = group.primary_port().await.unwrap();
    assert_ne!(new, old, "Sentinel promoted a replica");
    let n = group.node(new);
    n.wait_replica_online(30, "the remaining replica follows the new primary").await;
    // Revoked on the new primary, then the old one wakes up.
    assert_eq!(g.revoke(1, &after_id).await, 200);
    group.node(old).signal("-CONT");
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        for i in 0..2 {
            let s = g.post(i, &after).await;
            assert!(
                s == 401 || s == 503,
                "instance {i} accepted a token revoked on the new primary: {s}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old_role: Option<Vec<redis::Value>> = group.node(old).query(&mut redis::cmd("ROLE")).await;
    let role = old_role.map(|r| redis::from_redis_value::<String>(r[0].clone()).unwrap());
    // Typically still "master" here: Sentinel has not yet demoted it, and
    // the gateway still does not use it (the loop above).
    println!("old primary's role 8 s after waking up: {role:?}");
}

/// Every Redis-backed store on a Cluster: each script and MULTI touches one
/// slot (a key layout mistake fails here with CROSSSLOT).
#[tokio::test]
async fn every_store_works_on_a_cluster() {
    use futures_util::StreamExt;
    use portcullis::audit::{AuditEvent, AuditQuery, EventType};
    use portcullis::store::grants::{Consumed, Grant, Secret, SecretKind};
    use portcullis::store::members::{LinkRecord, LinkState, MemberRecord, MemberSessionRecord, Role};
    use portcullis::store::redis::RedisStore;
    use portcullis::store::sessions::SessionRecord;
    use portcullis::store::usage::{Bucket, Counts, GroupBy, Increment, Retention, UsageKey, UsageQuery};
    use portcullis::store::{ListFilter, Pushed, TokenStore};
    use portcullis::token::{self, TokenRecord};

    let cluster = RedisCluster::start().await;
    let store = RedisStore::connect(&cluster.url(), Duration::from_secs(2)).await.unwrap();
    let s: &dyn TokenStore = &store;

    // Tokens.
    let mut made = Vec::new();
    for (i, ws) in ["w1", "w2", "w1"].into_iter().enumerate() {
        let t = token::generate(TokenKind::Workspace);
        let r = TokenRecord {
            id: token::generate_id(),
            name: format!("n{i}"),
            workspace: Some(ws.into()),
            kind: TokenKind::Workspace,
            hint: t.hint,
            member_id: None,
            email: None,
            created_at: 1000 + i as i64,
            created_by: "test".into(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            allowed_servers: None,
            requests_per_minute: None,
        };
        s.insert(&r, &t.hash).await.unwrap();
        made.push((r, t.hash));
    }
    assert!(s.insert(&made[0].0, &made[0].1).await.is_err(), "a duplicate is a conflict");
    assert_eq!(s.find_by_hash(&made[1].1).await.unwrap().unwrap().id, made[1].0.id);
    assert!(s.find_by_hash(&[7; 32]).await.unwrap().is_none());
    let filter = ListFilter {
        kind: TokenKind::Workspace,
        workspace: Some("w1"),
    };
    let p1 = s.list(filter, 1, None).await.unwrap();
    assert_eq!(p1.tokens[0].id, made[2].0.id, "newest first");
    let p2 = s.list(filter, 1, p1.next_cursor.as_deref()).await.unwrap();
    assert_eq!(p2.tokens[0].id, made[0].0.id);
    assert!(p2.next_cursor.is_none());
    let all = s
        .list(
            ListFilter {
                kind: TokenKind::Workspace,
                workspace: None,
            },
            10,
            None,
        )
        .await
        .unwrap();
    assert_eq!(all.tokens.len(), 3);
    s.record_last_used(&[(made[0].0.id.clone(), 5000), (made[1].0.id.clone(), 6000)])
        .await
        .unwrap();
    assert_eq!(s.get(&made[1].0.id).await.unwrap().unwrap().last_used_at, Some(6000));
    let mut hashes = s.all_hashes().await.unwrap().unwrap();
    hashes.sort();
    let mut want: Vec<_> = made.iter().map(|(_, h)| *h).collect();
    want.sort();
    assert_eq!(hashes, want);
    assert!(s.shared_key().await.unwrap().is_some());
    assert_eq!(s.shared_key().await.unwrap(), s.shared_key().await.unwrap());
    s.heartbeat().await.unwrap();
    s.ping().await.unwrap();
    let mut pushed = s.subscribe().await.unwrap().unwrap();
    let before = s.revocation_seq().await.unwrap();
    let rev = s.revoke(&made[0].0.id, 9000).await.unwrap().unwrap();
    assert!(
        rev.newly_revoked && rev.receivers >= 1,
        "the subscriber on the token slot's primary is counted"
    );
    assert_eq!(s.revocation_seq().await.unwrap(), before + 1);
    let log = s.revocations_since(before, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].hash, made[0].1);
    let msg = tokio::time::timeout(Duration::from_secs(5), pushed.next()).await.unwrap().unwrap();
    assert!(matches!(msg, Pushed::Revoked(r) if r.hash == made[0].1));
    // Every receiver's acknowledgement counts the revocation's counter down
    // (in the token slot); the last one is announced on the channel.
    for _ in 0..rev.receivers {
        s.acknowledge(rev.seq).await.unwrap();
    }
    let msg = tokio::time::timeout(Duration::from_secs(5), pushed.next()).await.unwrap().unwrap();
    assert_eq!(msg, Pushed::Applied { seq: rev.seq }, "the last acknowledgement is announced");
    assert!(!s.revoke(&made[0].0.id, 9001).await.unwrap().unwrap().newly_revoked);

    // Grants and one-time secrets.
    let grants = s.grants().unwrap();
    let g = Grant {
        id: "grt_a".into(),
        client_id: "c".into(),
        client_name: "C".into(),
        member_id: "mem_1".into(),
        email: None,
        workspace: "w1".into(),
        servers: None,
        created_at: 10,
        last_used_at: None,
        revoked_at: None,
    };
    grants.create_grant(&g).await.unwrap();
    assert_eq!(grants.list_grants(Some("mem_1"), None).await.unwrap().len(), 1);
    assert_eq!(grants.list_grants(None, Some("w1")).await.unwrap().len(), 1);
    grants.add_grant_token("grt_a", "tok_1").await.unwrap();
    assert_eq!(grants.grant_tokens("grt_a").await.unwrap(), ["tok_1"]);
    grants.touch_grant("grt_a", 20).await.unwrap();
    assert_eq!(grants.revoke_grant("grt_a", 30).await.unwrap().unwrap().revoked_at, Some(30));
    let secret = Secret {
        kind: SecretKind::Code,
        grant_id: "grt_a".into(),
        payload: "{}".into(),
        expires_at: now_unix() + 60,
    };
    grants.put_secret(&[1; 32], &secret).await.unwrap();
    assert!(matches!(
        grants.consume_secret(&[1; 32], now_unix()).await.unwrap(),
        Consumed::Fresh(_)
    ));
    assert!(matches!(
        grants.consume_secret(&[1; 32], now_unix()).await.unwrap(),
        Consumed::Reused { .. }
    ));

    // Members, sign-in links and member sessions.
    let members = s.members().unwrap();
    let m = MemberRecord {
        id: "mem_1".into(),
        workspace: "w1".into(),
        email: "a@example.com".into(),
        name: None,
        role: Role::Member,
        created_at: 10,
    };
    members.insert_member(&m).await.unwrap();
    assert!(
        members
            .insert_member(&MemberRecord {
                id: "mem_2".into(),
                ..m.clone()
            })
            .await
            .is_err(),
        "one member per email"
    );
    assert_eq!(members.member_by_email("w1", "a@example.com").await.unwrap(), Some(m.clone()));
    assert_eq!(members.list_members("w1").await.unwrap(), std::slice::from_ref(&m));
    let now = now_unix();
    let link = LinkRecord {
        workspace: "w1".into(),
        member_id: "mem_1".into(),
        created_at: now,
        expires_at: now + 600,
    };
    members.create_link(&[2; 32], &link).await.unwrap();
    assert!(matches!(members.consume_link(&[2; 32], now).await.unwrap(), LinkState::Valid(_)));
    assert_eq!(members.consume_link(&[2; 32], now).await.unwrap(), LinkState::Used);
    let ms = MemberSessionRecord {
        workspace: "w1".into(),
        member_id: "mem_1".into(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + 3600,
    };
    members.create_member_session(&[3; 32], &ms, 600).await.unwrap();
    members.touch_member_session(&[3; 32], now + 5, 600).await.unwrap();
    assert_eq!(members.get_member_session(&[3; 32]).await.unwrap().unwrap().last_seen_at, now + 5);
    assert_eq!(members.delete_member("w1", "mem_1").await.unwrap(), Some(m));
    assert!(members.list_members("w1").await.unwrap().is_empty());

    // Dashboard sessions.
    let sessions = s.sessions().unwrap();
    let rec = SessionRecord {
        admin_token_id: "tok_a".into(),
        admin_token_hash: [4; 32],
        created_at: now,
        last_seen_at: now,
        expires_at: now + 3600,
    };
    sessions.create_session(&[5; 32], &rec, Duration::from_secs(600)).await.unwrap();
    assert_eq!(sessions.get_session(&[5; 32]).await.unwrap(), Some(rec));
    sessions.delete_session(&[5; 32]).await.unwrap();
    assert!(sessions.get_session(&[5; 32]).await.unwrap().is_none());

    // Audit: one batch over the global and two workspace streams.
    let audit = s.audit().unwrap();
    let at = portcullis::audit::now_ms();
    let mut batch = Vec::new();
    for ws in [Some("w1"), None, Some("w2"), Some("w1")] {
        let mut e = AuditEvent::new(EventType::ToolCall, at);
        e.workspace = ws.map(Into::into);
        batch.push(e);
    }
    let stored = audit.append(batch, 1000).await.unwrap();
    assert_eq!(stored.len(), 4);
    let page = |ws: Option<&str>| AuditQuery {
        workspace: ws.map(Into::into),
        page_size: 100,
        ..AuditQuery::default()
    };
    assert_eq!(audit.page(&page(None)).await.unwrap().events.len(), 4);
    assert_eq!(audit.page(&page(Some("w1"))).await.unwrap().events.len(), 2);
    assert_eq!(audit.page(&page(Some("w2"))).await.unwrap().events.len(), 1);

    // Usage: one flush over two workspaces.
    let usage = s.usage().unwrap();
    let minute = now - now % 60;
    let inc = |ws: &str, requests| Increment {
        minute,
        key: UsageKey {
            workspace: ws.into(),
            token_id: "tok".into(),
            member_id: "-".into(),
            server: "main".into(),
            tool: "echo".into(),
        },
        counts: Counts {
            requests,
            errors: 0,
            rate_limited: 0,
        },
    };
    let retention = Retention {
        minute: 3600,
        hour: 86_400,
    };
    usage.add_usage(&[inc("w1", 2), inc("w2", 5)], retention).await.unwrap();
    let rows = usage
        .query_usage(&UsageQuery {
            workspace: "w2",
            from: minute - 60,
            to: minute + 60,
            bucket: Bucket::Minute,
            group_by: GroupBy::Tool,
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].counts.requests, 5);
}

/// `portcullis doctor --json` on the config at `path`: check name → (status, detail).
async fn doctor(path: &Path) -> std::collections::HashMap<String, (String, String)> {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    c.args(["doctor", "--json", "--config"]).arg(path);
    let o = tokio::time::timeout(Duration::from_secs(60), c.output()).await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&o.stdout)));
    v["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_owned();
            (s("name"), (s("status"), s("detail")))
        })
        .collect()
}

#[tokio::test]
async fn doctor_understands_cluster_and_sentinel_urls() {
    let cluster = RedisCluster::start().await;
    let group = SentinelGroup::start().await;
    let up = DemoUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");

    std::fs::write(&path, config(&cluster.url(), &up.url, 1)).unwrap();
    let c = doctor(&path).await;
    let status = |name: &str| c.get(name).unwrap_or_else(|| panic!("no {name}: {c:?}")).clone();
    assert_eq!(status("store").0, "ok", "{c:?}");
    assert!(status("store").1.contains("(cluster)"), "{c:?}");
    for name in ["redis.role", "redis.replicas", "redis.cluster", "store.wait_replicas", "redis.aof"] {
        assert_eq!(status(name).0, "ok", "{name}: {c:?}");
    }

    // Two replicas cannot satisfy wait_replicas = 3.
    std::fs::write(&path, config(&group.url(), &up.url, 3)).unwrap();
    let c = doctor(&path).await;
    let status = |name: &str| c.get(name).unwrap_or_else(|| panic!("no {name}: {c:?}")).clone();
    assert!(status("store").0 == "ok" && status("store").1.contains("(sentinel)"), "{c:?}");
    assert_eq!(status("redis.role").0, "ok");
    assert!(status("redis.replicas").1.contains('2'), "{c:?}");
    assert_eq!(status("store.wait_replicas").0, "fail", "{c:?}");

    // A Sentinel group name nobody monitors.
    std::fs::write(&path, config(&group.url().replace("/mymaster", "/nosuch"), &up.url, 0)).unwrap();
    let c = doctor(&path).await;
    assert_eq!(c["store"].0, "fail", "{c:?}");
}

#[tokio::test]
#[ignore = "slow: freezes a primary; run by scripts/test-redis-ha.sh"]
async fn cluster_frozen_primary_is_replaced_and_revocations_still_reach_everyone() {
    // SIGSTOP leaves every connection to the node open but silent: the
    // instances' subscriptions hang rather than end, so revocations made
    // after the failover reach them only through the log poll, which must be
    // enough.
    let cluster = RedisCluster::start().await;
    let up = DemoUpstream::start().await;
    let g = Gateways::start(2, config(&cluster.url(), &up.url, 0)).await;
    let (valid, _) = g.create_token(0).await;
    let (revoked, rid) = g.create_token(0).await;
    let (after, after_id) = g.create_token(0).await;
    assert_eq!(g.revoke(0, &rid).await, 200);
    assert_eq!(g.post(1, &after).await, 200);
    let victim = cluster.primary_of("portcullis:{t}:tokens:seq").await;
    let frozen_at = Instant::now();
    cluster.nodes[victim].signal("-STOP");
    let seen = probe_through_failover(&g, &valid, &revoked, Duration::from_secs(40)).await;
    report("cluster failover (token slot's primary frozen)", &seen, frozen_at);
    assert!(seen.wrong.is_empty(), "{:?}", seen.wrong);
    assert!(seen.outage.is_some(), "freezing the primary was noticed (503s)");
    assert_eq!(g.revoke(1, &after_id).await, 200);
    for i in 0..2 {
        let s = g.post(i, &after).await;
        assert_eq!(s, 401, "instance {i}, right after the revoke returned");
    }
    cluster.nodes[victim].signal("-CONT");
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        for i in 0..2 {
            let s = g.post(i, &after).await;
            assert!(
                s == 401 || s == 503,
                "instance {i} accepted a revoked token after the old primary woke up: {s}"
            );
            assert_ne!(g.post(i, &revoked).await, 200);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lifecycle_across_instances(&g).await;
}

/// `limits.scope = "cluster"` on a Redis Cluster: one token's bucket is one
/// hash-tagged key (one slot), shared by every instance; small limits are
/// exact, larger ones leased (issue 15).
#[tokio::test]
async fn cluster_scope_limits_share_one_bucket_per_token_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let up = DemoUpstream::start().await;
    let text = config(&cluster.url(), &up.url, 1).replace(
        "requests_per_minute = 100000\n",
        "requests_per_minute = 100000\nscope = \"cluster\"\n",
    );
    let g = Gateways::start(2, text).await;
    let started = std::time::Instant::now();
    let mut admitted = std::collections::HashMap::new();
    for limit in [6u32, 600] {
        let body = format!(r#"{{"name":"t{limit}","requests_per_minute":{limit}}}"#);
        let r = g.admin(0, Method::POST, "/v1/workspaces/demo/tokens", &body).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let t = r.json()["token"].as_str().unwrap().to_owned();
        let (mut ok, mut refused) = (0u32, 0u32);
        let mut n = 0;
        while refused < 20 {
            match g.post(n % 2, &t).await {
                200 => ok += 1,
                429 => refused += 1,
                s => panic!("limit {limit}: unexpected status {s}"),
            }
            n += 1;
            assert!(n < 20_000, "limit {limit}: never refused");
        }
        admitted.insert(limit, ok);
    }
    // Every admitted request came out of the shared bucket: the limit and
    // its refill since the start, wherever the requests landed; and no
    // more lost than what the two instances may hold ahead (600 / 100 each,
    // or 600 / 50 while an instance has not yet seen the other heartbeat).
    let secs = started.elapsed().as_secs_f64();
    for (limit, ok) in admitted {
        let refill = (secs * f64::from(limit) / 60.0).ceil() as u32;
        assert!(ok <= limit + refill, "limit {limit}: admitted {ok} (refill {refill})");
        assert!(ok + 2 * (limit / 50) >= limit, "limit {limit}: admitted only {ok}");
    }
    // One key per token and limit, hash-tagged by token, on the primaries.
    let mut keys = Vec::new();
    for n in &cluster.nodes {
        if let Some(k) = n.query::<Vec<String>>(redis::cmd("KEYS").arg("portcullis:rl:*")).await
            && n.query::<String>(redis::cmd("INFO").arg("replication"))
                .await
                .is_some_and(|t| t.contains("role:master"))
        {
            keys.extend(k);
        }
    }
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in &keys {
        assert!(k.starts_with("portcullis:rl:{") && k.contains("}:"), "{k}");
    }
}
