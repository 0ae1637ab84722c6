//! `GET /v1/openapi.json` (contract §10): the document is OpenAPI 3.1 whose
//! references all resolve, it documents every route the admin router
//! serves (read from the router itself, so a new route cannot slip by), and
//! the real answers of the API match the schemas it declares.
//! tests/py/test_openapi.py also runs a third-party validator on it.

use std::collections::BTreeSet;

use http::Method;
use serde_json::{Value, json};

use crate::harness::*;

/// How to fix a route that is served but not documented (or the reverse).
const HOW_TO_DOCUMENT: &str = "every admin route must be in the OpenAPI document: \
    put #[utoipa::path(<method>, path = \"<path, as in the router>\", tag = \"...\", summary = \"...\", \
    params(...), responses((status = 200, body = <type>), (status = 4xx, body = ApiErrorBody), ...))] \
    on its handler (copy one of the handlers in src/admin/mod.rs; `security(())` if it needs no token), \
    add the handler to `paths(...)` in src/admin/openapi.rs, and derive utoipa::ToSchema on the types \
    it sends and reads (src/admin/types.rs); then run `cargo test --test it openapi`";

async fn document(gw: &Gateway) -> Value {
    // No Authorization header: the document is public (src/admin/openapi.rs).
    let r = send(Method::GET, &gw.admin_url("/v1/openapi.json"), &[], "").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("content-type").starts_with("application/json"));
    r.json()
}

/// What a JSON pointer (`#/a/b`) names in `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

fn refs<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push((at.clone(), r)),
                    _ => refs(x, format!("{at}/{k}"), out),
                }
            }
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| refs(x, format!("{at}/{i}"), out)),
        _ => {}
    }
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// (METHOD, path) of every operation of the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn document_is_openapi_3_1_and_every_reference_resolves() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let doc = document(&gw).await;

    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."), "{}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], "Portcullis admin API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let mut all = Vec::new();
    refs(&doc, String::new(), &mut all);
    assert!(all.len() > 10, "the document should reference its schemas: {all:?}");
    for (at, r) in &all {
        assert!(resolve(&doc, r).is_some(), "{at}: $ref {r} does not resolve");
    }

    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    for name in ["admin_token", "workspace_token"] {
        let s = &schemes[name];
        assert_eq!((s["type"].as_str(), s["scheme"].as_str()), (Some("http"), Some("bearer")), "{name}");
    }
    // The dashboard's session cookie is accepted wherever an admin token is.
    let cookie = &schemes["dashboard_session"];
    assert_eq!(
        (cookie["type"].as_str(), cookie["in"].as_str(), cookie["name"].as_str()),
        (Some("apiKey"), Some("cookie"), Some(portcullis::admin::session::COOKIE)),
        "{cookie}"
    );
    assert!(cookie["description"].as_str().unwrap().contains("X-CSRF-Token"), "{cookie}");
    assert_eq!(schemes.len(), 3, "{schemes:?}");
    assert_eq!(
        doc["security"],
        json!([{"admin_token": []}, {"dashboard_session": []}]),
        "an admin token (or the dashboard's session) by default"
    );

    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert!(path.starts_with('/'), "{path}");
        let in_path: BTreeSet<&str> = path.split('{').skip(1).filter_map(|s| s.split_once('}')).map(|(p, _)| p).collect();
        for m in METHODS {
            let Some(op) = item.get(m) else { continue };
            let here = format!("{} {path}", m.to_uppercase());
            assert!(
                operation_ids.insert(op["operationId"].as_str().expect("operationId").to_string()),
                "{here}: duplicate operationId"
            );
            assert!(op["summary"].is_string() && op["tags"].is_array(), "{here}: summary and tags");
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{here}: responses"));
            assert!(
                responses.keys().any(|s| s.starts_with('2') || s.starts_with('3')),
                "{here}: no success (or redirect) response"
            );
            // Every path template variable is a required path parameter, and the other way round.
            let params: BTreeSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .inspect(|p| assert_eq!(p["required"], true, "{here}: path parameter {p}"))
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(params, in_path, "{here}: path parameters");
            // A named scheme must exist; `{}` (no token) is allowed; where
            // an admin token is named, so is the session (the `Admin`
            // extractor takes either).
            let reqs: Vec<&String> = op["security"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r.as_object().unwrap().keys())
                .collect();
            for name in &reqs {
                assert!(schemes.contains_key(*name), "{here}: unknown security scheme {name}");
            }
            if reqs.iter().any(|n| *n == "admin_token") {
                assert!(reqs.iter().any(|n| *n == "dashboard_session"), "{here}: {reqs:?}");
            }
            // Every error answer of the API is the contract's error body
            // (`/readyz` answers its own body with 503).
            for (status, resp) in responses {
                if path.starts_with("/v1/") && (status.starts_with('4') || status.starts_with('5')) {
                    let schema = &resp["content"]["application/json"]["schema"];
                    assert_eq!(schema["$ref"], "#/components/schemas/Error", "{here} {status}");
                }
            }
        }
    }
    // Every key of a record is always sent (`null` when unset): the document
    // says so, and the answer checks below hold the API to it.
    for name in [
        "TokenRecord",
        "SelfCheck",
        "TokenPage",
        "CreatedToken",
        "AuditEvent",
        "AuditEventPage",
        "AuditStats",
        "UsageReport",
        "UsageBucket",
        "ServerList",
        "ServerState",
    ] {
        let schema = &doc["components"]["schemas"][name];
        let props: BTreeSet<&String> = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no schema {name}"))
            .keys()
            .collect();
        let required: BTreeSet<&String> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| match r {
                Value::String(s) => s,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(props, required, "{name}: every key is always present");
    }
    let public: Vec<&str> = ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"].into();
    for p in public {
        assert_eq!(doc["paths"][p]["get"]["security"], json!([{}]), "{p} needs no token");
    }
}

