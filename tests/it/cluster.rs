//! Cluster mode: several gateway instances sharing a private redis-server.
//! Instances run in this process, each with its own state, index, limiter
//! and listeners, exactly as separate processes would (they share nothing but
//! Redis); `deploy/local-cluster.sh` runs them as processes behind a load
//! balancer (see `lb.rs`).

use std::path::Path;
use std::time::{Duration, Instant};

use http::Method;
use portcullis::app::{self, Running};

use portcullis::config::Config;
use portcullis::token::{TokenKind, now_unix};
use serde_json::json;

use crate::harness::*;

struct Cluster {
    instances: Vec<Option<Running>>,
    admin_token: String,
    config_text: String,
}

fn cluster_config(redis_url: &str, upstream_url: &str, scope: &str, grace_ms: u64, poll_ms: u64) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_ms = 1000\nrevocation_poll_ms = {poll_ms}\n\
         [store]\nbackend = \"redis\"\nurl = \"{redis_url}\"\nrevocation_grace_ms = {grace_ms}\ntimeout_ms = 500\n\
         [limits]\nrequests_per_minute = 120\nscope = \"{scope}\"\n\
         [[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"main\"\nurl = \"{upstream_url}\"\nheaders = {{ Authorization = \"Bearer {DEMO_KEY}\" }}\n"
    )
}

impl Cluster {
    async fn start(n: usize, config_text: String) -> Self {
        let mut instances = Vec::new();
        for _ in 0..n {
            instances.push(Some(start_instance(&config_text).await));
        }
        let state = &instances[0].as_ref().unwrap().state;
        let admin_token = crate::harness::bootstrap_admin(state, "admin").await;
        let c = Cluster {
            instances,
            admin_token,
            config_text,
        };
        c.wait_ready().await;
        c
    }

