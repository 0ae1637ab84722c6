//! Usage analytics end to end: requests through the real gateway, counts
//! flushed to the real store (SQLite; Redis shared by two instances), read
//! back through `GET /v1/workspaces/{ws}/usage` and `portcullis workspace
//! usage`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use http::Method;
use portcullis::store::TokenStore;
use portcullis::store::sqlite::SqliteStore;
use portcullis::store::usage::{Bucket, Counts, FOLDED, GroupBy, Increment, NONE, Retention, UsageKey, UsageQuery};
use serde_json::{Value, json};

use crate::harness::*;

/// Counts reach the store within two intervals.
const FAST_FLUSH: &str = "[usage]\nflush_interval_ms = 50\n";

async fn usage(gw: &Gateway, query: &str) -> Resp {
    gw.admin_call(Method::GET, &format!("/v1/workspaces/demo/usage{query}"), None).await
}

/// Totals per key over every bucket: key → [requests, errors, rate_limited].
fn totals(v: &Value) -> BTreeMap<String, [u64; 3]> {
    let mut out: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for b in v["buckets"].as_array().unwrap() {
        let key = match &b["key"] {
            Value::Null => "null".to_owned(),
            k => k.as_str().unwrap().to_owned(),
        };
        let t = out.entry(key).or_default();
        t[0] += b["requests"].as_u64().unwrap();
        t[1] += b["errors"].as_u64().unwrap();
        t[2] += b["rate_limited"].as_u64().unwrap();
    }
    out
}

