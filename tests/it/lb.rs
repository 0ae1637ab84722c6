//! The cluster as operators run it: `deploy/local-cluster.sh` starts a private
//! redis-server (AOF), N `portcullis serve` processes and HAProxy in front.

use std::process::Command;
use std::time::Instant;

use http::Method;
use serde_json::Value;

use crate::harness::*;

struct LocalCluster {
    dir: tempfile::TempDir,
    info: Value,
}

impl LocalCluster {
    fn up(instances: usize, scope: &str, upstream: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local-cluster.sh"))
            .args([
                "up",
                "--instances",
                &instances.to_string(),
                "--scope",
                scope,
                "--upstream",
                upstream,
                "--bin",
                env!("CARGO_BIN_EXE_portcullis"),
                "--dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "local-cluster.sh up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let info: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        // These tests are about HAProxy in front; the script refuses to
        // substitute another balancer unless asked, and this checks it.
        assert_eq!(info["lb"], "haproxy", "the load balancer is not HAProxy");
        LocalCluster { dir, info }
    }

    fn instance(&self, i: usize, what: &str) -> String {
        self.info["instances"][i][what].as_str().unwrap().to_string()
    }

    fn lb(&self) -> String {
        self.info["lb_url"].as_str().unwrap().to_string()
    }

    /// Offline bootstrap against the shared Redis, as an operator would.
    fn admin_token(&self) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([
                "admin",
                "token",
                "create",
                "--name",
                "ops",
                "--json",
                "--config",
                &self.instance(0, "config"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local-cluster.sh"))
            .args(["down", "--dir"])
            .arg(self.dir.path())
            .output();
    }
}

async fn post(base: &str, token: &str, id: usize) -> Resp {
    send(
        Method::POST,
        &format!("{base}/ws/demo"),
        &[("authorization", &format!("Bearer {token}")), ("content-type", "application/json")],
        echo_call(id as i64, "x"),
    )
    .await
}

async fn revocation_everywhere(n: usize) {
    let up = DemoUpstream::start_open().await;
    let c = LocalCluster::up(n, "instance", &up.url);
    let admin = c.admin_token();
    let auth = format!("Bearer {admin}");
    for trial in 0..200 {
        let r = send(
            Method::POST,
            &format!("{}/v1/workspaces/demo/tokens", c.instance(trial % n, "admin")),
            &[("authorization", &auth)],
            r#"{"name":"t"}"#,
        )
        .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        let (t, id) = (
            v["token"].as_str().unwrap().to_string(),
            v["info"]["id"].as_str().unwrap().to_string(),
        );
        for i in 0..n {
            assert_eq!(
                post(&c.instance(i, "data"), &t, trial).await.status,
                200,
                "trial {trial}: instance {i}"
            );
        }
        assert_eq!(post(&c.lb(), &t, trial).await.status, 200);
        let revoker = (trial + 1) % n;
        let r = send(
            Method::DELETE,
            &format!("{}/v1/workspaces/demo/tokens/{id}", c.instance(revoker, "admin")),
            &[("authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(r.status, 200);
        for i in 0..n {
            assert_eq!(
                post(&c.instance(i, "data"), &t, trial).await.status,
                401,
                "trial {trial}: instance {i} accepted a token revoked on {revoker}"
            );
        }
        for _ in 0..n {
            assert_eq!(
                post(&c.lb(), &t, trial).await.status,
                401,
                "trial {trial}: accepted through the load balancer"
            );
        }
    }
}

#[tokio::test]
async fn two_instances_behind_haproxy_refuse_a_revoked_token_on_the_next_request() {
    revocation_everywhere(2).await;
}

#[tokio::test]
async fn three_instances_behind_haproxy_refuse_a_revoked_token_on_the_next_request() {
    revocation_everywhere(3).await;
}

/// Sends `n` requests through the load balancer with one token; returns the
/// admitted count, the refused count and the seconds it took.
async fn burst_through_the_lb(scope: &str, n: usize) -> (usize, usize, f64) {
    let up = DemoUpstream::start_open().await;
    let c = LocalCluster::up(3, scope, &up.url);
    let admin = c.admin_token();
    let r = send(
        Method::POST,
        &format!("{}/v1/workspaces/demo/tokens", c.instance(0, "admin")),
        &[("authorization", &format!("Bearer {admin}"))],
        r#"{"name":"burst"}"#,
    )
    .await;
    let t = r.json()["token"].as_str().unwrap().to_string();
    let started = Instant::now();
    let (mut admitted, mut refused) = (0, 0);
    for i in 0..n {
        let r = post(&c.lb(), &t, i).await;
        match r.status.as_u16() {
            200 => admitted += 1,
            429 => refused += 1,
            s => panic!("unexpected status {s}: {}", String::from_utf8_lossy(&r.body)),
        }
    }
    (admitted, refused, started.elapsed().as_secs_f64())
}

#[tokio::test]
async fn a_burst_through_the_lb_is_limited_cluster_wide() {
    let (admitted, _, secs) = burst_through_the_lb("cluster", 300).await;
    let refill = (secs * 2.0).ceil() as usize;
    assert!(
        (120..=120 + refill).contains(&admitted),
        "cluster scope admitted {admitted} of 300 in {secs:.2} s"
    );
}

#[tokio::test]
async fn with_instance_scope_each_instance_counts_alone() {
    // Documented: N instances admit up to N x the limit. 450 requests spread
    // round-robin over 3 instances are 150 each, over each instance's 120:
    // each admits its own burst (three times the cluster scope's total) and
    // refuses the rest.
    let (admitted, refused, secs) = burst_through_the_lb("instance", 450).await;
    let refill = 3 * (secs * 2.0).ceil() as usize;
    assert!(
        (360..=360 + refill).contains(&admitted),
        "instance scope admitted {admitted} of 450 in {secs:.2} s (3 x 120, refill {refill})"
    );
    assert_eq!(admitted + refused, 450);
    assert!(refused > 0, "no instance ever limited");
}

impl LocalCluster {
    /// SIGKILLs instance `i` (0-based): it dies holding whatever lease it had.
    fn kill_instance(&self, i: usize) {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local-cluster.sh"))
            .args(["stop-instance", "--kill", "--index", &(i + 1).to_string(), "--dir"])
            .arg(self.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Watches Redis with `redis-cli MONITOR` (every command, with its
    /// keys) until the returned child is killed; the store's own scripts
    /// (revocation polls, `last_used_at` flushes) run meanwhile, so counting
    /// `EVALSHA`s alone would not tell the limiter's calls apart.
    fn monitor(&self, out: &std::path::Path) -> std::process::Child {
        let child = Command::new("redis-cli")
            .args(["-p", &self.info["redis_port"].to_string(), "monitor"])
            .stdout(std::fs::File::create(out).unwrap())
            .spawn()
            .expect("redis-cli (installed with redis-server)");
        // MONITOR answers OK once it is watching.
        let hang_guard = Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(out).unwrap_or_default().is_empty() {
            assert!(Instant::now() < hang_guard, "redis-cli monitor did not start");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child
    }
}

/// Limiter script calls in a MONITOR capture: EVAL/EVALSHA on a rate-limit key.
fn limiter_calls(capture: &str) -> usize {
    capture
        .lines()
        .map(str::to_ascii_lowercase)
        .filter(|l| l.contains("\"evalsha\"") || l.contains("\"eval\""))
        .filter(|l| l.contains("portcullis:rl:"))
        .count()
}

/// Counts shared by the clients of one test (one thread: `Cell`s).
#[derive(Default)]
struct Tally {
    admitted: std::cell::Cell<usize>,
    refused: std::cell::Cell<usize>,
}

/// Posts with `token` to `base` until `stop` is set, counting into `tally`.
async fn hammer(base: String, token: String, stop: std::rc::Rc<std::cell::Cell<bool>>, tally: std::rc::Rc<Tally>) {
    let mut id = 0;
    while !stop.get() {
        let r = post(&base, &token, id).await;
        id += 1;
        match r.status.as_u16() {
            200 => tally.admitted.set(tally.admitted.get() + 1),
            429 => tally.refused.set(tally.refused.get() + 1),
            s => panic!("unexpected status {s}: {}", String::from_utf8_lossy(&r.body)),
        }
        assert!(r.headers.get("portcullis-ratelimit-scope").is_none(), "Redis is up: no fallback");
    }
}

#[tokio::test]
async fn three_processes_spend_one_leased_limit_and_a_killed_one_adds_nothing() {
    use std::cell::Cell;
    use std::rc::Rc;
    let up = DemoUpstream::start_open().await;
    let c = LocalCluster::up(3, "cluster", &up.url);
    let admin = c.admin_token();
    // 1200 a minute: large enough for leases (each instance holds at most
    // 1200 / (50 x live instances) ahead: 8 with 3, 24 if it saw only itself),
    // small enough for a debug build on a busy machine to exceed.
    let r = send(
        Method::POST,
        &format!("{}/v1/workspaces/demo/tokens", c.instance(0, "admin")),
        &[("authorization", &format!("Bearer {admin}"))],
        r#"{"name":"lease","requests_per_minute":1200}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    let t = r.json()["token"].as_str().unwrap().to_string();
    let capture = c.dir.path().join("monitor.log");
    let mut monitor = c.monitor(&capture);
    let started = Instant::now();
    let tally = Rc::new(Tally::default());
    let stop: Vec<Rc<Cell<bool>>> = (0..3).map(|_| Rc::new(Cell::new(false))).collect();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            // Four clients per instance.
            let mut clients = Vec::new();
            for (i, s) in stop.iter().enumerate() {
                for _ in 0..4 {
                    let f = hammer(c.instance(i, "data"), t.clone(), Rc::clone(s), Rc::clone(&tally));
                    clients.push(tokio::task::spawn_local(f));
                }
            }
            // Instance 3 dies with its lease once a third of the limit is
            // in; the others go on until the shared bucket has refused 300.
            // (Its clients finish their requests first: a request cut by the
            // kill is the client's error, not the limiter's.)
            let hang_guard = Instant::now() + std::time::Duration::from_secs(120);
            while tally.admitted.get() < 400 {
                assert!(Instant::now() < hang_guard, "never admitted 400");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            stop[2].set(true);
            for h in clients.split_off(8) {
                h.await.unwrap();
            }
            c.kill_instance(2);
            while tally.refused.get() < 300 {
                assert!(
                    Instant::now() < hang_guard,
                    "never limited: admitted {}, refused {}",
                    tally.admitted.get(),
                    tally.refused.get()
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            stop[0].set(true);
            stop[1].set(true);
            for h in clients {
                h.await.unwrap();
            }
        })
        .await;
    let (admitted, refused) = (tally.admitted.get(), tally.refused.get());
    let refill = (started.elapsed().as_secs_f64() * 20.0).ceil() as usize;
    // Every admitted request was granted by the shared bucket first: from a
    // full bucket, never more than the limit and its refill, whatever the
    // dead instance held.
    assert!(
        admitted <= 1200 + refill,
        "admitted {admitted} (limit 1200, refill {refill}, refused {refused})"
    );
    // And no more lost than the leases held when the bucket ran dry (at most
    // 24 per instance, the dead one's included).
    assert!(admitted + 3 * 24 >= 1200, "admitted only {admitted} of 1200");
    let _ = monitor.kill();
    let _ = monitor.wait();
    let captured = std::fs::read_to_string(&capture).unwrap();
    let calls = limiter_calls(&captured);
    eprintln!("leased limit over 3 processes: admitted {admitted}, refused {refused}, refill allowance {refill}, limiter calls {calls}");
    assert!(
        calls > 0,
        "the shared limit was never consulted: {} lines captured, first: {:?}",
        captured.lines().count(),
        captured.lines().take(5).collect::<Vec<_>>()
    );
    assert!(
        calls * 3 < admitted + refused,
        "{calls} script calls for {} requests: not leased",
        admitted + refused
    );
}
