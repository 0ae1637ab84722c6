//! The `portcullis` binary end to end: help, check-config, offline bootstrap,
//! client commands with --json, and exit codes.

use std::process::{Command, Output};

use http::Method;
use serde_json::{Value, json};

use crate::harness::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    // Keep the environment of the machine running the tests out of it.
    for k in [
        "PORTCULLIS_ADMIN_URL",
        "PORTCULLIS_ADMIN_TOKEN",
        "PORTCULLIS_TOKEN",
        "PORTCULLIS_CONFIG",
        "PORTCULLIS_GATEWAY_URL",
    ] {
        c.env_remove(k);
    }
    c.env("PORTCULLIS_LOG", "warn");
    c
}

/// Runs the binary off the async runtime's threads.
async fn run(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().expect("binary runs")).await.unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}\nstderr: {}", stdout(o), stderr(o)))
}

#[tokio::test]
async fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["check-config", "--help"],
        vec!["demo", "--help"],
        vec!["demo-upstream", "--help"],
        vec!["admin", "--help"],
        vec!["admin", "token", "--help"],
        vec!["admin", "token", "create", "--help"],
        vec!["admin", "token", "list", "--help"],
        vec!["admin", "token", "revoke", "--help"],
        vec!["workspace", "--help"],
        vec!["workspace", "list", "--help"],
        vec!["workspace", "token", "--help"],
        vec!["workspace", "token", "create", "--help"],
        vec!["workspace", "token", "list", "--help"],
        vec!["workspace", "token", "get", "--help"],
        vec!["workspace", "token", "revoke", "--help"],
        vec!["workspace", "usage", "--help"],
        vec!["member", "--help"],
        vec!["member", "add", "--help"],
        vec!["member", "list", "--help"],
        vec!["member", "remove", "--help"],
        vec!["member", "invite", "--help"],
        vec!["token", "--help"],
        vec!["token", "validate", "--help"],
        vec!["doctor", "--help"],
        vec!["init", "--help"],
        vec!["version", "--help"],
        vec!["completions", "--help"],
        vec!["man", "--help"],
    ] {
        let mut c = bin();
        c.args(&args);
        let o = run(c).await;
        assert!(o.status.success(), "{args:?}");
        assert!(stdout(&o).contains("Usage:"), "{args:?}");
    }
    let mut c = bin();
    c.arg("no-such-command");
    assert_eq!(run(c).await.status.code(), Some(2));
}

#[tokio::test]
async fn check_config_accepts_good_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/portcullis.toml");
    let mut c = bin();
    c.args(["check-config", "--config", example]).env("DEMO_UPSTREAM_KEY", "k");
    let o = run(c).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("OK"));

    let mut c = bin();
    c.args(["check-config", "--json", "--config", example])
        .env("DEMO_UPSTREAM_KEY", "k");
    assert_eq!(json_out(&run(c).await)["valid"], true);

    // The example references DEMO_UPSTREAM_KEY: unset, it is a clear error.
    let mut c = bin();
    c.args(["check-config", "--config", example]).env_remove("DEMO_UPSTREAM_KEY");
    let o = run(c).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("DEMO_UPSTREAM_KEY"), "{}", stderr(&o));

    let text = std::fs::read_to_string(example).unwrap();
    for (broken, needle) in [
        (text.replace("max_body_bytes", "max_bodybytes"), "max_bodybytes"),
        (text.replace("backend = \"sqlite\"", "backend = \"mysql\""), "store.backend"),
        (text.replace("slug = \"demo\"", "slug = \"De mo\""), "slug"),
        ("[server\n".to_string(), "line"),
    ] {
        let path = dir.path().join("broken.toml");
        std::fs::write(&path, &broken).unwrap();
        let mut c = bin();
        c.args(["check-config", "--config"]).arg(&path).env("DEMO_UPSTREAM_KEY", "k");
        let o = run(c).await;
        assert_eq!(o.status.code(), Some(2), "{needle}");
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
        let mut c = bin();
        c.args(["check-config", "--json", "--config"])
            .arg(&path)
            .env("DEMO_UPSTREAM_KEY", "k");
        let o = run(c).await;
        assert_eq!(json_out(&o)["valid"], false);
    }
    let mut c = bin();
    c.args(["check-config", "--config", "/nonexistent/portcullis.toml"]);
    let o = run(c).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot read"));
}