/// Polls until `expected` requests are counted in total, then a little
/// longer to catch any extra count arriving late.
async fn settled(gw: &Gateway, query: &str, expected: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = usage(gw, query).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let total: u64 = totals(&r.json()).values().map(|t| t[0]).sum();
        if total >= expected {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return usage(gw, query).await.json();
        }
        assert!(Instant::now() < deadline, "only {total} of {expected} requests counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn call(id: i64, tool: &str) -> String {
    rpc(
        json!(id),
        "tools/call",
        json!({"name": tool, "arguments": {"text": "secret-argument"}}),
    )
}

#[tokio::test]
async fn requests_are_counted_per_token_member_server_and_tool() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).raw(FAST_FLUSH).start().await;
    let (a, a_id) = gw.create_token("demo", json!({"member_id": "alice"})).await;
    let (b, b_id) = gw.create_token("demo", json!({"member_id": "bob"})).await;
    let (c, c_id) = gw
        .create_token("demo", json!({"member_id": "alice", "requests_per_minute": 2}))
        .await;
    let (d, d_id) = gw.create_token("demo", json!({})).await;

    for i in 0..3 {
        assert_eq!(gw.post("demo", Some(&a), call(i, "echo")).await.status, 200);
    }
    assert_eq!(gw.post("demo", Some(&a), rpc(json!(9), "tools/list", json!({}))).await.status, 200);
    // A tool name that is not a plausible name is counted, as "other".
    assert_eq!(gw.post("demo", Some(&a), call(10, "bad name <script>")).await.status, 200);
    assert_eq!(gw.post("demo", Some(&b), call(1, "add")).await.status, 200);
    // Not JSON-RPC: an error, with no method to count it under.
    assert_eq!(gw.post("demo", Some(&b), r#"{"hello":1}"#).await.status, 400);
    let mut limited = 0;
    for i in 0..4 {
        let s = gw.post("demo", Some(&c), call(i, "echo")).await.status;
        assert!(s == 200 || s == 429, "{s}");
        limited += u64::from(s == 429);
    }
    assert_eq!(limited, 2);
    assert_eq!(gw.post("demo", Some(&d), call(1, "echo")).await.status, 200);
    // Not counted: no token, and a token of no workspace here.
    assert_eq!(gw.post("demo", None, call(1, "echo")).await.status, 401);
    assert_eq!(gw.post("demo", Some(&gw.admin_token.clone()), call(1, "echo")).await.status, 401);

    let by_token = settled(&gw, "?group_by=token&bucket=minute", 12).await;
    let t = totals(&by_token);
    assert_eq!(t.len(), 4, "{by_token}");
    assert_eq!(t[&a_id], [5, 0, 0]);
    assert_eq!(t[&b_id], [2, 1, 0]);
    assert_eq!(t[&c_id], [4, 0, 2]);
    assert_eq!(t[&d_id], [1, 0, 0]);
    assert_eq!(by_token["folded"], 0);
    // Buckets are minute-aligned RFC 3339 starts.
    for b in by_token["buckets"].as_array().unwrap() {
        assert!(b["start"].as_str().unwrap().ends_with(":00Z"), "{b}");
    }

    let by_member = usage(&gw, "?group_by=member&bucket=hour").await.json();
    let t = totals(&by_member);
    assert_eq!(t["alice"], [9, 0, 2]);
    assert_eq!(t["bob"], [2, 1, 0]);
    assert_eq!(t["null"], [1, 0, 0], "a token without a member: key null");
    assert_eq!(t.len(), 3);

    let by_server = usage(&gw, "?group_by=server&bucket=day").await.json();
    assert_eq!(totals(&by_server), BTreeMap::from([("main".to_owned(), [12, 1, 2])]));

    let by_tool = usage(&gw, "?group_by=tool").await.json();
    let t = totals(&by_tool);
    assert_eq!(t["echo"], [8, 0, 2]);
    assert_eq!(t["tools/list"], [1, 0, 0]);
    assert_eq!(t["add"], [1, 0, 0]);
    assert_eq!(t["other"], [1, 0, 0]);
    assert_eq!(t["null"], [1, 1, 0]);
    assert_eq!(t.len(), 5);
    assert_eq!(by_tool["folded"], 1);

    // Nothing secret reached the store: no raw token, no argument, no
    // rejected name.
    let db = std::fs::read(&gw.db).unwrap_or_default();
    let wal = std::fs::read(gw.db.with_extension("db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        let text = String::from_utf8_lossy(bytes);
        for secret in [&a, &b, &c, &d] {
            assert!(!text.contains(&secret[4..]), "a raw token reached the store");
        }
        assert!(!text.contains("secret-argument"));
        assert!(!text.contains("<script>"));
    }
}

#[tokio::test]
async fn bad_usage_queries_get_contract_errors() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).workspace("other", &up.url, "").raw(FAST_FLUSH).start().await;
    for (query, fragment) in [
        ("?from=yesterday", "`from` must be an RFC 3339 time"),
        ("?to=2026-13-01T00:00:00Z", "`to` must be an RFC 3339 time"),
        ("?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "`from` must be before `to`"),
        ("?from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "`from` must be before `to`"),
        ("?bucket=week", "`bucket` must be minute, hour or day"),
        ("?group_by=email", "`group_by` must be token, member, server or tool"),
        ("?limit=5", "invalid query string"),
    ] {
        let r = usage(&gw, query).await;
        assert_eq!(r.status, 400, "{query}");
        let v = r.json();
        assert_eq!(v["error"]["code"], "bad_request", "{query}");
        assert!(v["error"]["message"].as_str().unwrap().contains(fragment), "{query}: {v}");
    }
    let r = gw.admin_call(Method::GET, "/v1/workspaces/nope/usage", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "workspace_not_found");
    // No admin token; a workspace token; an admin token of another workspace.
    let r = send(Method::GET, &gw.admin_url("/v1/workspaces/demo/usage"), &[], "").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    let (wt, _) = gw.create_token("demo", json!({})).await;
    assert_eq!(
        gw.admin_call_as(&wt, Method::GET, "/v1/workspaces/demo/usage", None).await.status,
        401
    );
    let state = gw.state();
    let req = portcullis::auth::lifecycle::NewTokenRequest {
        name: "scoped".into(),
        kind: Some(portcullis::token::TokenKind::Admin),
        workspace: Some("other".into()),
        created_by: "bootstrap".into(),
        ..Default::default()
    };
    let (scoped, _) = portcullis::auth::lifecycle::create(Some(&state.verifier), &state.store, req, portcullis::token::now_unix())
        .await
        .unwrap();
    let r = gw.admin_call_as(&scoped, Method::GET, "/v1/workspaces/demo/usage", None).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "forbidden");
    let r = gw.admin_call_as(&scoped, Method::GET, "/v1/workspaces/other/usage", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"buckets": [], "folded": 0}));
}