/// The paths the admin router serves, read from the router itself: its
/// `Debug` output lists every registered path (axum's `Node { paths }`).
/// A path added with `.route`, `.nest` or `.merge` shows up here whether or
/// not anybody documented it.
fn served_paths(state: &std::sync::Arc<portcullis::state::AppState>) -> BTreeSet<String> {
    let dump = format!("{:?}", portcullis::admin::router(state.clone()));
    // `fallback_router` holds axum's own catch-all paths, not routes.
    let routes = dump.split("fallback_router:").next().unwrap_or_default();
    let mut out = BTreeSet::new();
    if let Some(i) = routes.find("paths: {") {
        // `RouteId(n): "<path>", …}`: a path may hold braces, never a quote.
        let mut rest = &routes[i + "paths: {".len()..];
        while let Some(start) = rest.find(": \"") {
            rest = &rest[start + 3..];
            let end = rest.find('"').expect("closing quote");
            out.insert(rest[..end].to_string());
            rest = &rest[end + 1..];
            if !rest.starts_with(", ") {
                break;
            }
        }
    }
    // The parser itself must work, or this test would pass on nothing.
    for known in ["/healthz", "/v1/workspaces/{ws}/tokens/{id}"] {
        assert!(
            out.contains(known),
            "cannot read the routes from the router's Debug output (axum changed?): {dump}"
        );
    }
    out
}