#[tokio::test]
async fn bootstrap_then_manage_tokens_from_the_cli() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let config = gw.dir.path().join("portcullis.toml");
    std::fs::write(&config, &gw.config_text).unwrap();
    let admin_url = format!("http://{}", gw.admin);

    // Offline bootstrap against the same store the gateway uses.
    let mut c = bin();
    c.args(["admin", "token", "create", "--name", "ops", "--json", "--config"])
        .arg(&config);
    let o = run(c).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let admin = json_out(&o);
    let admin_token = admin["token"].as_str().unwrap().to_string();
    assert!(admin_token.starts_with("mwa_"));
    assert_eq!(admin["info"]["created_by"], "bootstrap");
    assert_eq!(admin["info"]["kind"], "admin");

    let client = |args: &[&str]| {
        let mut c = bin();
        c.args(args)
            .env("PORTCULLIS_ADMIN_URL", &admin_url)
            .env("PORTCULLIS_ADMIN_TOKEN", &admin_token);
        c
    };
    let o = run(client(&["workspace", "list", "--json"])).await;
    assert_eq!(json_out(&o)["workspaces"][0]["slug"], "demo");
    let o = run(client(&["workspace", "list"])).await;
    assert!(stdout(&o).contains("demo"));

    let o = run(client(&[
        "workspace",
        "token",
        "create",
        "demo",
        "--name",
        "bot",
        "--expires-in",
        "3600",
        "--member",
        "m-1",
        "--servers",
        "main",
        "--json",
    ]))
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let created = json_out(&o);
    let token = created["token"].as_str().unwrap().to_string();
    let id = created["info"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["info"]["member_id"], "m-1");
    assert_eq!(created["info"]["allowed_servers"], json!(["main"]));
    assert!(created["mcp_json"]["mcpServers"]["demo"]["url"].is_string());
    assert_eq!(gw.post("demo", Some(&token), echo_call(1, "cli")).await.status, 200);

    // Human output shows the token once, with what to do next.
    let o = run(client(&["workspace", "token", "create", "demo", "--name", "human"])).await;
    assert!(stdout(&o).contains("mwt_") && stdout(&o).contains("only time"), "{}", stdout(&o));

    let o = run(client(&["workspace", "token", "list", "demo", "--json"])).await;
    let listed = json_out(&o);
    assert!(listed["tokens"].as_array().unwrap().iter().any(|t| t["id"] == id.as_str()));
    assert!(!stdout(&o).contains(&token[4..]), "list must never show a raw token");
    let o = run(client(&[
        "workspace",
        "token",
        "list",
        "demo",
        "--page-size",
        "1",
        "--all",
        "--json",
    ]))
    .await;
    assert_eq!(json_out(&o)["tokens"].as_array().unwrap().len(), 2);
    let o = run(client(&["workspace", "token", "list", "demo"])).await;
    assert!(stdout(&o).contains("STATUS") && stdout(&o).contains("bot"));

    let o = run(client(&["workspace", "token", "get", "demo", &id, "--json"])).await;
    assert_eq!(json_out(&o)["status"], "active");

    let mut c = bin();
    c.args(["token", "validate", "--json", "--gateway-url", &format!("http://{}", gw.data)])
        .env("PORTCULLIS_TOKEN", &token);
    let o = run(c).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_out(&o)["id"], id.as_str());

    let o = run(client(&["workspace", "token", "revoke", "demo", &id])).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Revoked"));
    assert_unauthorized(&gw.post("demo", Some(&token), echo_call(2, "cli")).await, false);
    let o = run(client(&["workspace", "token", "get", "demo", &id, "--json"])).await;
    assert_eq!(json_out(&o)["status"], "revoked");

    let mut c = bin();
    c.args(["token", "validate", "--gateway-url", &format!("http://{}", gw.data)])
        .env("PORTCULLIS_TOKEN", &token);
    let o = run(c).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not valid"));

    // Server-reported failures exit 1 with the server's message.
    let o = run(client(&["workspace", "token", "get", "demo", "tkn_0000000000000000"])).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no token"), "{}", stderr(&o));
    let o = run(client(&["workspace", "token", "create", "ghost", "--name", "x"])).await;
    assert_eq!(o.status.code(), Some(1));
    let mut c = bin();
    c.args(["workspace", "list"])
        .env("PORTCULLIS_ADMIN_URL", &admin_url)
        .env("PORTCULLIS_ADMIN_TOKEN", "mwa_wrong");
    let o = run(c).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("PORTCULLIS_ADMIN_TOKEN"));
    // Usage errors exit 2.
    let o = run(client(&[
        "workspace",
        "token",
        "create",
        "demo",
        "--name",
        "x",
        "--member",
        "a",
        "--email",
        "b@c.d",
    ]))
    .await;
    assert_eq!(o.status.code(), Some(2));

    // The offline admin list shows both admin tokens, never raw values.
    let mut c = bin();
    c.args(["admin", "token", "list", "--json", "--config"]).arg(&config);
    let o = run(c).await;
    assert_eq!(json_out(&o)["tokens"].as_array().unwrap().len(), 2);
    assert!(!stdout(&o).contains(&admin_token[4..]));
    drop(gw);
}

