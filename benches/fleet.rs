//! A model of a large cluster (issue 15, part 3): many instances against one
//! Redis, and a store of millions of tokens.
//!
//! `cargo bench --bench fleet` starts a private redis-server on a free
//! loopback port, seeds it with `FLEET_TOKENS` tokens in the Redis store's
//! real key layout, then grows a fleet of in-process instances through the
//! counts in `FLEET_COUNTS` (1, 3, 10, 30, 100). An instance is what
//! `portcullis serve` builds for cluster mode minus the listeners: its own
//! Redis store connection, `AppState` (token index and verifier, limiter,
//! audit trail), and the loops `serve` runs (the revocation sync task:
//! subscription, log poll and acknowledgements; the instance heartbeat; the
//! audit writer; the `last_used_at` flush runs as a phase of its own). Requests go through the verifier
//! and the limiter, as the data plane calls them. At each count it prints:
//!
//! - Redis commands (all, as `INFO commandstats` counts them: the commands a
//!   script runs included), script calls, Redis CPU and bytes, per second and
//!   per request, with no load (the background loops alone) and under
//!   `FLEET_RATE` requests/s per instance with the instance-scope limiter
//!   and with the cluster-scope limiter;
//! - revoke-call latency (instance 0 revokes a token every instance has in
//!   its index; the call waits for every instance's acknowledgement), the
//!   PUBLISH calls, pub/sub deliveries and Redis CPU per revocation, and a
//!   check that every instance refuses the token when the call returns;
//! - cold start: time and Redis commands for an instance to become ready
//!   (connected, store filter loaded, subscribed, caught up) and the RSS it
//!   adds to the process.
//!
//! Then the `cold` part adds tokens to the store up to each size of
//! `FLEET_COLD` and starts one instance in a child process (this binary run
//! again with `FLEET_CHILD` set): time to ready, Redis commands, its RSS
//! and peak RSS, and the first request's cost. `FLEET_PROCS` child
//! processes at the fleet's store size give the memory of an instance as a
//! process of its own, beside the in-process figure.
//!
//! Every answer is checked; the bench exits non-zero after printing when one
//! is wrong (a request of an active token refused, a revoked token served
//! by any instance after the revoke call returned, a child that failed).
//!
//! Environment (defaults run in a few minutes on 2 cores):
//!   FLEET_COUNTS=1,3,10,30,100  FLEET_TOKENS=100000  FLEET_COLD=1000000
//!   FLEET_ACTIVE=1000 (tokens the load uses)  FLEET_RATE=20 (req/s/instance)
//!   FLEET_IDLE_SECS=3  FLEET_LOAD_SECS=5  FLEET_REVOKES=20  FLEET_PROCS=3
//!   FLEET_AOF=always (appendfsync once seeded: always, everysec, no)
//!   FLEET_REDIS=single (one primary) or cluster (a Redis Cluster of 3
//!   primaries, `redis+cluster://`; Redis figures are summed over the nodes)
//!   FLEET_SMOKE=1 (tiny sizes, for scripts/test.sh)  FLEET_LOG=warn

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use portcullis::auth::VerifyError;
use portcullis::auth::lifecycle;
use portcullis::config::Config;
use portcullis::limit::{Limiter, Limits};
use portcullis::state::{AppState, open_store};
use portcullis::store::redis_keys::Layout;
use portcullis::telemetry::AuthFailureReason;
use portcullis::token::{self, TokenKind, now_unix};
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The per-token limit of the load: high enough never to refuse, so every
/// request runs the limiter to the end.
const RPM: u32 = 10_000_000;
const WORKSPACE: &str = "bench";
/// The default `server.last_used_flush_ms`, to turn one flush into a rate.
const DEFAULT_FLUSH_S: f64 = 30.0;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v} is not valid")),
        Err(_) => default,
    }
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    let v = std::env::var(name).unwrap_or_else(|_| default.into());
    v.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap_or_else(|_| panic!("{name}: `{s}` is not a number")))
        .collect()
}

struct Opts {
    counts: Vec<usize>,
    tokens: usize,
    cold: Vec<usize>,
    active: usize,
    rate: u32,
    idle: Duration,
    load: Duration,
    revokes: usize,
    procs: usize,
    aof: String,
    cluster: bool,
}