#[tokio::test]
async fn cardinality_bounds_fold_values_into_other_and_count_them() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url)
        .raw("[usage]\nflush_interval_ms = 50\nmax_tools_per_server = 2\nmax_members_per_workspace = 1\n")
        .start()
        .await;
    let (a, _) = gw.create_token("demo", json!({"member_id": "alice"})).await;
    let (b, _) = gw.create_token("demo", json!({"member_id": "bob"})).await;
    // One at a time, flushed in between, so which values came first (and
    // were admitted) is known.
    for (i, tool) in ["t1", "t2", "t3", "t4", "t4"].iter().enumerate() {
        assert_eq!(gw.post("demo", Some(&a), call(i as i64, tool)).await.status, 200);
        settled(&gw, "?group_by=tool", i as u64 + 1).await;
    }
    assert_eq!(gw.post("demo", Some(&b), call(9, "t1")).await.status, 200);
    let by_tool = settled(&gw, "?group_by=tool", 6).await;
    let t = totals(&by_tool);
    assert_eq!(t["t1"][0], 2);
    assert_eq!(t["t2"][0], 1);
    assert_eq!(t["other"][0], 3);
    assert_eq!(t.len(), 3);
    assert_eq!(by_tool["folded"], 3);
    let by_member = usage(&gw, "?group_by=member").await.json();
    let t = totals(&by_member);
    assert_eq!(t["alice"][0], 5);
    assert_eq!(t["other"][0], 1);
    assert_eq!(by_member["folded"], 1);
    // Folded requests are counted once each, whichever dimensions folded.
    let r = gw.admin_call(Method::GET, "/metrics", None).await;
    let metrics = String::from_utf8_lossy(&r.body).into_owned();
    assert!(metrics.contains("portcullis_usage_folded_total 4"), "{metrics}");
}