#[tokio::test]
async fn unreachable_server_and_missing_token_exit_2_with_a_hint() {
    let dead = dead_address().await;
    let base = dead.trim_end_matches("/mcp").to_string();
    let mut c = bin();
    c.args(["workspace", "list"])
        .env("PORTCULLIS_ADMIN_URL", &base)
        .env("PORTCULLIS_ADMIN_TOKEN", "mwa_x");
    let o = run(c).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot reach the admin API") && stderr(&o).contains("portcullis serve"),
        "{}",
        stderr(&o)
    );

    let mut c = bin();
    c.args(["workspace", "list"]).env("PORTCULLIS_ADMIN_URL", &base);
    let o = run(c).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("PORTCULLIS_ADMIN_TOKEN"));

    let mut c = bin();
    c.args(["token", "validate", "--gateway-url", &base])
        .env("PORTCULLIS_TOKEN", "mwt_x");
    assert_eq!(run(c).await.status.code(), Some(2));
    let mut c = bin();
    c.args(["token", "validate"]);
    let o = run(c).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("PORTCULLIS_TOKEN"));
}

#[tokio::test]
async fn admin_api_sees_cli_created_tokens() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let config = gw.dir.path().join("portcullis.toml");
    std::fs::write(&config, &gw.config_text).unwrap();
    let mut c = bin();
    c.args([
        "admin",
        "token",
        "create",
        "--name",
        "scoped",
        "--workspace",
        "demo",
        "--json",
        "--config",
    ])
    .arg(&config);
    let v = json_out(&run(c).await);
    let t = v["token"].as_str().unwrap();
    let r = gw.admin_call_as(t, Method::GET, "/v1/workspaces", None).await;
    assert_eq!(r.status, 200);
    let mut c = bin();
    c.args(["admin", "token", "create", "--name", "x", "--workspace", "ghost", "--config"])
        .arg(&config);
    assert_eq!(run(c).await.status.code(), Some(2));
}

/// A config whose upstream needs a secret that the offline commands never use.
fn offline_config(store_path: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[store]\npath = \"{store_path}\"\n\
         [[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"demo\"\nurl = \"http://127.0.0.1:1/mcp\"\n\
         headers = {{ Authorization = \"Bearer ${{UPSTREAM_SECRET_NOT_SET}}\" }}\n"
    )
}

#[tokio::test]
async fn offline_commands_use_the_store_next_to_the_config_from_any_directory() {
    let etc = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = etc.path().join("portcullis.toml");
    std::fs::write(&config, offline_config("data/p.db")).unwrap();
    let expected = etc.path().join("data/p.db");

    let mut c = bin();
    c.current_dir(elsewhere.path())
        .env_remove("UPSTREAM_SECRET_NOT_SET")
        .args(["admin", "token", "create", "--name", "ops", "--json", "--config"])
        .arg(&config);
    let o = run(c).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(expected.exists(), "the store is next to the config");
    assert!(!elsewhere.path().join("data").exists(), "no second store in the current directory");
    let v = json_out(&o);
    assert_eq!(v["store"]["path"], expected.display().to_string());
    assert!(
        stderr(&o).contains(&expected.display().to_string()) && stderr(&o).contains("NEW"),
        "{}",
        stderr(&o)
    );

    // Second run: same store, not new.
    let mut c = bin();
    c.current_dir(elsewhere.path())
        .args(["admin", "token", "list", "--json", "--config"])
        .arg(&config);
    let o = run(c).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_out(&o)["tokens"].as_array().unwrap().len(), 1);
    assert!(!stderr(&o).contains("NEW"), "{}", stderr(&o));

    // serve/check-config stay strict about the upstream secret.
    let mut c = bin();
    c.args(["check-config", "--config"])
        .arg(&config)
        .env_remove("UPSTREAM_SECRET_NOT_SET");
    let o = run(c).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("UPSTREAM_SECRET_NOT_SET"), "{}", stderr(&o));
}

#[tokio::test]
async fn store_errors_name_the_file_the_key_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_db = dir.path().join("notes.txt");
    std::fs::write(&not_a_db, "x".repeat(4096)).unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    for (store_path, needle) in [
        (not_a_db.display().to_string(), "not a Portcullis SQLite store"),
        (format!("{}/sub/p.db", blocker.display()), "directory"),
    ] {
        let config = dir.path().join("p.toml");
        std::fs::write(&config, offline_config(&store_path)).unwrap();
        let mut c = bin();
        c.args(["admin", "token", "list", "--config"]).arg(&config);
        let o = run(c).await;
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        assert!(
            err.contains(&store_path) && err.contains("store.path") && err.contains("What to do") && err.contains(needle),
            "{err}"
        );
    }
}