impl Opts {
    fn from_env() -> Opts {
        let smoke = env("FLEET_SMOKE", 0u8) == 1;
        let d = |a: &'static str, b: &'static str| if smoke { a } else { b };
        let secs = |name: &str, default: &str| Duration::from_secs_f64(env(name, default.parse::<f64>().unwrap()));
        Opts {
            counts: env_list("FLEET_COUNTS", d("1,3", "1,3,10,30,100")),
            tokens: env("FLEET_TOKENS", d("2000", "100000").parse().unwrap()),
            cold: env_list("FLEET_COLD", d("5000", "1000000")),
            active: env("FLEET_ACTIVE", d("50", "1000").parse().unwrap()),
            rate: env("FLEET_RATE", 20),
            idle: secs("FLEET_IDLE_SECS", d("1", "3")),
            load: secs("FLEET_LOAD_SECS", d("1", "5")),
            revokes: env("FLEET_REVOKES", d("3", "20").parse().unwrap()),
            procs: env("FLEET_PROCS", d("1", "3").parse().unwrap()),
            aof: env("FLEET_AOF", "always".to_string()),
            cluster: match env("FLEET_REDIS", "single".to_string()).as_str() {
                "single" => false,
                "cluster" => true,
                other => panic!("FLEET_REDIS={other}: single or cluster"),
            },
        }
    }
}

// ---------------------------------------------------------------- Redis ---

struct RedisServer {
    children: Vec<std::process::Child>,
    ports: Vec<u16>,
    cluster: bool,
    _dir: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Primaries of the Redis Cluster variant (`FLEET_REDIS=cluster`), no replicas.
const CLUSTER_NODES: usize = 3;

impl RedisServer {
    /// One primary, or a Redis Cluster of [`CLUSTER_NODES`] primaries.
    async fn start(cluster: bool) -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut children, mut ports) = (Vec::new(), Vec::new());
        for i in 0..if cluster { CLUSTER_NODES } else { 1 } {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let d = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let mut cmd = std::process::Command::new("redis-server");
            // AOF off while seeding (`FLEET_AOF` turns it on afterwards): the
            // seed is not what is measured, and a gigabyte-sized AOF written
            // with fsync always would only slow it down.
            cmd.args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]);
            if cluster {
                cmd.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
            }
            let child = cmd
                .arg("--dir")
                .arg(&d)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (Debian package redis-server)");
            children.push(child);
            ports.push(port);
        }
        let server = RedisServer {
            children,
            ports,
            cluster,
            _dir: dir,
        };
        for i in 0..server.ports.len() {
            server.connect(i).await;
        }
        if cluster {
            let addrs: Vec<String> = server.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
            let out = std::process::Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(&addrs)
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .output()
                .expect("redis-cli");
            assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
            for i in 0..server.ports.len() {
                let mut c = server.connect(i).await;
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut c).await.unwrap();
                    if info.contains("cluster_state:ok") {
                        break;
                    }
                    assert!(Instant::now() < deadline, "the Redis Cluster did not come up");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        server
    }

    fn url(&self) -> String {
        if self.cluster {
            format!("redis+cluster://127.0.0.1:{},127.0.0.1:{}", self.ports[0], self.ports[1])
        } else {
            format!("redis://127.0.0.1:{}/0", self.ports[0])
        }
    }

    fn layout(&self) -> Layout {
        if self.cluster { Layout::Tagged } else { Layout::Plain }
    }

    /// A plain connection to node `i` (the bench reads every node's `INFO`).
    async fn connect(&self, i: usize) -> MultiplexedConnection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", self.ports[i])).unwrap();
        for _ in 0..500 {
            // No response timeout: a seed pipeline of thousands of
            // commands, or INFO under load, may take longer than the default.
            let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
            if let Ok(c) = client.get_multiplexed_async_connection_with_config(&config).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("redis-server did not start");
    }

    /// The node serving the token store (its one hash slot on a Cluster).
    async fn store_node(&self, nodes: &mut [MultiplexedConnection]) -> usize {
        if !self.cluster {
            return 0;
        }
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(self.layout().tokens_seq())
            .query_async(&mut nodes[0])
            .await
            .unwrap();
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut nodes[0]).await.unwrap();
        for r in slots {
            // [first slot, last slot, [primary ip, port, id], replicas…]
            let Ok(v) = redis::from_redis_value::<Vec<redis::Value>>(r) else {
                continue;
            };
            let (Ok(lo), Ok(hi)) = (
                redis::from_redis_value::<i64>(v[0].clone()),
                redis::from_redis_value::<i64>(v[1].clone()),
            ) else {
                continue;
            };
            let Ok(primary) = redis::from_redis_value::<Vec<redis::Value>>(v[2].clone()) else {
                continue;
            };
            let port: i64 = redis::from_redis_value(primary[1].clone()).unwrap_or(0);
            if (lo..=hi).contains(&slot)
                && let Some(i) = self.ports.iter().position(|&p| i64::from(p) == port)
            {
                return i;
            }
        }
        panic!("no node serves the token store's slot");
    }
}

/// What `INFO` says at one moment.
#[derive(Clone)]
struct Snap {
    at: Instant,
    /// command -> calls (INFO itself left out).
    calls: BTreeMap<String, u64>,
    cpu_s: f64,
    net_out: u64,
    used_memory: u64,
}