#[tokio::test]
async fn counts_are_flushed_at_shutdown_and_usage_can_be_turned_off() {
    let up = DemoUpstream::start().await;
    // A flush interval longer than the test: only the shutdown flush writes.
    let mut gw = Setup::new(&up.url).raw("[usage]\nflush_interval_ms = 30000\n").start().await;
    let (a, a_id) = gw.create_token("demo", json!({})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..3 {
        assert_eq!(gw.post("demo", Some(&a), call(i, "echo")).await.status, 200);
    }
    gw.restart().await;
    let t = totals(&usage(&gw, "?group_by=token").await.json());
    assert_eq!(t[&a_id], [3, 0, 0]);

    let gw = Setup::new(&up.url)
        .raw("[usage]\nenabled = false\nflush_interval_ms = 50\n")
        .start()
        .await;
    let (a, _) = gw.create_token("demo", json!({})).await;
    assert_eq!(gw.post("demo", Some(&a), call(1, "echo")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(usage(&gw, "").await.json(), json!({"buckets": [], "folded": 0}));
}

fn key(token: &str, member: &str, tool: &str) -> UsageKey {
    UsageKey {
        workspace: "demo".into(),
        token_id: token.into(),
        member_id: member.into(),
        server: "main".into(),
        tool: tool.into(),
    }
}

fn inc(minute: i64, k: UsageKey, requests: u64) -> Increment {
    Increment {
        minute,
        key: k,
        counts: Counts {
            requests,
            errors: 1,
            rate_limited: 0,
        },
    }
}

#[tokio::test]
async fn minute_buckets_are_pruned_after_their_retention_and_hours_keep_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("u.db")).unwrap();
    let u = store.usage().unwrap();
    let retention = Retention {
        minute: 48 * 3600,
        hour: 90 * 86_400,
    };
    let now = 1_800_000_000 - 1_800_000_000 % 86_400 + 12 * 3600;
    let old = now - 3 * 86_400; // beyond the minute retention
    let ancient = now - 100 * 86_400; // beyond the hour retention
    u.add_usage(
        &[
            inc(old, key("tkn_a", "alice", "echo"), 2),
            inc(old + 60, key("tkn_a", "alice", "echo"), 3),
            inc(now - 120, key("tkn_b", NONE, "add"), 4),
            inc(ancient, key("tkn_a", "alice", "echo"), 7),
        ],
        retention,
    )
    .await
    .unwrap();
    // Adding again adds (every instance adds to the same buckets).
    u.add_usage(&[inc(now - 120, key("tkn_b", NONE, "add"), 1)], retention)
        .await
        .unwrap();
    let q = |bucket, group_by, from| UsageQuery {
        workspace: "demo",
        from,
        to: now,
        bucket,
        group_by,
    };
    let minutes = u.query_usage(&q(Bucket::Minute, GroupBy::Token, ancient - 60)).await.unwrap();
    assert_eq!(minutes.len(), 4);
    let removed = u.prune_usage(now, retention).await.unwrap();
    // Three old minute rows and the ancient hour row.
    assert_eq!(removed, 4);
    let minutes = u.query_usage(&q(Bucket::Minute, GroupBy::Token, ancient - 60)).await.unwrap();
    assert_eq!(minutes.len(), 1);
    assert_eq!(minutes[0].key, "tkn_b");
    assert_eq!(
        minutes[0].counts,
        Counts {
            requests: 5,
            errors: 2,
            rate_limited: 0
        }
    );
    // The hour of the two old minutes holds both (the roll-up is done as
    // counts arrive), and a day bucket sums its hours.
    let hours = u.query_usage(&q(Bucket::Hour, GroupBy::Member, ancient - 60)).await.unwrap();
    let old_hour = old - old % 3600;
    assert!(
        hours
            .iter()
            .any(|r| r.start == old_hour && r.key == "alice" && r.counts.requests == 5),
        "{hours:?}"
    );
    assert!(!hours.iter().any(|r| r.counts.requests == 7), "the ancient hour is pruned");
    let days = u.query_usage(&q(Bucket::Day, GroupBy::Tool, ancient - 60)).await.unwrap();
    assert_eq!(days.iter().map(|r| r.counts.requests).sum::<u64>(), 10);
    assert!(days.iter().all(|r| r.start % 86_400 == 0));
    // A range that starts mid-minute includes that minute's bucket.
    let part = u.query_usage(&q(Bucket::Minute, GroupBy::Token, now - 90)).await.unwrap();
    assert_eq!(part.len(), 1);
    assert_eq!(FOLDED.len(), 1);
}

#[tokio::test]
async fn two_instances_add_to_the_same_redis_buckets() {
    let redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace_ms = 1000\n\
         [store]\nbackend = \"redis\"\nurl = \"{}\"\ntimeout_ms = 500\n\
         [usage]\nflush_interval_ms = 50\n\
         [[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"main\"\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer {DEMO_KEY}\" }}\n",
        redis.url(),
        up.url
    );
    let start = || async {
        let config = portcullis::config::Config::from_toml(Path::new("cluster.toml"), &text, &|_| None).unwrap();
        portcullis::app::start(config).await.unwrap()
    };
    let (one, two) = (start().await, start().await);
    let admin = crate::harness::bootstrap_admin(&one.state, "admin").await;
    let auth = format!("Bearer {admin}");
    let r = send(
        Method::POST,
        &format!("http://{}/v1/workspaces/demo/tokens", one.admin_addr),
        &[("authorization", &auth)],
        r#"{"name":"t","member_id":"alice"}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    let (token, id) = (
        r.json()["token"].as_str().unwrap().to_owned(),
        r.json()["info"]["id"].as_str().unwrap().to_owned(),
    );
    let bearer = format!("Bearer {token}");
    for (i, addr) in [(0, one.data_addr), (1, two.data_addr), (2, two.data_addr)] {
        let r = send(
            Method::POST,
            &format!("http://{addr}/ws/demo"),
            &[("authorization", &bearer), ("content-type", "application/json")],
            call(i, "echo"),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    // Either instance answers with the sum of both.
    let deadline = Instant::now() + Duration::from_secs(10);
    for addr in [one.admin_addr, two.admin_addr] {
        loop {
            let r = send(
                Method::GET,
                &format!("http://{addr}/v1/workspaces/demo/usage?group_by=token&bucket=minute"),
                &[("authorization", &auth)],
                "",
            )
            .await;
            assert_eq!(r.status, 200);
            let t = totals(&r.json());
            if t.get(&id).is_some_and(|c| c[0] == 3) {
                let by_tool = send(
                    Method::GET,
                    &format!("http://{addr}/v1/workspaces/demo/usage?group_by=tool&bucket=day"),
                    &[("authorization", &auth)],
                    "",
                )
                .await;
                assert_eq!(totals(&by_tool.json())["echo"], [3, 0, 0]);
                break;
            }
            assert!(t.get(&id).is_none_or(|c| c[0] < 3), "{t:?}");
            assert!(Instant::now() < deadline, "{t:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Buckets expire by themselves.
    let mut conn = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("portcullis:usage:*").query_async(&mut conn).await.unwrap();
    // One minute and one hour bucket (two of each if the calls straddled a
    // minute or an hour).
    assert!((2..=4).contains(&keys.len()), "{keys:?}");
    for k in keys {
        let ttl: i64 = redis::cmd("TTL").arg(&k).query_async(&mut conn).await.unwrap();
        assert!(ttl > 0, "{k} has no expiry");
    }
    for r in [one, two] {
        r.shutdown();
        r.wait().await;
    }
}

#[tokio::test]
async fn cli_workspace_usage_prints_a_table_and_json() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).raw(FAST_FLUSH).start().await;
    let (a, _) = gw.create_token("demo", json!({"member_id": "alice"})).await;
    for i in 0..2 {
        assert_eq!(gw.post("demo", Some(&a), call(i, "echo")).await.status, 200);
    }
    settled(&gw, "", 2).await;
    let cli = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        c.args(args)
            .env("PORTCULLIS_ADMIN_URL", format!("http://{}", gw.admin))
            .env("PORTCULLIS_ADMIN_TOKEN", &gw.admin_token)
            .env("PORTCULLIS_LOG", "warn");
        c
    };
    let run = |mut c: std::process::Command| async move { tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap() };
    let o = run(cli(&["workspace", "usage", "demo", "--by", "tool", "--json"])).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(totals(&v)["echo"], [2, 0, 0]);
    assert_eq!(v["folded"], 0);
    let o = run(cli(&["workspace", "usage", "demo", "--since", "1h"])).await;
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    let row = out.lines().find(|l| l.starts_with("alice")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["alice", "2", "0", "0"], "{out}");
    assert!(
        out.contains("MEMBER") && out.contains("REQUESTS") && out.contains("RATE LIMITED"),
        "{out}"
    );
    // Bad usage: exit 2, with a message; a server-side refusal: exit 1.
    let o = run(cli(&["workspace", "usage", "demo", "--by", "email"])).await;
    assert_eq!(o.status.code(), Some(2));
    let o = run(cli(&["workspace", "usage", "demo", "--since", "0"])).await;
    assert_eq!(o.status.code(), Some(2));
    let o = run(cli(&["workspace", "usage", "nope", "--json"])).await;
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["code"], "workspace_not_found");
}

#[tokio::test]
async fn an_aggregating_workspace_counts_a_tool_call_under_the_server_it_goes_to() {
    let (alpha, beta) = (DemoUpstream::start_open().await, DemoUpstream::start_open().await);
    let key = "11".repeat(32);
    let gw = Setup::new(&alpha.url)
        .server(&format!("session_keys = [\"{key}\"]"))
        .raw(&format!(
            "[[workspaces]]\nslug = \"team\"\n[[workspaces.servers]]\nname = \"alpha\"\nurl = \"{}\"\n[[workspaces.servers]]\nname = \"beta\"\nurl = \"{}\"\n{FAST_FLUSH}",
            alpha.url, beta.url
        ))
        .start()
        .await;
    let (t, _) = gw.create_token("team", json!({"member_id": "carol"})).await;
    let auth = format!("Bearer {t}");
    let post = |body: String, session: Option<String>| {
        let (url, auth) = (gw.ws_url("team"), auth.clone());
        async move {
            let mut h = vec![
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("authorization", auth.as_str()),
            ];
            if let Some(s) = &session {
                h.push(("mcp-session-id", s.as_str()));
            }
            send(Method::POST, &url, &h, body).await
        }
    };
    let init = rpc(
        json!(0),
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "it", "version": "1"}}),
    );
    let r = post(init, None).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let session = Some(r.header("mcp-session-id").to_owned());
    for (i, tool) in ["alpha__echo", "alpha__echo", "beta__echo"].iter().enumerate() {
        let r = post(call(i as i64 + 1, tool), session.clone()).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(post(rpc(json!(9), "tools/list", json!({})), session.clone()).await.status, 200);
    let q = |group_by: &str| format!("/v1/workspaces/team/usage?group_by={group_by}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let by_server = loop {
        let v = gw.admin_call(Method::GET, &q("server"), None).await.json();
        if totals(&v).values().map(|c| c[0]).sum::<u64>() >= 5 || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let t = totals(&by_server);
    assert_eq!(t["alpha"], [2, 0, 0]);
    assert_eq!(t["beta"], [1, 0, 0]);
    // Answered by the gateway itself or by every server: no single server.
    assert_eq!(t["null"], [2, 0, 0]);
    let t = totals(&gw.admin_call(Method::GET, &q("tool"), None).await.json());
    assert_eq!(t["alpha__echo"], [2, 0, 0]);
    assert_eq!(t["beta__echo"], [1, 0, 0]);
    assert_eq!(t["initialize"], [1, 0, 0]);
    assert_eq!(t["tools/list"], [1, 0, 0]);
}

#[test]
fn usage_settings_are_checked_and_unknown_keys_refused() {
    let load = |usage: &str| {
        let text = format!(
            "[store]\npath = \"x.db\"\n[usage]\n{usage}\n[[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"main\"\nurl = \"http://127.0.0.1:1/mcp\"\n"
        );
        portcullis::config::Config::from_toml(Path::new("t.toml"), &text, &|_| None).map_err(|e| e.to_string())
    };
    let c = load("").unwrap();
    assert!(c.usage.enabled);
    assert_eq!(c.usage.flush_interval, Duration::from_secs(5));
    assert_eq!(c.usage.minute_retention, 48 * 3600);
    assert_eq!(c.usage.hour_retention, 90 * 86_400);
    for (bad, key) in [
        ("flush_interval_ms = 0", "usage.flush_interval_ms"),
        ("flush_interval_ms = 60000", "usage.flush_interval_ms"),
        ("minute_retention_hours = 0", "usage.minute_retention_hours"),
        ("hour_retention_days = 0", "usage.hour_retention_days"),
        ("max_keys = 1", "usage.max_keys"),
        ("max_tools_per_server = 0", "usage.max_tools_per_server"),
        ("max_members_per_workspace = 0", "usage.max_members_per_workspace"),
        ("max_tokens_per_workspace = 0", "usage.max_tokens_per_workspace"),
        ("enable = true", "enable"),
    ] {
        let e = load(bad).unwrap_err();
        assert!(e.contains(key), "{bad}: {e}");
    }
}