#[tokio::test]
async fn check_config_rejects_what_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let base = offline_config("data/p.db").replace("${UPSTREAM_SECRET_NOT_SET}", "k");
    for (text, needle) in [
        (
            base.replace("127.0.0.1:1/mcp", "127.0.0.1:99999/mcp"),
            "workspaces[0].servers[0].url",
        ),
        (
            base.replace(
                "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"",
                "listen = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:8080\"",
            ),
            "server.admin_listen",
        ),
    ] {
        let path = dir.path().join("p.toml");
        std::fs::write(&path, &text).unwrap();
        let mut c = bin();
        c.args(["check-config", "--config"]).arg(&path);
        let o = run(c).await;
        assert_eq!(o.status.code(), Some(2), "{needle}: {}", stdout(&o));
        assert!(stderr(&o).contains(needle), "{needle}: {}", stderr(&o));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn unknown_log_settings_are_refused_at_start_up() {
    for (var, value, needle) in [
        ("PORTCULLIS_LOG", "verbose", "verbose"),
        ("PORTCULLIS_LOG", "info,portcullis=loud", "PORTCULLIS_LOG"),
        ("PORTCULLIS_LOG_FORMAT", "yaml", "PORTCULLIS_LOG_FORMAT"),
    ] {
        let mut c = bin();
        c.args(["check-config", "--config", "/nonexistent.toml"]).env(var, value);
        let o = run(c).await;
        assert_eq!(o.status.code(), Some(2), "{var}={value}");
        assert!(
            stderr(&o).contains(needle) && !stderr(&o).contains("cannot read"),
            "{var}={value}: {}",
            stderr(&o)
        );
    }
    // What EnvFilter accepts and means something still works.
    for value in ["debug", "WARN", "info,hyper=warn", "portcullis::gateway=debug,info", "hyper"] {
        let mut c = bin();
        c.args(["check-config", "--config", "/nonexistent.toml"])
            .env("PORTCULLIS_LOG", value);
        let o = run(c).await;
        assert!(stderr(&o).contains("cannot read"), "{value}: {}", stderr(&o));
    }
}

#[tokio::test]
async fn json_logs_are_json_on_every_line_and_401s_name_the_reason_and_slug() {
    let up = DemoUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (data, admin) = (free_port(), free_port());
    let config = dir.path().join("p.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{data}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nshutdown_grace_ms = 2000\n[store]\npath = \"p.db\"\n\
             [[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"demo\"\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer {DEMO_KEY}\" }}\n",
            up.url
        ),
    )
    .unwrap();
    let mut c = bin();
    c.args(["admin", "token", "create", "--name", "a", "--json", "--config"])
        .arg(&config);
    let admin_token = json_out(&run(c).await)["token"].as_str().unwrap().to_string();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("PORTCULLIS_LOG", "info")
        .env("PORTCULLIS_LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let admin_base = format!("http://127.0.0.1:{admin}");
    // Wait until the admin listener accepts (the process announces it too).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", admin)).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ws_token = loop {
        let r = send(
            Method::POST,
            &format!("{admin_base}/v1/workspaces/demo/tokens"),
            &[("authorization", &format!("Bearer {admin_token}"))],
            r#"{"name":"t"}"#,
        )
        .await;
        if r.status == 201 {
            break r.json()["token"].as_str().unwrap().to_string();
        }
    };
    let unknown = portcullis::token::generate(portcullis::token::TokenKind::Workspace).raw;
    let url = |slug: &str| format!("http://127.0.0.1:{data}/ws/{slug}");
    let post = |slug: &str, token: Option<&str>| {
        let (u, auth) = (url(slug), token.map(|t| format!("Bearer {t}")));
        async move {
            let mut h = vec![("content-type", "application/json")];
            if let Some(a) = &auth {
                h.push(("authorization", a.as_str()));
            }
            send(Method::POST, &u, &h, echo_call(1, "x")).await.status
        }
    };
    assert_eq!(post("demo", Some(&unknown)).await, 401);
    assert_eq!(post("demo", Some("mwt_malformed")).await, 401);
    assert_eq!(post("demo", None).await, 401);
    assert_eq!(post("ghost", Some(&ws_token)).await, 401);
    assert_eq!(post("demo", Some(&ws_token)).await, 200);

    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut err = String::new();
    use tokio::io::AsyncReadExt;
    child.stderr.take().unwrap().read_to_string(&mut err).await.unwrap();
    assert!(child.wait().await.unwrap().success());

    let lines: Vec<Value> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["fields"]["message"].as_str()).collect();
    assert!(messages.iter().any(|m| m.contains("data plane on")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("stopped")), "{messages:?}");
    let failures: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["span"]["status"] == 401)
        .map(|l| {
            (
                l["span"]["auth_failure"].as_str().unwrap_or("-").to_string(),
                l["span"]["workspace"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    for (reason, slug) in [
        ("unknown", "demo"),
        ("malformed", "demo"),
        ("missing", "demo"),
        ("wrong_workspace", "ghost"),
    ] {
        assert!(
            failures.iter().any(|(r, s)| r == reason && s.contains(slug)),
            "{reason} on {slug}: {failures:?}"
        );
    }
    for secret in [&unknown, &ws_token, &admin_token] {
        assert!(!err.contains(&secret[4..]), "a raw token reached the log");
    }
}

#[tokio::test]
async fn demo_runs_from_any_directory_and_names_the_binary_it_is() {
    let cwd = tempfile::tempdir().unwrap();
    let (data, admin, upstream) = (free_port(), free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("demo")
        .current_dir(cwd.path())
        .env_remove("PORTCULLIS_CONFIG")
        .env_remove("DEMO_UPSTREAM_KEY")
        .env("PORTCULLIS_LOG", "warn")
        // Free ports through the environment overrides (env > file).
        .env("PORTCULLIS__SERVER__LISTEN", format!("127.0.0.1:{data}"))
        .env("PORTCULLIS__SERVER__ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("PORTCULLIS__SERVER__PUBLIC_URL", format!("http://127.0.0.1:{data}"))
        .env(
            "PORTCULLIS__WORKSPACES__0__SERVERS__0__URL",
            format!("http://127.0.0.1:{upstream}/mcp"),
        )
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Press Ctrl-C") {
            break;
        }
    }
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_portcullis")).unwrap();
    assert!(banner.contains(&format!("{} workspace token create", exe.display())), "{banner}");
    assert!(!banner.contains("./target/release"), "{banner}");
    let store = std::fs::canonicalize(cwd.path()).unwrap().join("data/portcullis.db");
    assert!(banner.contains(&store.display().to_string()) && store.exists(), "{banner}");
    assert!(banner.contains("built into this binary"), "{banner}");
    let admin_token = banner
        .split_whitespace()
        .find_map(|w| w.strip_prefix("PORTCULLIS_ADMIN_TOKEN="))
        .unwrap()
        .to_string();
    // The demo works end to end: a token from the printed admin token, a call through the gateway.
    let r = send(
        Method::POST,
        &format!("http://127.0.0.1:{admin}/v1/workspaces/demo/tokens"),
        &[("authorization", &format!("Bearer {admin_token}"))],
        r#"{"name":"t"}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    let token = r.json()["token"].as_str().unwrap().to_string();
    let r = send(
        Method::POST,
        &format!("http://127.0.0.1:{data}/ws/demo"),
        &[("authorization", &format!("Bearer {token}")), ("content-type", "application/json")],
        echo_call(1, "hi"),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(child.wait().await.unwrap().success());
}

// ---------------------------------------------------------------------------
// Everyday tools (issue 18 §2).
// ---------------------------------------------------------------------------

/// The documented shape of a `--json` failure (docs/cli.md).
fn assert_error_shape(v: &Value) {
    assert!(
        v["error"]["code"].is_string() && v["error"]["message"].is_string(),
        "not an error object: {v}"
    );
}

/// The documented shape of `doctor --json` (docs/cli.md).
fn doctor_checks(v: &Value) -> Vec<(String, String, String)> {
    assert!(v["ok"].is_boolean(), "{v}");
    v["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks: {v}"))
        .iter()
        .map(|c| {
            let status = c["status"].as_str().unwrap().to_string();
            assert!(["ok", "warn", "fail"].contains(&status.as_str()), "{c}");
            (
                c["name"].as_str().unwrap().to_string(),
                status,
                c["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn find<'a>(checks: &'a [(String, String, String)], name: &str) -> &'a (String, String, String) {
    checks
        .iter()
        .find(|c| c.0 == name)
        .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))
}

#[tokio::test]
async fn doctor_checks_a_real_store_and_real_upstreams() {
    let good = DemoUpstream::start().await;
    let wrong_key = DemoUpstream::start().await;
    let dead = dead_address().await;
    let dir = tempfile::tempdir().unwrap();
    let (data, admin) = (free_port(), free_port());
    let server = |name: &str, url: &str, key: &str| {
        format!(
            "[[workspaces]]\nslug = \"{name}\"\n[[workspaces.servers]]\nname = \"s\"\nurl = \"{url}\"\nheaders = {{ Authorization = \"Bearer {key}\" }}\n"
        )
    };
    let head = format!("[server]\nlisten = \"127.0.0.1:{data}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n[store]\npath = \"data/p.db\"\n");
    let all = format!(
        "{head}{}{}{}",
        server("good", &good.url, DEMO_KEY),
        server("wrongkey", &wrong_key.url, "not-the-key"),
        server("dead", &dead, "k")
    );
    let config = dir.path().join("p.toml");
    std::fs::write(&config, &all).unwrap();
    let doctor = |json: bool| {
        let mut c = bin();
        c.args(["doctor", "--config"]).arg(&config);
        if json {
            c.arg("--json");
        }
        c
    };

    // Before any store exists: a warning, not a failure.
    let o = run(doctor(true)).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v = json_out(&o);
    assert_error_shape(&v);
    assert_eq!(v["error"]["code"], "checks_failed");
    assert_eq!(v["ok"], false);
    let checks = doctor_checks(&v);
    assert_eq!(find(&checks, "store").1, "warn");
    let up = find(&checks, "upstream good/s");
    assert_eq!(up.1, "ok", "{up:?}");
    let latency = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "upstream good/s")
        .unwrap()["latency_ms"]
        .clone();
    assert!(latency.as_f64().is_some_and(|l| l >= 0.0), "{latency}");
    let wk = find(&checks, "upstream wrongkey/s");
    assert!(wk.1 == "fail" && wk.2.contains("credentials"), "{wk:?}");
    assert_eq!(find(&checks, "upstream dead/s").1, "fail");
    for name in ["config", "listen", "admin_listen", "admin exposure", "session_keys", "clock"] {
        assert_eq!(find(&checks, name).1, "ok", "{name}: {checks:?}");
    }

    // A real store: reachable, writable, schema current.
    let mut c = bin();
    c.args(["admin", "token", "create", "--name", "a", "--config"]).arg(&config);
    assert!(run(c).await.status.success());
    let checks = doctor_checks(&json_out(&run(doctor(true)).await));
    let store = find(&checks, "store");
    assert!(store.1 == "ok" && store.2.contains("current"), "{store:?}");

    // A busy port and a public admin address are failures too; text output names them.
    std::fs::write(&config, all.replace(&format!("127.0.0.1:{admin}"), &format!("0.0.0.0:{admin}"))).unwrap();
    let _busy = std::net::TcpListener::bind(("127.0.0.1", data)).unwrap();
    let o = run(doctor(false)).await;
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    for needle in [
        "FAIL  listen",
        "FAIL  admin exposure",
        "FAIL  upstream wrongkey/s",
        "ok    upstream good/s",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert!(stderr(&o).contains("checks failed"), "{}", stderr(&o));
    drop(_busy);

    // Everything fine: exit 0 and ok: true.
    std::fs::write(&config, format!("{head}{}", server("good", &good.url, DEMO_KEY))).unwrap();
    let o = run(doctor(true)).await;
    assert!(o.status.success(), "{}", stdout(&o));
    let v = json_out(&o);
    assert_eq!(v["ok"], true);
    assert!(doctor_checks(&v).iter().all(|c| c.1 == "ok"), "{v}");

    // A broken configuration is one failed check.
    std::fs::write(&config, "[server\n").unwrap();
    let o = run(doctor(true)).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(find(&doctor_checks(&json_out(&o)), "config").1, "fail");
}

#[tokio::test]
async fn doctor_checks_the_redis_mode() {
    let redis = RedisServer::start().await;
    let up = DemoUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n[store]\nbackend = \"redis\"\nurl = \"{}\"\n\
             [[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"s\"\nurl = \"{}\"\nheaders = {{ Authorization = \"Bearer {DEMO_KEY}\" }}\n",
            free_port(),
            free_port(),
            redis.url(),
            up.url
        ),
    )
    .unwrap();
    let doctor = || {
        let mut c = bin();
        c.args(["doctor", "--json", "--config"]).arg(&config);
        c
    };
    let o = run(doctor()).await;
    assert!(o.status.success(), "{}", stdout(&o));
    let checks = doctor_checks(&json_out(&o));
    for name in ["store", "redis.role", "redis.aof"] {
        assert_eq!(find(&checks, name).1, "ok", "{name}: {checks:?}");
    }
    // AOF off: revocations would not survive a restart.
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("no")
        .query_async(&mut conn)
        .await
        .unwrap();
    let o = run(doctor()).await;
    assert_eq!(o.status.code(), Some(1));
    let checks = doctor_checks(&json_out(&o));
    let aof = find(&checks, "redis.aof");
    assert!(aof.1 == "fail" && aof.2.contains("appendonly"), "{aof:?}");
}

#[tokio::test]
async fn init_writes_a_config_that_works_as_printed() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("etc/portcullis");
    let mut c = bin();
    c.args(["init", "--json"]).arg(&dir);
    let o = run(c).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json_out(&o);
    let config = dir.join("portcullis.toml");
    assert_eq!(v["config"], config.display().to_string());
    assert_eq!(v["store"], dir.join("data/portcullis.db").display().to_string());
    let next: Vec<String> = v["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(next.len(), 2);
    assert!(next[0].contains("admin token create") && next[1].contains(" serve "), "{next:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("session_keys = [\"") && text.contains("path = \"data/portcullis.db\""));

    // check-config passes with nothing exported; the first printed command works from elsewhere.
    let mut c = bin();
    c.args(["check-config", "--config"]).arg(&config).env_remove("DEMO_UPSTREAM_KEY");
    let o = run(c).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let args: Vec<&str> = next[0].split_whitespace().skip(1).collect();
    let mut c = bin();
    c.current_dir(root.path()).args(&args);
    let o = run(c).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("mwa_"));
    assert!(dir.join("data/portcullis.db").exists());

    // Never overwritten by accident.
    let mut c = bin();
    c.args(["init", "--json"]).arg(&dir);
    let o = run(c).await;
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(json_out(&o)["error"]["code"], "exists");
    let mut c = bin();
    c.current_dir(&dir).arg("init");
    assert_eq!(run(c).await.status.code(), Some(2));
}

#[tokio::test]
async fn version_completions_and_man_page() {
    let mut c = bin();
    c.args(["version", "--json"]);
    let v = json_out(&run(c).await);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["git_commit"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(v["build_date"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(v["store_backends"], json!(["sqlite", "redis"]));
    assert!(v["mcp_revisions"].as_array().unwrap().iter().any(|r| r == "2025-06-18"));
    let mut c = bin();
    c.arg("version");
    assert!(stdout(&run(c).await).contains("git commit"));

    for (shell, needle) in [("bash", "complete"), ("zsh", "#compdef"), ("fish", "complete -c portcullis")] {
        let mut c = bin();
        c.args(["completions", shell]);
        let o = run(c).await;
        assert!(
            o.status.success() && stdout(&o).contains(needle) && stdout(&o).contains("doctor"),
            "{shell}"
        );
    }
    let mut c = bin();
    c.arg("man");
    let o = run(c).await;
    assert!(o.status.success() && stdout(&o).contains(".TH") && stdout(&o).contains("portcullis"));

    // The build info is a metric too.
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let r = send(Method::GET, &gw.admin_url("/metrics"), &[], "").await;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        text.contains(&format!("portcullis_build_info{{version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
}

#[test]
fn every_help_lists_the_exit_codes_and_every_positional_is_described() {
    fn walk(c: &clap::Command, path: &str, bad: &mut Vec<String>) {
        let path = format!("{path} {}", c.get_name());
        if !c.get_after_help().is_some_and(|h| h.to_string().contains("Exit codes")) {
            bad.push(format!("{path}: no exit codes in --help"));
        }
        for a in c.get_arguments().filter(|a| a.is_positional()) {
            if a.get_help().is_none() {
                bad.push(format!("{path}: positional {} has no description", a.get_id()));
            }
        }
        for s in c.get_subcommands() {
            walk(s, &path, bad);
        }
    }
    let mut bad = Vec::new();
    walk(&portcullis::cli::command(), "", &mut bad);
    assert!(bad.is_empty(), "{bad:#?}");
}

#[tokio::test]
async fn json_failures_are_error_objects_on_stdout_with_the_contract_exit_codes() {
    let dead = dead_address().await;
    let base = dead.trim_end_matches("/mcp").to_string();
    /// Arguments, environment, exit code, `error.code`.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, i32, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["no-such-command", "--json"], vec![], 2, "usage"),
        (
            vec![
                "workspace",
                "token",
                "create",
                "demo",
                "--name",
                "x",
                "--expires-in",
                "soon",
                "--json",
            ],
            vec![],
            2,
            "usage",
        ),
        (
            vec!["workspace", "list", "--json"],
            vec![("PORTCULLIS_ADMIN_URL", base.as_str()), ("PORTCULLIS_ADMIN_TOKEN", "mwa_x")],
            2,
            "unreachable",
        ),
        (
            vec!["workspace", "list", "--json"],
            vec![("PORTCULLIS_ADMIN_URL", base.as_str())],
            2,
            "usage",
        ),
        (
            vec!["check-config", "--json", "--config", "/nonexistent.toml"],
            vec![],
            2,
            "invalid_config",
        ),
        (
            vec!["admin", "token", "list", "--json", "--config", "/nonexistent.toml"],
            vec![],
            2,
            "usage",
        ),
        (vec!["token", "validate", "--json"], vec![], 2, "usage"),
    ];
    for (args, env, exit, code) in cases {
        let mut c = bin();
        c.args(&args);
        for (k, v) in &env {
            c.env(k, v);
        }
        let o = run(c).await;
        assert_eq!(o.status.code(), Some(exit), "{args:?}");
        let v = json_out(&o);
        assert_error_shape(&v);
        assert_eq!(v["error"]["code"], code, "{args:?}: {v}");
    }
    let mut c = bin();
    c.args(["workspace", "token", "create", "demo", "--name", "x", "--expires-in", "soon"]);
    let o = run(c).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--expires-in"), "{}", stderr(&o));
}

#[tokio::test]
async fn durations_pagination_and_admin_tokens_at_the_gateway() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let config = gw.dir.path().join("portcullis.toml");
    std::fs::write(&config, &gw.config_text).unwrap();
    let admin_url = format!("http://{}", gw.admin);
    let mut c = bin();
    c.args([
        "admin",
        "token",
        "create",
        "--name",
        "ops",
        "--expires-in",
        "12h",
        "--json",
        "--config",
    ])
    .arg(&config);
    let v = json_out(&run(c).await);
    let admin_token = v["token"].as_str().unwrap().to_string();
    assert!(v["info"]["expires_at"].is_string());
    let client = |args: &[&str]| {
        let mut c = bin();
        c.args(args)
            .env("PORTCULLIS_ADMIN_URL", &admin_url)
            .env("PORTCULLIS_ADMIN_TOKEN", &admin_token);
        c
    };
    let now = portcullis::token::now_unix();
    let o = run(client(&[
        "workspace",
        "token",
        "create",
        "demo",
        "--name",
        "a",
        "--expires-in",
        "90d",
        "--json",
    ]))
    .await;
    let at = json_out(&o)["info"]["expires_at"].as_str().unwrap().to_string();
    let at = time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp();
    assert!((at - (now + 90 * 86_400)).abs() < 120, "{at}");
    let o = run(client(&[
        "workspace",
        "token",
        "create",
        "demo",
        "--name",
        "b",
        "--expires-at",
        "2030-01-01T00:00:00Z",
        "--json",
    ]))
    .await;
    let at = json_out(&o)["info"]["expires_at"].as_str().unwrap().to_string();
    let at = time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp();
    // The server counts from its own clock: the same instant within seconds.
    assert!((at - 1_893_456_000).abs() <= 5, "{at}");
    let o = run(client(&[
        "workspace",
        "token",
        "create",
        "demo",
        "--name",
        "c",
        "--expires-at",
        "2001-01-01T00:00:00Z",
    ]))
    .await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--expires-at"));

    // Offline admin list pages like the workspace list.
    let mut c = bin();
    c.args(["admin", "token", "list", "--page-size", "1", "--json", "--config"])
        .arg(&config);
    let v = json_out(&run(c).await);
    assert_eq!(v["tokens"].as_array().unwrap().len(), 1);
    let cursor = v["next_cursor"].as_str().expect("two admin tokens: a next page").to_string();
    let mut c = bin();
    c.args([
        "admin",
        "token",
        "list",
        "--page-size",
        "1",
        "--cursor",
        &cursor,
        "--json",
        "--config",
    ])
    .arg(&config);
    let v = json_out(&run(c).await);
    assert_eq!(v["tokens"].as_array().unwrap().len(), 1);
    assert!(v["next_cursor"].is_null());

    // An admin token checked at the gateway: valid, but it does not open /ws/*.
    let mut c = bin();
    c.args([
        "token",
        "validate",
        "--gateway-url",
        &format!("http://{}", gw.data),
        "--admin-url",
        &format!("http://{}", gw.admin),
    ])
    .env("PORTCULLIS_TOKEN", &admin_token);
    let o = run(c).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("do not open /ws/*"), "{}", stdout(&o));
    let mut c = bin();
    c.args([
        "token",
        "validate",
        "--json",
        "--gateway-url",
        &format!("http://{}", gw.data),
        "--admin-url",
        &format!("http://{}", gw.admin),
    ])
    .env("PORTCULLIS_TOKEN", &admin_token);
    let v = json_out(&run(c).await);
    assert_eq!(v["kind"], "admin");
    assert_eq!(v["opens_data_plane"], false);
}

/// The README's production path, step by step, from a directory that has
/// nothing to do with the config (ports and the upstream through the
/// environment overrides, which stand in for the `$EDITOR` step).
#[tokio::test]
async fn the_readme_production_path_works_from_any_directory() {
    let up = DemoUpstream::start().await;
    let etc = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = etc.path().join("portcullis.toml");
    let (data, admin) = (free_port(), free_port());
    let step = |args: &[&str]| {
        let mut c = bin();
        c.current_dir(elsewhere.path())
            .args(args)
            .env("DEMO_UPSTREAM_KEY", DEMO_KEY)
            .env("PORTCULLIS__SERVER__LISTEN", format!("127.0.0.1:{data}"))
            .env("PORTCULLIS__SERVER__ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .env("PORTCULLIS__SERVER__PUBLIC_URL", format!("http://127.0.0.1:{data}"))
            .env("PORTCULLIS__WORKSPACES__0__SERVERS__0__URL", &up.url);
        c
    };
    let cfg = config.display().to_string();
    let o = run(step(&["init", &etc.path().display().to_string()])).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(step(&["doctor", "--config", &cfg])).await;
    assert!(o.status.success(), "doctor: {}{}", stdout(&o), stderr(&o));
    let o = run(step(&["admin", "token", "create", "--name", "ops", "--config", &cfg, "--json"])).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let admin_token = json_out(&o)["token"].as_str().unwrap().to_string();

    let mut serve: tokio::process::Command = step(&["serve", "--config", &cfg]).into();
    let mut child = serve.kill_on_drop(true).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", admin)).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut c = bin();
    c.current_dir(elsewhere.path())
        .args(["workspace", "token", "create", "demo", "--name", "laptop", "--json"])
        .env("PORTCULLIS_ADMIN_URL", format!("http://127.0.0.1:{admin}"))
        .env("PORTCULLIS_ADMIN_TOKEN", &admin_token);
    let o = run(c).await;
    assert!(o.status.success(), "the admin token from the offline step works: {}", stderr(&o));
    let token = json_out(&o)["token"].as_str().unwrap().to_string();
    let r = send(
        Method::POST,
        &format!("http://127.0.0.1:{data}/ws/demo"),
        &[("authorization", &format!("Bearer {token}")), ("content-type", "application/json")],
        echo_call(1, "prod"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(etc.path().join("data/portcullis.db").exists());
    assert!(!elsewhere.path().join("data").exists());
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(child.wait().await.unwrap().success());
}