/// `INFO` of every node, summed.
async fn snap(nodes: &mut [MultiplexedConnection]) -> Snap {
    let mut all = String::new();
    for c in nodes.iter_mut() {
        let info: String = redis::cmd("INFO").arg("all").query_async(c).await.expect("INFO");
        all.push_str(&info);
    }
    let info = all;
    let field = |name: &str| -> f64 {
        info.lines()
            .filter_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .sum()
    };
    let mut calls = BTreeMap::new();
    for l in info.lines() {
        if let Some(rest) = l.strip_prefix("cmdstat_") {
            let (name, stats) = rest.split_once(':').unwrap_or((rest, ""));
            if name == "info" {
                continue;
            }
            let n = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            *calls.entry(name.to_string()).or_insert(0) += n;
        }
    }
    Snap {
        at: Instant::now(),
        calls,
        cpu_s: field("used_cpu_user") + field("used_cpu_sys"),
        net_out: field("total_net_output_bytes") as u64,
        used_memory: field("used_memory") as u64,
    }
}

/// The difference of two snapshots.
struct Delta {
    secs: f64,
    calls: BTreeMap<String, u64>,
    cpu_s: f64,
    net_out: u64,
}

impl Delta {
    fn new(a: &Snap, b: &Snap) -> Delta {
        let calls = b
            .calls
            .iter()
            .map(|(k, v)| (k.clone(), v - a.calls.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        Delta {
            secs: (b.at - a.at).as_secs_f64(),
            calls,
            cpu_s: b.cpu_s - a.cpu_s,
            net_out: b.net_out - a.net_out,
        }
    }
    fn total(&self) -> u64 {
        self.calls.values().sum()
    }
    fn of(&self, cmd: &str) -> u64 {
        self.calls.get(cmd).copied().unwrap_or(0)
    }
    fn scripts(&self) -> u64 {
        self.of("evalsha") + self.of("eval")
    }
    /// The busiest commands, for the details under a table.
    fn breakdown(&self) -> String {
        let mut v: Vec<_> = self.calls.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        v.iter().take(8).map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
    }
}

// -------------------------------------------------------------- seeding ---

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A fast, seedable generator for what need not be secret (seeded tokens
/// nobody presents, which token the load picks next).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A token the bench can present: its raw value and id.
#[derive(Clone)]
struct Known {
    raw: String,
    id: String,
}

/// Adds tokens to the store until it holds `upto`, with exactly the keys
/// and fields `RedisStore::insert` writes (its INSERT script), pipelined.
/// Returns the raw values of the first `keep` tokens added.
async fn seed(c: &mut MultiplexedConnection, keys: Layout, from: usize, upto: usize, keep: usize) -> Vec<Known> {
    const BATCH: usize = 5_000;
    let mut kept = Vec::new();
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d ^ from as u64);
    let now = now_unix().to_string();
    let mut at = from;
    let (all_list, ws_list) = (
        keys.list(TokenKind::Workspace, None),
        keys.list(TokenKind::Workspace, Some(WORKSPACE)),
    );
    let t0 = Instant::now();
    // Two pipelines in flight: one is built while the other is on the wire.
    let mut pending: Option<tokio::task::JoinHandle<()>> = None;
    while at < upto {
        let end = (at + BATCH).min(upto);
        let mut p = redis::pipe();
        for seq in at + 1..=end {
            // Tokens the bench presents are real ones (`token::generate`);
            // the others only need the store's shape, and random hashes and
            // ids from a fast generator make seeding millions quick.
            let (raw, hash, hint, id) = if kept.len() < keep {
                let new = token::generate(TokenKind::Workspace);
                (Some(new.raw), new.hash, new.hint, token::generate_id())
            } else {
                let mut hash = [0u8; 32];
                for chunk in hash.chunks_mut(8) {
                    chunk.copy_from_slice(&rng.next().to_le_bytes());
                }
                let id: String = (0..16).map(|_| BASE62[(rng.next() % 62) as usize] as char).collect();
                let hint = format!("{}{}…", TokenKind::Workspace.prefix(), &id[..4]);
                (None, hash, hint, format!("{}{id}", token::ID_PREFIX))
            };
            let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
            p.cmd("HSET")
                .arg(keys.token(&id))
                .arg("seq")
                .arg(seq)
                .arg("id")
                .arg(&id)
                .arg("name")
                .arg(format!("seed-{seq}"))
                .arg("workspace")
                .arg(WORKSPACE)
                .arg("kind")
                .arg("workspace")
                .arg("hint")
                .arg(&hint)
                .arg("created_at")
                .arg(&now)
                .arg("created_by")
                .arg("seed")
                .arg("hash")
                .arg(&hex)
                .ignore();
            p.cmd("SET").arg(keys.hash(&hex)).arg(&id).ignore();
            p.cmd("ZADD").arg(&all_list).arg(seq).arg(&id).ignore();
            p.cmd("ZADD").arg(&ws_list).arg(seq).arg(&id).ignore();
            if let Some(raw) = raw {
                kept.push(Known { raw, id });
            }
        }
        p.cmd("SET").arg(keys.tokens_seq()).arg(end).ignore();
        if let Some(h) = pending.take() {
            h.await.unwrap();
        }
        let mut c2 = c.clone();
        pending = Some(tokio::spawn(async move {
            let () = p.query_async(&mut c2).await.expect("seed pipeline");
        }));
        at = end;
    }
    if let Some(h) = pending.take() {
        h.await.unwrap();
    }
    if upto > from {
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "seeded tokens {}..{} in {secs:.1} s ({:.0} tokens/s)",
            from + 1,
            upto,
            (upto - from) as f64 / secs
        );
    }
    kept
}

// ------------------------------------------------------------ instances ---

fn config_text(url: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [store]\nbackend = \"redis\"\nurl = \"{url}\"\n\
         [limits]\nrequests_per_minute = {RPM}\nscope = \"cluster\"\n\
         [[workspaces]]\nslug = \"{WORKSPACE}\"\n[[workspaces.servers]]\nname = \"up\"\nurl = \"http://127.0.0.1:9/mcp\"\n"
    )
}

