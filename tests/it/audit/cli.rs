//! The command line: `audit tail` (JSON lines, `--follow`) and the offline
//! `admin token create`'s event.

#[allow(unused_imports)]
use super::*;

#[tokio::test]
async fn audit_tail_prints_json_lines_and_follows() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).start().await;
    let (_, first) = gw.create_token("demo", json!({"name": "one"})).await;
    let bin = env!("CARGO_BIN_EXE_portcullis");
    let admin_url = format!("http://{}", gw.admin);
    let out = tokio::process::Command::new(bin)
        .args(["audit", "tail", "--workspace", "demo", "--json"])
        .env("PORTCULLIS_ADMIN_URL", &admin_url)
        .env("PORTCULLIS_ADMIN_TOKEN", &gw.admin_token)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["token_id"], first.as_str());
    assert_no_raw_token(&text);

    // Text, with a bad type: a usage of the API that fails with exit 1.
    let out = tokio::process::Command::new(bin)
        .args(["audit", "tail", "--type", "nope"])
        .env("PORTCULLIS_ADMIN_URL", &admin_url)
        .env("PORTCULLIS_ADMIN_TOKEN", &gw.admin_token)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    // --follow prints what happens after it started, once.
    let mut child = tokio::process::Command::new(bin)
        .args(["audit", "tail", "--follow", "--json", "--interval", "0.2"])
        .env("PORTCULLIS_ADMIN_URL", &admin_url)
        .env("PORTCULLIS_ADMIN_TOKEN", &gw.admin_token)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut got = Vec::new();
    // The existing events first (the admin token and "one").
    for _ in 0..2 {
        let l = tokio::time::timeout(Duration::from_secs(5), reader.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push(serde_json::from_str::<Value>(&l).unwrap());
    }
    let (_, second) = gw.create_token("demo", json!({"name": "two"})).await;
    gw.revoke("demo", &second).await;
    for _ in 0..2 {
        let l = tokio::time::timeout(Duration::from_secs(5), reader.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push(serde_json::from_str::<Value>(&l).unwrap());
    }
    assert_eq!(got[2]["type"], "token_created");
    assert_eq!(got[2]["token_id"], second.as_str());
    assert_eq!(got[3]["type"], "token_revoked");
    // Nothing printed twice in the next polls.
    let more = tokio::time::timeout(Duration::from_millis(800), reader.next_line()).await;
    assert!(more.is_err(), "an event was printed again: {more:?}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn the_offline_admin_token_create_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n[[workspaces]]\nslug = \"demo\"\n[[workspaces.servers]]\nname = \"main\"\nurl = \"http://127.0.0.1:9/mcp\"\n",
            db.display()
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "admin",
            "token",
            "create",
            "--name",
            "boot",
            "--workspace",
            "demo",
            "--json",
            "--config",
        ])
        .arg(&config)
        .env("PORTCULLIS_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = serde_json::from_slice::<Value>(&out.stdout).unwrap()["info"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let store = SqliteStore::open(&db).unwrap();
    let page = store
        .audit()
        .unwrap()
        .page(&AuditQuery {
            workspace: Some("demo".into()),
            page_size: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
    let e = &page.events[0];
    assert_eq!(e.kind, EventType::AdminTokenCreated);
    assert_eq!(e.actor.as_deref(), Some("bootstrap"));
    assert_eq!(e.token_id.as_deref(), Some(id.as_str()));
    assert_eq!(e.token_name.as_deref(), Some("boot"));
}