    fn get(&self, i: usize) -> &Running {
        self.instances[i].as_ref().expect("instance running")
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for r in self.instances.iter().flatten() {
            while !r.state.verifier.is_trusted() {
                assert!(Instant::now() < deadline, "instance never subscribed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    async fn post(&self, i: usize, token: &str, id: i64) -> Resp {
        let url = format!("http://{}/ws/demo", self.get(i).data_addr);
        send(
            Method::POST,
            &url,
            &[("authorization", &format!("Bearer {token}")), ("content-type", "application/json")],
            echo_call(id, "x"),
        )
        .await
    }

    async fn admin(&self, i: usize, method: Method, path: &str, body: &str) -> Resp {
        let url = format!("http://{}{path}", self.get(i).admin_addr);
        send(
            method,
            &url,
            &[("authorization", &format!("Bearer {}", self.admin_token))],
            body.to_string(),
        )
        .await
    }

    async fn create_token(&self, i: usize) -> (String, String) {
        self.create_token_with(i, r#"{"name":"t"}"#).await
    }

    async fn create_token_with(&self, i: usize, body: &str) -> (String, String) {
        let r = self.admin(i, Method::POST, "/v1/workspaces/demo/tokens", body).await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        (v["token"].as_str().unwrap().into(), v["info"]["id"].as_str().unwrap().into())
    }

    async fn revoke(&self, i: usize, id: &str) {
        let r = self.admin(i, Method::DELETE, &format!("/v1/workspaces/demo/tokens/{id}"), "").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }

    async fn stop(&mut self, i: usize) {
        if let Some(r) = self.instances[i].take() {
            r.shutdown();
            r.wait().await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in self.instances.iter().flatten() {
            r.shutdown();
        }
    }
}

/// Wall-clock milliseconds, the clock the instances judge the grace by.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn start_instance(text: &str) -> Running {
    let config = Config::from_toml(Path::new("cluster.toml"), text, &|_| None).expect("valid cluster config");
    app::start(config).await.expect("instance starts")
}

#[tokio::test]
async fn revocation_on_one_instance_is_refused_by_every_instance_on_the_next_request() {
    let redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let c = Cluster::start(3, cluster_config(&redis.url(), &up.url, "instance", 0, 250)).await;
    for trial in 0..200 {
        let creator = trial % 3;
        let revoker = (trial + 1) % 3;
        let (t, id) = c.create_token(creator).await;
        // Used (and so cached) everywhere first.
        for i in 0..3 {
            assert_eq!(
                c.post(i, &t, trial as i64).await.status,
                200,
                "trial {trial}: new token works on instance {i}"
            );
        }
        c.revoke(revoker, &id).await;
        for i in 0..3 {
            let r = c.post(i, &t, trial as i64).await;
            assert_eq!(
                r.status, 401,
                "trial {trial}: instance {i} accepted a token revoked on instance {revoker}"
            );
        }
    }
}

#[tokio::test]
async fn killed_subscriptions_never_let_a_revoked_token_through() {
    let redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let c = Cluster::start(3, cluster_config(&redis.url(), &up.url, "instance", 0, 250)).await;
    let mut conn = redis.conn().await;
    for trial in 0..10 {
        let (t, id) = c.create_token(0).await;
        for i in 0..3 {
            assert_eq!(c.post(i, &t, 1).await.status, 200);
        }
        // Every subscriber connection is cut; the revocation push is lost.
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(killed >= 1, "trial {trial}: no subscriber was connected");
        c.revoke(trial % 3, &id).await;
        // From the moment the revoke call returned, nobody accepts it.
        let until = Instant::now() + Duration::from_millis(600);
        while Instant::now() < until {
            for i in 0..3 {
                let r = c.post(i, &t, 2).await;
                assert!(
                    r.status == 401 || r.status == 503,
                    "trial {trial}: instance {i} answered {} for a revoked token",
                    r.status
                );
            }
        }
        c.wait_ready().await;
    }
    // And the instances resubscribed: every instance's subscription is back
    // on the invalidation channel, so a revocation is pushed to all three
    // (the revoke call does not have to wait out a poll interval).
    let mut subscribed = 0;
    for _ in 0..500 {
        let v: Vec<redis::Value> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(portcullis::store::redis::channel())
            .query_async(&mut conn)
            .await
            .unwrap();
        subscribed = match v.get(1) {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("PUBSUB NUMSUB answered {other:?}"),
        };
        if subscribed == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(subscribed, 3, "the instances never resubscribed");
    let (t, id) = c.create_token(0).await;
    for i in 0..3 {
        assert_eq!(c.post(i, &t, 3).await.status, 200);
    }
    c.revoke(1, &id).await;
    for i in 0..3 {
        assert_eq!(c.post(i, &t, 4).await.status, 401);
    }
}

#[tokio::test]
async fn a_truncated_revocation_log_flushes_the_index() {
    let redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let c = Cluster::start(1, cluster_config(&redis.url(), &up.url, "instance", 0, 100)).await;
    let (t, id) = c.create_token(0).await;
    assert_eq!(c.post(0, &t, 1).await.status, 200);
    // A revocation the instance never hears of, whose log entry is gone:
    // written behind the gateway's back, as after a long partition.
    let mut conn = redis.conn().await;
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(format!("portcullis:token:{id}"))
        .arg("revoked_at")
        .arg(now_unix())
        .ignore()
        .cmd("INCR")
        .arg("portcullis:revocations:seq")
        .ignore()
        .cmd("DEL")
        .arg("portcullis:revocations")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = c.post(0, &t, 2).await;
        if r.status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the index was never flushed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn redis_restart_keeps_revocations_and_instances_recover() {
    let mut redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let c = Cluster::start(2, cluster_config(&redis.url(), &up.url, "instance", 0, 100)).await;
    let (kept, _) = c.create_token(0).await;
    let (gone, gone_id) = c.create_token(1).await;
    c.revoke(0, &gone_id).await;
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..2 {
        loop {
            let r = c.post(i, &kept, 1).await;
            if r.status == 200 {
                break;
            }
            assert_eq!(r.status, 503, "while reconnecting an instance fails closed");
            assert!(Instant::now() < deadline, "instance {i} never recovered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_unauthorized(&c.post(i, &gone, 2).await, false);
    }
}

#[tokio::test]
async fn redis_down_fails_closed() {
    let mut redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let c = Cluster::start(2, cluster_config(&redis.url(), &up.url, "instance", 0, 100)).await;
    let (t, _) = c.create_token(0).await;
    for i in 0..2 {
        assert_eq!(c.post(i, &t, 1).await.status, 200);
    }
    redis.kill();
    // Cached or not, validity cannot be confirmed: 503 with the contract's body.
    let deadline = Instant::now() + Duration::from_secs(3);
    for i in 0..2 {
        loop {
            let r = c.post(i, &t, 2).await;
            if r.status == 503 {
                assert_eq!(rpc_error(&r), (-32603, "Service unavailable".into()));
                assert!(r.headers.contains_key("retry-after"));
                break;
            }
            // Until the dropped subscription is noticed (milliseconds), the
            // index is still trusted: nobody could have revoked meanwhile,
            // since revocations go through Redis.
            assert_eq!(r.status, 200);
            assert!(Instant::now() < deadline, "instance {i} kept trusting its cache");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ready = send(Method::GET, &format!("http://{}/readyz", c.get(i).admin_addr), &[], "").await;
        assert_eq!(ready.status, 503);
    }
}

#[tokio::test]
async fn the_grace_period_bounds_acceptance_during_an_outage() {
    let mut redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let c = Cluster::start(1, cluster_config(&redis.url(), &up.url, "cluster", 1500, 100)).await;
    let (t, _) = c.create_token(0).await;
    assert_eq!(c.post(0, &t, 1).await.status, 200);
    redis.kill();
    // The grace counts from the instance's last confirmed sync, which cannot
    // move once Redis is gone. Each answer is judged against that instant on
    // the instance's own clock: a request sent after the grace ended must
    // not be accepted, and the first refusal must not come before it ended.
    // (A slow machine only delays answers, which neither check mistakes for
    // a violation.)
    let mut saw_fallback = false;
    let mut accepted_sent_at = Vec::new();
    // A guard against a hang, not a claim about timing.
    let hang_guard = Instant::now() + Duration::from_secs(10);
    let first_refusal_at = loop {
        let sent_at = wall_ms();
        let r = c.post(0, &t, 2).await;
        if r.status == 503 {
            break wall_ms();
        }
        assert_eq!(r.status, 200);
        accepted_sent_at.push(sent_at);
        saw_fallback |= r
            .headers
            .get("portcullis-ratelimit-scope")
            .is_some_and(|v| v == "instance-fallback");
        assert!(Instant::now() < hang_guard, "still accepted long after the grace");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let confirmed = c.get(0).state.verifier.confirmed_at_ms();
    assert!(confirmed > 0, "the instance was never in sync");
    let grace_end = confirmed + 1500;
    assert!(
        first_refusal_at >= grace_end,
        "grace ended early: refused {} ms after the last confirmed sync",
        first_refusal_at - confirmed
    );
    assert!(!accepted_sent_at.is_empty(), "nothing was accepted on grace");
    for s in &accepted_sent_at {
        assert!(
            *s <= grace_end,
            "a request sent {} ms after the last confirmed sync was accepted, beyond the 1500 ms grace",
            s - confirmed
        );
    }
    // Once refused, refused: the grace does not come back while Redis is down.
    for n in 0..3 {
        assert_eq!(c.post(0, &t, 10 + n).await.status, 503);
    }
    assert!(saw_fallback, "the limiter never reported its fallback");
    let metrics = send(Method::GET, &format!("http://{}/metrics", c.get(0).admin_addr), &[], "").await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("portcullis_rate_limit_fallbacks_total "))
        .unwrap();
    assert!(!line.ends_with(" 0"), "{line}");
    // An unknown token is never accepted on grace.
    let unknown = portcullis::token::generate(TokenKind::Workspace).raw;
    assert_eq!(c.post(0, &unknown, 3).await.status, 503);
}

#[tokio::test]
async fn a_restarted_instance_rebuilds_its_state_from_redis() {
    let redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let mut c = Cluster::start(2, cluster_config(&redis.url(), &up.url, "instance", 0, 100)).await;
    let (kept, _) = c.create_token(0).await;
    let (gone, gone_id) = c.create_token(0).await;
    c.stop(1).await;
    c.revoke(0, &gone_id).await;
    c.instances[1] = Some(start_instance(&c.config_text).await);
    c.wait_ready().await;
    assert_eq!(c.post(1, &kept, 1).await.status, 200);
    assert_unauthorized(&c.post(1, &gone, 2).await, false);
}

#[tokio::test]
async fn the_cluster_scope_shares_one_limit_across_instances() {
    let redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let c = Cluster::start(3, cluster_config(&redis.url(), &up.url, "cluster", 0, 250)).await;
    let (t, _) = c.create_token(0).await;
    let started = Instant::now();
    let mut admitted = 0;
    let mut limited = None;
    for n in 0..300 {
        let r = c.post(n % 3, &t, n as i64).await;
        match r.status.as_u16() {
            200 => admitted += 1,
            429 => limited = Some(r),
            s => panic!("unexpected {s}"),
        }
    }
    let refill = (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    assert!(
        admitted >= 120 && admitted <= 120 + refill,
        "cluster scope admitted {admitted} of 300 (refill {refill})"
    );
    let r = limited.expect("some requests were limited");
    assert_eq!(rpc_error(&r), (-32000, "Rate limit exceeded".into()));
    assert!(r.headers.get("portcullis-ratelimit-scope").is_none(), "Redis was up: no fallback");
}

#[tokio::test]
async fn the_cluster_scope_announces_retry_after_and_recovers_after_it() {
    let redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let c = Cluster::start(3, cluster_config(&redis.url(), &up.url, "cluster", 0, 250)).await;
    // 60 a minute: a burst of 60, one more each second, shared by the cluster.
    let (t, _) = c.create_token_with(0, r#"{"name":"t","requests_per_minute":60}"#).await;
    let mut n = 0;
    let limited = loop {
        let r = c.post(n % 3, &t, n as i64).await;
        if r.status == 429 {
            break r;
        }
        assert_eq!(r.status, 200);
        n += 1;
        assert!(n <= 200, "never limited");
    };
    assert!(n >= 60, "the shared burst of 60 was cut short at {n}");
    // The contract's 429, headers included, exactly as on a single node.
    assert_eq!(
        limited.json(),
        json!({"jsonrpc": "2.0", "id": n, "error": {"code": -32000, "message": "Rate limit exceeded", "data": {"retryAfter": 1}}})
    );
    assert_eq!(limited.header("retry-after"), "1");
    assert_eq!(limited.header("ratelimit-policy"), "\"per-token\";q=60;w=60");
    assert_eq!(limited.header("ratelimit"), "\"per-token\";r=0;t=1");
    assert!(
        limited.headers.get("portcullis-ratelimit-scope").is_none(),
        "Redis was up: no fallback"
    );
    // Every instance refuses now: the limit is the cluster's, not one instance's.
    for i in 0..3 {
        let r = c.post(i, &t, 1000 + i as i64).await;
        assert_eq!(r.status, 429, "instance {i} admitted an over-limit request");
    }
    // A client that waits as told is admitted again, on any instance.
    let wait: u64 = limited.header("retry-after").parse().unwrap();
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(c.post((n + 1) % 3, &t, 2000).await.status, 200, "not admitted after Retry-After");
}

#[tokio::test]
async fn the_instance_scope_admits_n_times_the_limit_as_documented() {
    let redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let c = Cluster::start(3, cluster_config(&redis.url(), &up.url, "instance", 0, 250)).await;
    let (t, _) = c.create_token(0).await;
    // 150 requests per instance against its own limit of 120: each instance
    // admits its burst and refuses the rest, and together they admit about
    // three times the limit (more than the cluster scope's one limit, less
    // than no limit at all).
    let started = Instant::now();
    let mut admitted = [0usize; 3];
    let mut refused = [0usize; 3];
    for n in 0..450 {
        match c.post(n % 3, &t, n as i64).await.status.as_u16() {
            200 => admitted[n % 3] += 1,
            429 => refused[n % 3] += 1,
            s => panic!("unexpected {s}"),
        }
    }
    let refill = (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    for i in 0..3 {
        assert!(
            (120..=120 + refill).contains(&admitted[i]),
            "instance {i} admitted {} of 150 (limit 120, refill {refill})",
            admitted[i]
        );
        assert!(refused[i] > 0, "instance {i} never limited");
    }
}

#[tokio::test]
async fn readiness_follows_the_subscription() {
    let redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let c = Cluster::start(1, cluster_config(&redis.url(), &up.url, "instance", 0, 100)).await;
    let readyz = format!("http://{}/readyz", c.get(0).admin_addr);
    let ready = send(Method::GET, &readyz, &[], "").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["revocations"], "in_sync");
    // Only the subscription is lost: Redis stays up (the store answers), but
    // refuses new connections, so the instance cannot resubscribe.
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    let unready = poll_readyz(&readyz, 503).await;
    assert_eq!(
        unready.json(),
        json!({"ready": false, "store": "ok", "revocations": "resynchronising"})
    );
    // Connections are allowed again: the instance resubscribes, catches up
    // and is ready again.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg(1000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let back = poll_readyz(&readyz, 200).await;
    assert_eq!(back.json(), json!({"ready": true, "store": "ok", "revocations": "in_sync"}));
}

/// Polls `/readyz` until it answers `status` (bounded: a hang guard).
async fn poll_readyz(url: &str, status: u16) -> Resp {
    for _ in 0..1000 {
        let r = send(Method::GET, url, &[], "").await;
        if r.status == status {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{url} never answered {status}");
}