/// One instance: `AppState` for cluster mode (cluster-scope limiter) and
/// the loops `app::spawn_maintenance` runs (the instance-scope runs use a
/// local limiter of their own, as `limits.scope = "instance"` would).
struct Instance {
    state: Arc<AppState>,
    shutdown: CancellationToken,
}

async fn start_instance(url: &str) -> Instance {
    let config = Config::from_toml(Path::new("fleet.toml"), &config_text(url), &|_| None).expect("config");
    let store = open_store(&config).await.expect("store");
    let state = AppState::new(config, store).await.expect("state");
    let shutdown = CancellationToken::new();
    tokio::spawn(portcullis::auth::sync::run(
        Arc::clone(&state.verifier),
        state.config.server.revocation_poll,
        shutdown.clone(),
    ));
    let (s, stop) = (Arc::clone(&state), shutdown.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let _ = s.store.heartbeat().await;
                    if let Limits::Cluster(c) = &*s.limiter {
                        c.heartbeat().await;
                    }
                }
                _ = stop.cancelled() => return,
            }
        }
    });
    // No `last_used_at` flush loop: its cost is measured in a phase of its
    // own (every instance flushes once), instead of landing at random in the
    // other phases' windows.
    tokio::spawn(Arc::clone(&state.audit).run_writer(shutdown.clone()));
    // Ready: subscribed and caught up with the revocation log.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.verifier.is_trusted() {
        assert!(Instant::now() < deadline, "an instance did not get in sync within 30 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Instance { state, shutdown }
}

fn rss_kb(pid: &str) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let f = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (f("VmRSS:"), f("VmHWM:"))
}

