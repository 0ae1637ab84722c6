//! The audit API's filters, pagination, scoping and refusals.

#[allow(unused_imports)]
use super::*;

#[tokio::test]
async fn filters_pagination_and_bad_input() {
    let up = DemoUpstream::start().await;
    let gw = Setup::new(&up.url).workspace("other", &up.url, "").start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let member = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(
            gw.create_token("demo", json!({"name": format!("t{i}"), "member_id": member}))
                .await
                .1,
        );
    }
    gw.create_token("other", json!({})).await;

    // Pages of 2, newest first, covering all five without repeats.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/v1/workspaces/demo/audit?page_size=2".to_owned(),
            Some(c) => format!("/v1/workspaces/demo/audit?page_size=2&cursor={c}"),
        };
        let v = events(&gw, &path).await;
        let list = v["events"].as_array().unwrap();
        assert!(list.len() <= 2);
        seen.extend(list.iter().map(|e| e["token_id"].as_str().unwrap().to_owned()));
        pages += 1;
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "another workspace's events never show");

    let by_token = events(&gw, &format!("/v1/workspaces/demo/audit?token_id={}", ids[1])).await;
    assert_eq!(by_token["events"].as_array().unwrap().len(), 1);
    let odd = events(&gw, "/v1/workspaces/demo/audit?member_id=odd").await;
    assert_eq!(odd["events"].as_array().unwrap().len(), 2);
    let created = events(&gw, "/v1/workspaces/demo/audit?type=token_created").await;
    assert_eq!(created["events"].as_array().unwrap().len(), 5);
    let none = events(&gw, "/v1/workspaces/demo/audit?type=token_revoked").await;
    assert_eq!(none["events"], json!([]));
    assert_eq!(none["next_cursor"], Value::Null);
    let future = events(&gw, "/v1/workspaces/demo/audit?from=2999-01-01T00:00:00Z").await;
    assert_eq!(future["events"], json!([]));
    let past = events(&gw, "/v1/workspaces/demo/audit?to=2000-01-01T00:00:00Z").await;
    assert_eq!(past["events"], json!([]));
    let window = events(
        &gw,
        "/v1/workspaces/demo/audit?from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00%2B01:00",
    )
    .await;
    assert_eq!(window["events"].as_array().unwrap().len(), 5);

    // A cursor of another workspace, or of the global listing, is refused.
    let other_cursor = events(&gw, "/v1/audit?page_size=1").await["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    for bad in [
        "from=yesterday".to_owned(),
        "to=2026-13-01T00:00:00Z".to_owned(),
        "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z".to_owned(),
        "type=token_exploded".to_owned(),
        "page_size=0".to_owned(),
        "page_size=201".to_owned(),
        "page_size=100000000000000000000".to_owned(),
        "page_size=ten".to_owned(),
        "cursor=not-a-cursor".to_owned(),
        format!("cursor={other_cursor}"),
        "colour=blue".to_owned(),
    ] {
        let r = gw.admin_call(Method::GET, &format!("/v1/workspaces/demo/audit?{bad}"), None).await;
        assert_api_error(&r, 400);
    }
    let demo_cursor = events(&gw, "/v1/workspaces/demo/audit?page_size=1").await["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = gw
        .admin_call(Method::GET, &format!("/v1/workspaces/other/audit?cursor={demo_cursor}"), None)
        .await;
    assert_api_error(&r, 400);
    let r = gw.admin_call(Method::GET, "/v1/workspaces/nowhere/audit", None).await;
    assert_api_error(&r, 404);
    let r = send(Method::GET, &gw.admin_url("/v1/workspaces/demo/audit"), &[], "").await;
    assert_api_error(&r, 401);

    // A scoped admin token sees its workspace only, and not the global trail.
    let scoped = {
        let state = gw.state();
        let req = portcullis::auth::lifecycle::NewTokenRequest {
            name: "scoped".into(),
            kind: Some(portcullis::token::TokenKind::Admin),
            workspace: Some("other".into()),
            created_by: "bootstrap".into(),
            ..Default::default()
        };
        portcullis::auth::lifecycle::create(Some(&state.verifier), &state.store, req, portcullis::token::now_unix())
            .await
            .unwrap()
            .0
    };
    let r = gw.admin_call_as(&scoped, Method::GET, "/v1/workspaces/other/audit", None).await;
    assert_eq!(r.status, 200);
    let list = r.json()["events"].as_array().unwrap().clone();
    assert!(list.iter().all(|e| e["workspace"] == "other"), "{list:#?}");
    assert!(
        of_type(&list, "admin_token_created").len() == 1,
        "the scoped token's own creation: {list:#?}"
    );
    assert_api_error(
        &gw.admin_call_as(&scoped, Method::GET, "/v1/workspaces/demo/audit", None).await,
        403,
    );
    assert_api_error(&gw.admin_call_as(&scoped, Method::GET, "/v1/audit", None).await, 403);
    // A workspace token is no admin token.
    let (ws_token, _) = gw.create_token("demo", json!({})).await;
    assert_api_error(
        &gw.admin_call_as(&ws_token, Method::GET, "/v1/workspaces/demo/audit", None).await,
        401,
    );
}