#[tokio::test]
async fn every_route_the_router_serves_is_documented_and_the_reverse() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    // The dashboard's pages are served (its default), so they are checked
    // against NOT_API below rather than absent.
    assert!(
        gw.state().config.dashboard.enabled,
        "the coverage check must see the dashboard's routes"
    );
    let doc = document(&gw).await;
    let documented = documented(&doc);

    // Which methods each served path answers: anything but the router's
    // 405 fallback means served (no token is sent, so nothing changes).
    let mut served = BTreeSet::new();
    for path in served_paths(gw.state()) {
        // axum's catch-all `{*rest}` is OpenAPI's `{rest}`.
        let path = path.replace("{*", "{");
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for m in METHODS {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let r = send(method, &gw.admin_url(&concrete), &[("content-type", "application/json")], "{}").await;
            let fallback =
                r.status == 405 && serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| v["error"]["code"] == "method_not_allowed");
            if !fallback {
                served.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(served.len() >= 10, "{served:?}");

    // Browser pages may be left out, each named with its reason, never an API path.
    let not_api = portcullis::admin::openapi::NOT_API;
    for (path, why) in not_api {
        assert!(!path.starts_with("/v1/"), "NOT_API may not hold an API path: {path} ({why})");
        assert!(
            served.iter().any(|(_, p)| p == path),
            "NOT_API lists {path}, which is not served: remove it"
        );
        assert!(
            !documented.iter().any(|(_, p)| p == path),
            "{path} is both documented and in NOT_API: pick one"
        );
    }
    for page in ["/", "/signin", "/workspaces/{ws}/{tab}", "/assets/app.js"] {
        assert!(
            served.iter().any(|(_, p)| p == page),
            "the dashboard's {page} is not served: {served:?}"
        );
    }
    served.retain(|(_, p)| !not_api.iter().any(|(n, _)| n == p));

    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served by src/admin but missing from GET /v1/openapi.json: {undocumented:?}\n{HOW_TO_DOCUMENT} \
         (a page for browsers, not under /v1/, may instead be listed in NOT_API in src/admin/openapi.rs, with the reason)"
    );
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "in the OpenAPI document but not served (a stale annotation, or a path that differs from the router's): {unserved:?}\n{HOW_TO_DOCUMENT}"
    );
}