// ----------------------------------------------------------------- load ---

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    wrong: AtomicU64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Drives `rate` requests/s on every instance for `dur`: verify a random
/// active token, then count it with the limiter (`cluster`: the instance's
/// cluster-scope limiter, else its local one). Returns the latencies.
async fn drive(fleet: &[Instance], active: &Arc<Vec<Known>>, rate: u32, dur: Duration, cluster: bool, tally: &Arc<Tally>) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for (n, inst) in fleet.iter().enumerate() {
        let (state, active, tally) = (Arc::clone(&inst.state), Arc::clone(active), Arc::clone(tally));
        let use_cluster = cluster;
        let local_limiter = if cluster { None } else { Some(Arc::new(Limiter::new())) };
        tasks.push(tokio::spawn(async move {
            let mut rng = XorShift(0x9e37_79b9_7f4a_7c15u64 ^ (n as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9));
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Instances start out of phase, as independent clients would.
            tokio::time::sleep(Duration::from_micros(rng.next() % 50_000)).await;
            let ip = std::net::IpAddr::from([10, 0, (n / 250) as u8, (n % 250) as u8]);
            let end = Instant::now() + dur;
            let mut lat = Vec::new();
            while Instant::now() < end {
                tick.tick().await;
                let t = &active[(rng.next() % active.len() as u64) as usize];
                let t0 = Instant::now();
                let ok = match state.verifier.verify_from(&t.raw, now_unix(), Some(ip)).await {
                    Ok(entry) => {
                        if use_cluster {
                            state.limiter.check(entry.limiter_key, RPM).await.1.is_ok()
                        } else {
                            local_limiter.as_ref().unwrap().check(entry.limiter_key, RPM).is_ok()
                        }
                    }
                    Err(_) => false,
                };
                lat.push(t0.elapsed());
                if ok {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.wrong.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

// ---------------------------------------------------------------- child ---

/// `FLEET_CHILD=<redis url>`: one instance as a process of its own. Prints
/// `ready <ms> <rss kB> <peak kB>`, then reads raw tokens on stdin, verifies
/// each (`bad` lines for refusals), prints `warm <rss kB> <peak kB>` at EOF.
async fn child(url: String) {
    let t0 = Instant::now();
    let inst = start_instance(&url).await;
    let (rss, hwm) = rss_kb("self");
    println!("ready {} {rss} {hwm}", t0.elapsed().as_millis());
    let mut first = true;
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let raw = line.unwrap();
        let t = Instant::now();
        let r = inst.state.verifier.verify(&raw, now_unix()).await;
        if first {
            println!("first {}", t.elapsed().as_micros());
            first = false;
        }
        if r.is_err() {
            println!("bad {r:?}");
        }
    }
    let (rss, hwm) = rss_kb("self");
    println!("warm {rss} {hwm}");
    std::io::stdout().flush().unwrap();
    inst.shutdown.cancel();
}

struct ChildRun {
    ready_ms: u64,
    rss_ready: u64,
    hwm_ready: u64,
    first_us: u64,
    rss_warm: u64,
    bad: Vec<String>,
}

/// Runs one child instance, feeding it `tokens`; `None` if it failed.
async fn run_child(url: &str, tokens: &[Known]) -> Result<ChildRun, String> {
    let exe = std::env::current_exe().unwrap();
    let url = url.to_string();
    let input: Vec<String> = tokens.iter().map(|t| t.raw.clone()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(exe)
            .env("FLEET_CHILD", &url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start a child instance: {e}"))?;
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        let nums = |l: &str| -> Vec<u64> { l.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect() };
        let ready = nums(&line);
        if !line.starts_with("ready") || ready.len() != 3 {
            let _ = child.kill();
            return Err(format!("child instance said `{}`", line.trim()));
        }
        {
            let mut stdin = child.stdin.take().unwrap();
            for raw in &input {
                writeln!(stdin, "{raw}").map_err(|e| e.to_string())?;
            }
        }
        let mut run = ChildRun {
            ready_ms: ready[0],
            rss_ready: ready[1],
            hwm_ready: ready[2],
            first_us: 0,
            rss_warm: 0,
            bad: Vec::new(),
        };
        for l in out.lines() {
            let l = l.map_err(|e| e.to_string())?;
            if l.starts_with("first") {
                run.first_us = nums(&l).first().copied().unwrap_or(0);
            } else if l.starts_with("warm") {
                run.rss_warm = nums(&l).first().copied().unwrap_or(0);
            } else if l.starts_with("bad") {
                run.bad.push(l);
            }
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("child instance exited with {status}"));
        }
        Ok(run)
    })
    .await
    .unwrap()
}

// ----------------------------------------------------------------- main ---

fn main() {
    let log = std::env::var("FLEET_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(log))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if let Ok(url) = std::env::var("FLEET_CHILD") {
        rt.block_on(child(url));
        return;
    }
    let failures = rt.block_on(run(Opts::from_env()));
    if !failures.is_empty() {
        println!("\nFAILED ({}):", failures.len());
        for f in &failures {
            println!("- {f}");
        }
        std::process::exit(1);
    }
}

struct Row {
    flush: String,
    startup: String,
    idle: String,
    loads: Vec<String>,
    revoke: String,
    details: Vec<String>,
}

async fn run(o: Opts) -> Vec<String> {
    let mut failures = Vec::new();
    let redis = RedisServer::start(o.cluster).await;
    let mut nodes = Vec::new();
    for i in 0..redis.ports.len() {
        nodes.push(redis.connect(i).await);
    }
    // The token store's node: the seed, and its channel's subscribers.
    let store_node = redis.store_node(&mut nodes).await;
    let mut rc = nodes[store_node].clone();
    let keys = redis.layout();
    let url = redis.url();
    let victims_needed = o.revokes * o.counts.len();
    let kept = seed(&mut rc, keys, 0, o.tokens.max(o.active + victims_needed), o.active + victims_needed).await;
    let seeded = o.tokens.max(o.active + victims_needed);
    let active: Arc<Vec<Known>> = Arc::new(kept[..o.active].to_vec());
    let mut victims = kept[o.active..].iter().cloned();
    let mem_seeded = snap(&mut nodes).await.used_memory;
    // The durability the deployment guide asks for, now that the seed is in.
    for c in nodes.iter_mut() {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("appendfsync")
            .arg(&o.aof)
            .query_async(c)
            .await
            .unwrap();
        if o.aof != "no" {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("appendonly")
                .arg("yes")
                .query_async(c)
                .await
                .unwrap();
            // Turning AOF on rewrites the dataset once; wait for it.
            loop {
                let info: String = redis::cmd("INFO").arg("persistence").query_async(c).await.unwrap();
                if info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // A stored token must read back through the real store: the seed's
    // layout is the store's.
    {
        let probe = start_instance(&url).await;
        match probe.state.verifier.verify(&active[0].raw, now_unix()).await {
            Ok(e) if *e.id == *active[0].id => {}
            other => failures.push(format!("a seeded token does not verify through the store: {other:?}")),
        }
        probe.shutdown.cancel();
    }
    println!(
        "## Fleet model: instances against {}\n",
        if o.cluster { "a Redis Cluster of 3 primaries" } else { "one Redis" }
    );
    println!(
        "Store: {seeded} tokens ({:.0} MiB in Redis, {:.0} bytes/token); {} active tokens used by the load; \
         {} requests/s per instance for {:.0} s; {} revocations per count; appendfsync {}.\n",
        mem_seeded as f64 / 1048576.0,
        mem_seeded as f64 / seeded as f64,
        o.active,
        o.rate,
        o.load.as_secs_f64(),
        o.revokes,
        o.aof
    );

    let mut fleet: Vec<Instance> = Vec::new();
    let mut rows = Vec::new();
    for &n in &o.counts {
        // --- grow the fleet to n: cold start of the new instances
        let adding = n.saturating_sub(fleet.len());
        let (rss0, _) = rss_kb("self");
        let s0 = snap(&mut nodes).await;
        let mut ready = Vec::new();
        for _ in 0..adding {
            let t = Instant::now();
            fleet.push(start_instance(&url).await);
            ready.push(t.elapsed());
        }
        let s1 = snap(&mut nodes).await;
        // Each new instance reads the active tokens into its index once
        // (the first use of a token on an instance is a store read).
        let warm_from = fleet.len() - adding;
        for inst in &fleet[warm_from..] {
            for t in active.iter() {
                if inst.state.verifier.verify(&t.raw, now_unix()).await.is_err() {
                    failures.push(format!("n={n}: an active token was refused while warming"));
                }
            }
        }
        let s2 = snap(&mut nodes).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss1, _) = rss_kb("self");
        let cold = Delta::new(&s0, &s1);
        let warm = Delta::new(&s1, &s2);
        ready.sort();
        let per = |v: u64| if adding == 0 { 0.0 } else { v as f64 / adding as f64 };
        let startup = format!(
            "| {n} | {adding} | {} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} |",
            ms(percentile(&ready, 0.5)),
            ms(ready.last().copied().unwrap_or_default()),
            per(cold.total()),
            per(cold.of("scan")),
            per(cold.net_out) / 1048576.0,
            per(warm.total()),
            per((rss1 as i64 - rss0 as i64).max(0) as u64) / 1024.0,
        );
        let mut details = vec![format!("n={n} startup commands: {}", cold.breakdown())];

        // --- background: no requests
        let a = snap(&mut nodes).await;
        tokio::time::sleep(o.idle).await;
        let b = snap(&mut nodes).await;
        let idle = Delta::new(&a, &b);
        let idle_row = format!(
            "| {n} | {:.0} | {:.1} | {:.1} | {:.2} |",
            idle.total() as f64 / idle.secs,
            idle.total() as f64 / idle.secs / n as f64,
            idle.scripts() as f64 / idle.secs / n as f64,
            idle.cpu_s / idle.secs * 100.0,
        );
        details.push(format!("n={n} idle commands: {}", idle.breakdown()));

        // --- load, instance scope then cluster scope
        let mut loads = Vec::new();
        for cluster in [false, true] {
            let tally = Arc::new(Tally::default());
            let a = snap(&mut nodes).await;
            let lat = drive(&fleet, &active, o.rate, o.load, cluster, &tally).await;
            let b = snap(&mut nodes).await;
            let d = Delta::new(&a, &b);
            let (ok, wrong) = (tally.ok.load(Ordering::Relaxed), tally.wrong.load(Ordering::Relaxed));
            if wrong > 0 {
                failures.push(format!(
                    "n={n} {} scope: {wrong} of {} requests refused",
                    if cluster { "cluster" } else { "instance" },
                    ok + wrong
                ));
            }
            let reqs = (ok + wrong).max(1) as f64;
            // Per request: what the load added over the background rate.
            let extra = |total: f64, idle_rate: f64| (total - idle_rate * d.secs).max(0.0) / reqs;
            loads.push(format!(
                "| {n} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} | {:.1} | {} | {} |",
                if cluster { "cluster" } else { "instance" },
                reqs / d.secs,
                d.total() as f64 / d.secs,
                d.scripts() as f64 / d.secs,
                extra(d.total() as f64, idle.total() as f64 / idle.secs),
                extra(d.scripts() as f64, idle.scripts() as f64 / idle.secs),
                extra(d.cpu_s, idle.cpu_s / idle.secs) * 1e6,
                d.cpu_s / d.secs * 100.0,
                ms(percentile(&lat, 0.5)),
                ms(percentile(&lat, 0.99)),
            ));
            details.push(format!(
                "n={n} {} load commands: {}",
                if cluster { "cluster" } else { "instance" },
                d.breakdown()
            ));
        }

        // --- the last_used_at flush every instance runs (default every 30 s):
        // each writes the tokens it served since its last flush.
        let a = snap(&mut nodes).await;
        let mut flushed = 0;
        for inst in &fleet {
            match inst.state.verifier.flush_last_used().await {
                Ok(k) => flushed += k,
                Err(e) => failures.push(format!("n={n}: last_used flush failed: {e}")),
            }
        }
        let b = snap(&mut nodes).await;
        let d = Delta::new(&a, &b);
        let flush = format!(
            "| {n} | {:.0} | {:.1} | {:.0} | {:.2} | {:.0} | {:.2} |",
            flushed as f64 / n as f64,
            d.scripts() as f64 / n as f64,
            d.total() as f64 / n as f64,
            d.cpu_s * 1000.0 / n as f64,
            d.total() as f64 / DEFAULT_FLUSH_S,
            d.cpu_s / DEFAULT_FLUSH_S * 100.0,
        );
        details.push(format!("n={n} last_used flush commands: {}", d.breakdown()));

        // --- revocations by instance 0
        let mine: Vec<Known> = victims.by_ref().take(o.revokes).collect();
        for inst in &fleet {
            for v in &mine {
                if inst.state.verifier.verify(&v.raw, now_unix()).await.is_err() {
                    failures.push(format!("n={n}: a token to revoke was refused before its revocation"));
                }
            }
        }
        let numsub: Vec<redis::Value> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(portcullis::store::redis::channel())
            .query_async(&mut rc)
            .await
            .unwrap();
        let subscribers: u64 = redis::from_redis_value(numsub[1].clone()).unwrap_or(0);
        let mut lat = Vec::new();
        let mut served_after = 0;
        let a = snap(&mut nodes).await;
        for v in &mine {
            let t = Instant::now();
            let r = lifecycle::revoke(Some(&fleet[0].state.verifier), &fleet[0].state.store, &v.id, now_unix()).await;
            lat.push(t.elapsed());
            match r {
                Ok(Some(r)) if r.newly_revoked => {}
                other => failures.push(format!("n={n}: revoke answered {:?}", other.map(|r| r.map(|r| r.newly_revoked)))),
            }
            for inst in &fleet {
                match inst.state.verifier.verify(&v.raw, now_unix()).await {
                    Err(VerifyError::Rejected(AuthFailureReason::Revoked)) => {}
                    _ => served_after += 1,
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let b = snap(&mut nodes).await;
        if served_after > 0 {
            failures.push(format!(
                "n={n}: {served_after} checks found a revoked token not refused after the revoke call returned"
            ));
        }
        let d = Delta::new(&a, &b);
        let k = mine.len().max(1) as f64;
        let bg = |total: f64, rate: f64| (total - rate * d.secs).max(0.0) / k;
        lat.sort();
        let revoke = format!(
            "| {n} | {subscribers} | {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} |",
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            ms(lat.last().copied().unwrap_or_default()),
            d.of("publish") as f64 / k,
            // Each PUBLISH reaches every subscriber of the channel.
            d.of("publish") as f64 * subscribers as f64 / k,
            bg(d.net_out as f64, idle.net_out as f64 / idle.secs),
            bg(d.total() as f64, idle.total() as f64 / idle.secs),
            bg(d.cpu_s, idle.cpu_s / idle.secs) * 1000.0,
        );
        details.push(format!("n={n} revocation commands: {}", d.breakdown()));
        eprintln!("n={n} done");
        rows.push(Row {
            flush,
            startup,
            idle: idle_row,
            loads,
            revoke,
            details,
        });
    }

    println!("### Cold start of the instances added at each count (store of {seeded} tokens)\n");
    println!(
        "| instances | added | ready p50 ms | ready max ms | Redis commands/instance | of which SCAN | MiB sent by Redis/instance | Redis commands to warm {} tokens/instance | RSS added MiB/instance |",
        o.active
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!("{}", r.startup);
    }
    println!("\n### Background load, no requests ({:.0} s)\n", o.idle.as_secs_f64());
    println!("| instances | Redis commands/s | per instance/s | scripts per instance/s | Redis CPU % |");
    println!("|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!("{}", r.idle);
    }
    println!("\n### Under load: {} requests/s per instance (verify + limiter)\n", o.rate);
    println!(
        "| instances | limit scope | requests/s | Redis commands/s | scripts/s | commands/request | scripts/request | Redis CPU µs/request | Redis CPU % | request p50 ms | request p99 ms |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        for l in &r.loads {
            println!("{l}");
        }
    }
    println!("\n### `last_used_at` flush: every instance once, after the load\n");
    println!(
        "| instances | tokens flushed/instance | scripts/instance | Redis commands/instance | Redis CPU ms/instance | fleet commands/s at the default 30 s | fleet Redis CPU % at 30 s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!("{}", r.flush);
    }
    println!("\n### Revocation by instance 0 (the call waits for every instance's acknowledgement)\n");
    println!(
        "| instances | channel subscribers | revoke p50 ms | revoke p99 ms | revoke max ms | PUBLISH/revocation | pub/sub deliveries/revocation | bytes sent by Redis/revocation | Redis commands/revocation | Redis CPU ms/revocation |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!("{}", r.revoke);
    }
    println!("\nPer-phase Redis commands (busiest first, script-internal commands included):\n");
    for r in &rows {
        for d in &r.details {
            println!("    {d}");
        }
    }
    println!();
    for inst in &fleet {
        inst.shutdown.cancel();
    }
    drop(fleet);
    // Let the loops see the cancellation before anything else happens.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // --- instances as processes of their own, at the fleet's store size
    if o.procs > 0 {
        println!(
            "### Instances as processes ({} at once, store of {seeded} tokens, {} tokens warmed each)\n",
            o.procs, o.active
        );
        println!("| process | ready ms | RSS ready MiB | peak RSS at start MiB | first request µs | RSS after warming MiB |");
        println!("|---:|---:|---:|---:|---:|---:|");
        let runs = futures_util::future::join_all((0..o.procs).map(|_| run_child(&url, &active))).await;
        for (i, r) in runs.into_iter().enumerate() {
            match r {
                Ok(r) => {
                    if !r.bad.is_empty() {
                        failures.push(format!("child {i}: {} refusals of active tokens ({})", r.bad.len(), r.bad[0]));
                    }
                    println!(
                        "| {i} | {} | {:.1} | {:.1} | {} | {:.1} |",
                        r.ready_ms,
                        r.rss_ready as f64 / 1024.0,
                        r.hwm_ready as f64 / 1024.0,
                        r.first_us,
                        r.rss_warm as f64 / 1024.0
                    );
                }
                Err(e) => failures.push(format!("child {i}: {e}")),
            }
        }
        println!();
    }

    // --- cold start at larger stores
    if !o.cold.is_empty() {
        println!("### Cold start of one instance (a process of its own) by store size\n");
        println!(
            "| tokens in store | Redis used_memory MiB | bytes/token | ready ms | Redis commands | of which SCAN | MiB sent by Redis | Redis CPU s | RSS ready MiB | peak RSS at start MiB | first request µs | commands for the first request |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        // Starting an instance only reads: AOF off again, so that adding
        // millions of tokens does not write gigabytes of it.
        for c in nodes.iter_mut() {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("appendonly")
                .arg("no")
                .query_async(c)
                .await
                .unwrap();
        }
        let mut have = seeded;
        for &size in &o.cold {
            if size > have {
                seed(&mut rc, keys, have, size, 0).await;
                have = size;
            }
            let mem = snap(&mut nodes).await.used_memory;
            // Started alone, then one stored token: ops counted in two steps.
            let a = snap(&mut nodes).await;
            let r = run_child(&url, &[]).await;
            let b = snap(&mut nodes).await;
            let r2 = run_child(&url, &active[..1]).await;
            let c = snap(&mut nodes).await;
            match (r, r2) {
                (Ok(r), Ok(r2)) => {
                    let d = Delta::new(&a, &b);
                    let d2 = Delta::new(&b, &c);
                    // The second child's start costs what the first's did.
                    let first_cmds = d2.total() as i64 - d.total() as i64;
                    if !r2.bad.is_empty() {
                        failures.push(format!("cold {size}: the first request was refused ({})", r2.bad[0]));
                    }
                    println!(
                        "| {have} | {:.0} | {:.0} | {} | {} | {} | {:.1} | {:.2} | {:.1} | {:.1} | {} | {} |",
                        mem as f64 / 1048576.0,
                        mem as f64 / have as f64,
                        r.ready_ms,
                        d.total(),
                        d.of("scan"),
                        d.net_out as f64 / 1048576.0,
                        d.cpu_s,
                        r.rss_ready as f64 / 1024.0,
                        r.hwm_ready as f64 / 1024.0,
                        r2.first_us,
                        first_cmds
                    );
                }
                (Err(e), _) | (_, Err(e)) => failures.push(format!("cold {size}: {e}")),
            }
        }
        println!();
    }
    failures
}