/// A small JSON Schema check, enough for what utoipa emits (`$ref`, `type`
/// as a string or a list, `properties`, `required`, `additionalProperties`,
/// `items`, `oneOf`/`anyOf`/`allOf`, `enum`). Unknown keys in an object are
/// an error unless `additionalProperties` allows them: a field the API
/// sends but the document does not describe is drift.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        return check(doc, resolve(doc, r).ok_or(format!("{at}: $ref {r}"))?, v, at);
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check(doc, s, v, at)?;
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(any) = schema[key].as_array()
            && !any.iter().any(|s| check(doc, s, v, at).is_ok())
        {
            return Err(format!("{at}: {v} matches none of {key} {any:?}"));
        }
    }
    if let Some(e) = schema["enum"].as_array()
        && !e.contains(v)
    {
        return Err(format!("{at}: {v} not in {e:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    let actual = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if !types.iter().any(|t| *t == actual || (*t == "number" && actual == "integer")) {
        return Err(format!("{at}: {v} is {actual}, the document says {types:?}"));
    }
    match v {
        Value::Object(m) => {
            for req in schema["required"].as_array().into_iter().flatten() {
                let k = req.as_str().unwrap();
                if !m.contains_key(k) {
                    return Err(format!("{at}: required `{k}` missing"));
                }
            }
            for (k, x) in m {
                match (&schema["properties"][k], &schema["additionalProperties"]) {
                    (Value::Null, Value::Null | Value::Bool(false)) => {
                        return Err(format!("{at}: `{k}` is sent but not in the document"));
                    }
                    (Value::Null, Value::Bool(true)) => {}
                    (Value::Null, extra) => check(doc, extra, x, &format!("{at}.{k}"))?,
                    (s, _) => check(doc, s, x, &format!("{at}.{k}"))?,
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                check(doc, &schema["items"], x, &format!("{at}[{i}]"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks a real answer against the schema the document declares for this
/// operation and status (which must be declared).
fn conforms(doc: &Value, method: &str, path: &str, r: &Resp) {
    let here = format!("{method} {path} → {}", r.status.as_u16());
    let declared = &doc["paths"][path][method.to_lowercase()]["responses"][r.status.as_str()];
    assert!(declared.is_object(), "{here}: status not documented");
    let schema = &declared["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{here}: no JSON schema");
    if let Err(e) = check(doc, schema, &r.json(), "body") {
        panic!(
            "{here}: the answer does not match the document: {e}\n{}",
            String::from_utf8_lossy(&r.body)
        );
    }
}

#[tokio::test]
async fn real_answers_match_the_documented_schemas() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let doc = document(&gw).await;
    let tokens = "/v1/workspaces/{ws}/tokens";
    let one = "/v1/workspaces/{ws}/tokens/{id}";

    let created = gw
        .admin_call(
            Method::POST,
            "/v1/workspaces/demo/tokens",
            Some(json!({"name": "doc", "expires_in": 3600, "email": "a@b.example", "allowed_servers": ["main"]})),
        )
        .await;
    conforms(&doc, "POST", tokens, &created);
    let raw = created.json()["token"].as_str().unwrap().to_string();
    let id = created.json()["info"]["id"].as_str().unwrap().to_string();
    gw.create_token("demo", json!({"member_id": "m-1", "requests_per_minute": 5})).await;

    conforms(
        &doc,
        "GET",
        tokens,
        &gw.admin_call(Method::GET, "/v1/workspaces/demo/tokens?page_size=1", None).await,
    );
    conforms(
        &doc,
        "GET",
        one,
        &gw.admin_call(Method::GET, &format!("/v1/workspaces/demo/tokens/{id}"), None).await,
    );
    conforms(
        &doc,
        "GET",
        "/v1/workspaces",
        &gw.admin_call(Method::GET, "/v1/workspaces", None).await,
    );
    conforms(
        &doc,
        "GET",
        "/v1/tokens/self",
        &gw.admin_call_as(&raw, Method::GET, "/v1/tokens/self", None).await,
    );
    conforms(
        &doc,
        "GET",
        "/v1/tokens/self",
        &gw.admin_call(Method::GET, "/v1/tokens/self", None).await,
    );
    conforms(&doc, "DELETE", one, &gw.revoke("demo", &id).await);
    conforms(
        &doc,
        "GET",
        "/healthz",
        &send(Method::GET, &gw.admin_url("/healthz"), &[], "").await,
    );
    conforms(&doc, "GET", "/readyz", &send(Method::GET, &gw.admin_url("/readyz"), &[], "").await);
    let first = gw;

    // Usage, audit and servers, with real traffic behind them: two
    // members' tool calls, a 429 and an error.
    let gw = Setup::new(&up.url).raw("[usage]\nflush_interval_ms = 50\n").start().await;
    let (alice, _) = gw
        .create_token("demo", json!({"member_id": "alice", "requests_per_minute": 2}))
        .await;
    let (bob, bob_id) = gw.create_token("demo", json!({"member_id": "bob"})).await;
    let call = |tool: &str| rpc(json!(1), "tools/call", json!({"name": tool, "arguments": {"text": "hi"}}));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(gw.post("demo", Some(&alice), call("echo")).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(gw.post("demo", Some(&bob), call("add")).await.status, 200);
    assert_eq!(gw.post("demo", Some(&bob), r#"{"not":"json-rpc"}"#).await.status, 400);
    let usage = "/v1/workspaces/{ws}/usage";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let by_member = loop {
        let r = gw
            .admin_call(Method::GET, "/v1/workspaces/demo/usage?bucket=minute&group_by=member", None)
            .await;
        conforms(&doc, "GET", usage, &r);
        let total: u64 = r.json()["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["requests"].as_u64().unwrap())
            .sum();
        if total >= 5 {
            break r.json();
        }
        assert!(std::time::Instant::now() < deadline, "usage not flushed: {}", r.json());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let keys: BTreeSet<&str> = by_member["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["key"].as_str())
        .collect();
    assert_eq!(keys, ["alice", "bob"].into(), "{by_member}");
    for q in ["", "?group_by=tool&bucket=day", "?group_by=token", "?group_by=server&bucket=hour"] {
        let r = gw.admin_call(Method::GET, &format!("/v1/workspaces/demo/usage{q}"), None).await;
        assert_eq!(r.status, 200, "{q}");
        conforms(&doc, "GET", usage, &r);
    }
    // A tool call without a server (not JSON-RPC) has a null key by tool.
    let by_tool = gw
        .admin_call(Method::GET, "/v1/workspaces/demo/usage?group_by=tool&bucket=minute", None)
        .await
        .json();
    assert!(
        by_tool["buckets"].as_array().unwrap().iter().any(|b| b["key"].is_null()),
        "{by_tool}"
    );

    let servers = "/v1/workspaces/{ws}/servers";
    let r = gw.admin_call(Method::GET, "/v1/workspaces/demo/servers", None).await;
    conforms(&doc, "GET", servers, &r);
    assert_eq!(r.json()["servers"][0]["health"], "up", "{}", r.json());

    let ws_audit = "/v1/workspaces/{ws}/audit";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = gw.admin_call(Method::GET, "/v1/workspaces/demo/audit?type=tool_call", None).await;
        conforms(&doc, "GET", ws_audit, &r);
        if r.json()["events"].as_array().unwrap().len() >= 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "audit not written: {}", r.json());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = gw.admin_call(Method::GET, "/v1/workspaces/demo/audit?page_size=1", None).await;
    conforms(&doc, "GET", ws_audit, &r);
    let cursor = r.json()["next_cursor"].as_str().expect("more than one event").to_string();
    let r = gw
        .admin_call(Method::GET, &format!("/v1/workspaces/demo/audit?page_size=1&cursor={cursor}"), None)
        .await;
    assert_eq!(r.status, 200);
    conforms(&doc, "GET", ws_audit, &r);
    let r = gw
        .admin_call(
            Method::GET,
            &format!("/v1/workspaces/demo/audit?token_id={bob_id}&member_id=bob"),
            None,
        )
        .await;
    conforms(&doc, "GET", ws_audit, &r);
    assert!(!r.json()["events"].as_array().unwrap().is_empty());
    conforms(&doc, "GET", "/v1/audit", &gw.admin_call(Method::GET, "/v1/audit", None).await);
    let r = gw.admin_call(Method::GET, "/v1/audit/stats", None).await;
    conforms(&doc, "GET", "/v1/audit/stats", &r);
    assert!(r.json()["written"].as_u64().unwrap() >= 5, "{}", r.json());
    // A scoped admin token: 403 on the global trail and on another workspace.
    let (scoped, _) = portcullis::auth::lifecycle::create(
        Some(&gw.state().verifier),
        &gw.state().store,
        portcullis::auth::lifecycle::NewTokenRequest {
            name: "scoped".into(),
            kind: Some(portcullis::token::TokenKind::Admin),
            workspace: Some("other".into()),
            expires_in: None,
            member_id: None,
            email: None,
            allowed_servers: None,
            requests_per_minute: None,
            created_by: "test".into(),
        },
        portcullis::token::now_unix(),
    )
    .await
    .expect("scoped admin token");
    for (path, url) in [
        ("/v1/audit", "/v1/audit"),
        (ws_audit, "/v1/workspaces/demo/audit"),
        (usage, "/v1/workspaces/demo/usage"),
        (servers, "/v1/workspaces/demo/servers"),
    ] {
        let r = gw.admin_call_as(&scoped, Method::GET, url, None).await;
        assert_eq!(r.status, 403, "{url}: {}", String::from_utf8_lossy(&r.body));
        conforms(&doc, "GET", path, &r);
    }
    for (path, url, status) in [
        (usage, "/v1/workspaces/nope/usage", 404),
        (usage, "/v1/workspaces/demo/usage?bucket=week", 400),
        (usage, "/v1/workspaces/demo/usage?from=yesterday", 400),
        (usage, "/v1/workspaces/demo/usage?surprise=1", 400),
        (servers, "/v1/workspaces/nope/servers", 404),
        (ws_audit, "/v1/workspaces/nope/audit", 404),
        (ws_audit, "/v1/workspaces/demo/audit?type=nope", 400),
        (ws_audit, "/v1/workspaces/demo/audit?page_size=0", 400),
        ("/v1/audit", "/v1/audit?cursor=garbage", 400),
    ] {
        let r = gw.admin_call(Method::GET, url, None).await;
        assert_eq!(r.status, status, "{url}: {}", String::from_utf8_lossy(&r.body));
        conforms(&doc, "GET", path, &r);
    }
    for (path, url) in [
        (usage, "/v1/workspaces/demo/usage"),
        (servers, "/v1/workspaces/demo/servers"),
        (ws_audit, "/v1/workspaces/demo/audit"),
        ("/v1/audit", "/v1/audit"),
        ("/v1/audit/stats", "/v1/audit/stats"),
    ] {
        let r = gw.admin_call_as("mwa_invalid", Method::GET, url, None).await;
        assert_eq!(r.status, 401, "{url}");
        conforms(&doc, "GET", path, &r);
    }
    let gw = first;

    // Bad paths: each status the API answers is documented, with the error body.
    let cases: Vec<(Method, &str, String, Option<Value>, u16)> = vec![
        (Method::GET, one, "/v1/workspaces/demo/tokens/tkn_nope".into(), None, 404),
        (Method::GET, tokens, "/v1/workspaces/nope/tokens".into(), None, 404),
        (Method::GET, tokens, "/v1/workspaces/demo/tokens?page_size=0".into(), None, 400),
        (
            Method::POST,
            tokens,
            "/v1/workspaces/demo/tokens".into(),
            Some(json!({"name": "x", "nope": 1})),
            400,
        ),
        (
            Method::POST,
            tokens,
            "/v1/workspaces/demo/tokens".into(),
            Some(json!({"name": ""})),
            422,
        ),
    ];
    for (m, path, url, body, status) in cases {
        let r = gw.admin_call(m.clone(), &url, body).await;
        assert_eq!(r.status, status, "{m} {url}: {}", String::from_utf8_lossy(&r.body));
        conforms(&doc, m.as_str(), path, &r);
    }
    let admin_id = gw.admin_call(Method::GET, "/v1/tokens/self", None).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = gw
        .admin_call(Method::DELETE, &format!("/v1/workspaces/demo/tokens/{admin_id}"), None)
        .await;
    assert_eq!(r.status, 409, "a token cannot revoke itself");
    conforms(&doc, "DELETE", one, &r);
    let r = gw.admin_call_as("mwa_invalid", Method::GET, "/v1/workspaces", None).await;
    assert_eq!(r.status, 401);
    conforms(&doc, "GET", "/v1/workspaces", &r);
    let r = gw.admin_call_as(&raw, Method::GET, "/v1/tokens/self", None).await;
    assert_eq!(r.status, 401, "revoked");
    conforms(&doc, "GET", "/v1/tokens/self", &r);

    // The checker itself rejects drift: an extra field, a wrong type.
    let record = json!({"$ref": "#/components/schemas/TokenRecord"});
    let mut v = gw
        .admin_call(Method::GET, &format!("/v1/workspaces/demo/tokens/{id}"), None)
        .await
        .json();
    assert!(check(&doc, &record, &v, "body").is_ok());
    v["surprise"] = json!(1);
    assert!(check(&doc, &record, &v, "body").unwrap_err().contains("surprise"));
    v.as_object_mut().unwrap().remove("surprise");
    v["name"] = json!(7);
    assert!(check(&doc, &record, &v, "body").is_err());
    v["name"] = json!("doc");
    v.as_object_mut().unwrap().remove("last_used_at");
    assert!(check(&doc, &record, &v, "body").unwrap_err().contains("last_used_at"));
}
