"""The web dashboard (docs/dashboard.md, contract §9) in a real browser.

Debian's `chromium` driven by Playwright for Python (never `playwright install`:
the browser is the system's, /usr/bin/chromium). The gateway under test is a
real `portcullis serve` of its own, with `last_used_at` flushed every 300 ms
so the token list shows a use within the test. MCP calls go through the
official Python SDK (mcp_helpers.mcp_client), run on a thread of their own
because Playwright's sync API owns the main thread's event loop.

Usage and Audit read the §10 endpoints of this gateway (usage flushed every
200 ms here); nothing is skipped when an endpoint is missing: a 404 fails.

Set PORTCULLIS_SCREENSHOTS=docs/img to save a screenshot of each page; the
Usage and Audit ones show real traffic (test_real_traffic_in_usage_and_audit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.server
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import MCPError

from conftest import DEMO_UPSTREAM_KEY, free_port
from dashboard_helpers import (  # noqa: F401 - dash and browser are fixtures
    AXE,
    CHROMIUM,
    Dash,
    _sample_audit,
    _sample_usage,
    browser,
    dash,
    run_async,
    echo,
    shot,
    sign_in,
    storage_is_empty,
    watch_console,
)
from mcp_helpers import UNAUTHORIZED_CODE, mcp_client, text_of

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test-deps.sh)")


# ----------------------------------------------------------------------------- tests


def test_bad_sign_in_token_gets_a_clear_error(dash: Dash, browser) -> None:
    page = browser.new_page()
    page.goto(dash.url + "/")
    shot(page, "signin")
    page.get_by_test_id("signin-token").fill("mwa_" + "A" * 36)
    with page.expect_response(lambda r: r.url.endswith("/signin")) as resp:
        page.get_by_test_id("signin-submit").click()
    assert resp.value.status == 401
    alert = page.get_by_role("alert")
    assert "not accepted" in alert.inner_text()
    # The failed token is not echoed back into the page.
    assert "mwa_AAAA" not in page.content()
    page.close()


def test_sign_in_with_the_keyboard_only(dash: Dash, browser) -> None:
    page = browser.new_page()
    page.goto(dash.url + "/")
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement && document.activeElement.dataset.testid") == "signin-token":
            break
    else:
        pytest.fail("the admin-token field cannot be reached with Tab")
    page.keyboard.type(dash.admin_token)
    page.keyboard.press("Enter")
    page.wait_for_url(dash.url + "/workspaces")
    page.close()


def _focused_testid(page) -> str | None:
    return page.evaluate("() => document.activeElement && document.activeElement.dataset.testid")


def test_create_and_revoke_with_the_keyboard_only(dash: Dash, browser) -> None:
    page = browser.new_page()
    sign_in(page, dash)
    page.goto(dash.url + "/workspaces/demo/tokens")
    page.wait_for_load_state("networkidle")
    page.get_by_test_id("token-new").focus()
    page.keyboard.press("Enter")
    assert _focused_testid(page) == "token-name"  # the dialog opens on its first field
    page.keyboard.type("keyboard")
    page.keyboard.press("Enter")  # submits the form
    page.get_by_test_id("token-secret").filter(has_text="mwt_").wait_for(timeout=20000)
    assert _focused_testid(page) == "token-copy"
    page.keyboard.press("Escape")  # a native dialog closes on Escape, wiping the secret
    page.wait_for_function("() => !document.getElementById('new-token-dialog').open")
    assert page.get_by_test_id("token-secret").text_content() == ""
    row = page.locator('[data-testid^="token-row-"]').first
    token_id = row.get_attribute("data-id")
    page.get_by_test_id(f"token-revoke-{token_id}").focus()
    page.keyboard.press("Enter")
    page.keyboard.press("Shift+Tab")  # from Cancel (focused first) to Revoke
    assert _focused_testid(page) == "confirm"
    page.keyboard.press("Enter")
    page.get_by_test_id(f"token-status-{token_id}").filter(has_text="revoked").wait_for(timeout=20000)
    page.close()


def test_create_use_and_revoke_a_token_in_the_browser(dash: Dash, browser) -> None:
    context = browser.new_context()
    page = context.new_page()
    errors = watch_console(page)
    sign_in(page, dash)
    cookie = next(c for c in context.cookies() if c["name"] == "portcullis_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    shot(page, "workspaces")
    page.get_by_test_id("nav-workspace-demo").click()
    page.wait_for_url(re.compile(r".*/workspaces/demo/tokens$"))

    # Create a token with a member and a 24 h expiry.
    page.get_by_test_id("token-new").click()
    page.get_by_test_id("token-name").fill("laptop")
    page.get_by_test_id("token-expiry").select_option("24h")
    page.get_by_test_id("token-member").fill("alice@example.com")
    page.get_by_test_id("token-servers").select_option(["demo"])
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/v1/workspaces/demo/tokens")) as created:
        page.get_by_test_id("token-create").click()
    assert created.value.status == 201
    secret = page.get_by_test_id("token-secret").inner_text()
    assert re.fullmatch(r"mwt_[0-9A-Za-z]{36}", secret), secret
    mcp_json = json.loads(page.get_by_test_id("token-mcp-json").inner_text())
    assert mcp_json["mcpServers"]["demo"]["headers"]["Authorization"] == f"Bearer {secret}"
    assert mcp_json["mcpServers"]["demo"]["url"] == dash.ws_url("demo")
    recipes = page.locator("#recipe-claude-desktop, #recipe-cursor, #recipe-claude-code, #recipe-vscode").all_text_contents()
    assert len(recipes) == 4 and all(secret in r for r in recipes)
    assert "mcp-remote" in recipes[0] and "claude mcp add" in recipes[2]
    # Never in browser storage, a URL or a cookie.
    assert storage_is_empty(page)
    assert secret not in page.url
    assert all(secret not in c["value"] for c in context.cookies())
    page.set_viewport_size({"width": 1280, "height": 1600})
    shot(page, "new-token")
    page.set_viewport_size({"width": 1280, "height": 720})

    token_id = created.value.json()["info"]["id"]
    page.get_by_role("button", name="Done").click()
    assert page.get_by_test_id("token-secret").text_content() == ""  # wiped on close
    assert page.get_by_test_id(f"token-status-{token_id}").inner_text() == "active"
    assert page.get_by_test_id(f"token-last-used-{token_id}").inner_text() == "never"

    # Use it with the real SDK; the list then shows a last-used time.
    assert run_async(echo, dash.ws_url("demo"), secret, "from the dashboard") == "from the dashboard"
    deadline = time.monotonic() + 10
    while True:
        page.reload()
        last_used = page.get_by_test_id(f"token-last-used-{token_id}")
        last_used.wait_for()
        if last_used.inner_text() != "never":
            break
        assert time.monotonic() < deadline, "last_used_at never reached the token list"
        time.sleep(0.3)
    assert page.get_by_test_id(f"token-status-{token_id}").inner_text() == "active"
    assert secret not in page.content()  # shown once: not after a reload
    shot(page, "tokens")

    # Revoke with an SDK session open: asks first; the row changes without
    # a reload, and the session's next call is refused at once.
    opened, revoked = threading.Event(), threading.Event()

    async def open_session_then_call_again() -> Any:
        async with mcp_client(dash.ws_url("demo"), secret, mode="legacy") as client:
            assert text_of(await client.call_tool("echo", {"text": "before"})) == "before"
            opened.set()
            await asyncio.to_thread(revoked.wait, 30)
            try:
                await client.call_tool("echo", {"text": "after"})
            except MCPError as e:
                return e.code
            return "accepted"

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        sdk = ex.submit(asyncio.run, open_session_then_call_again())
        assert opened.wait(30), sdk.exception() if sdk.done() else "SDK session did not open"
        page.evaluate("() => { window.__same_document = true; }")
        page.get_by_test_id(f"token-revoke-{token_id}").click()
        assert page.get_by_test_id("confirm").is_visible()
        page.get_by_test_id("confirm").click()
        page.get_by_test_id(f"token-status-{token_id}").filter(has_text="revoked").wait_for(timeout=20000)
        revoked.set()
        assert sdk.result(timeout=30) == UNAUTHORIZED_CODE
    assert page.evaluate("() => window.__same_document === true"), "the page reloaded"
    r = httpx.post(dash.ws_url("demo"), json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                   headers={"Authorization": f"Bearer {secret}", "Accept": "application/json, text/event-stream"})
    assert r.status_code == 401 and r.json()["error"]["code"] == UNAUTHORIZED_CODE

    # Servers tab: health and tool counts, never a header value.
    page.get_by_test_id("tab-servers").click()
    page.wait_for_url(re.compile(r".*/servers$"))
    page.get_by_test_id("server-health-demo").filter(has_text="up").wait_for(timeout=20000)
    assert DEMO_UPSTREAM_KEY not in page.content()
    assert not [e for e in errors if "Content Security Policy" in e], errors

    # Sign out: the cookie is gone and the session with it.
    page.get_by_test_id("signout").click()
    page.wait_for_url(dash.url + "/")
    assert not [c for c in context.cookies() if c["name"] == "portcullis_session" and c["value"]]
    page.goto(dash.url + "/workspaces/demo/tokens")
    assert page.url == dash.url + "/"
    context.close()


def test_aggregate_workspace_servers_show_tool_counts(dash: Dash, browser) -> None:
    page = browser.new_page()
    sign_in(page, dash)
    created = dash.api("POST", "/v1/workspaces/team/tokens", json={"name": "lister"}).json()

    async def list_tools(url: str, token: str) -> int:
        async with mcp_client(url, token) as client:
            return len((await client.list_tools()).tools)

    assert run_async(list_tools, dash.ws_url("team"), created["token"]) > 0
    page.goto(dash.url + "/workspaces/team/servers")
    page.get_by_test_id("server-health-tools").filter(has_text="up").wait_for(timeout=20000)
    assert page.get_by_test_id("server-tools-tools").inner_text().isdigit()
    assert DEMO_UPSTREAM_KEY not in page.content()
    shot(page, "servers")
    page.close()


def test_scoped_admin_sees_only_its_workspace(dash: Dash, browser) -> None:
    page = browser.new_page()
    sign_in(page, dash, dash.scoped_token)
    assert page.get_by_test_id("nav-workspace-team").is_visible()
    assert page.get_by_test_id("nav-workspace-demo").count() == 0
    resp = page.goto(dash.url + "/workspaces/demo/tokens")
    assert resp.status == 403
    page.close()


class _OtherOrigin(http.server.BaseHTTPRequestHandler):
    admin = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = (
            "<!doctype html><title>elsewhere</title>"
            f'<form id="f" method="post" action="{self.admin}/v1/workspaces/demo/tokens">'
            '<input name="name" value="csrf"></form>'
            f'<form id="s" method="post" action="{self.admin}/signin"><input name="token" value="x"></form>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a) -> None:
        pass


def test_csrf_from_another_origin_fails(dash: Dash, browser) -> None:
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, dash)
    before = len(dash.api("GET", "/v1/workspaces/demo/tokens?page_size=200").json()["tokens"])

    # A page on another loopback port: same site (ports do not count), so
    # even SameSite=Strict sends the cookie; the CSRF token and the
    # Origin / Sec-Fetch-Site checks are what stop it.
    _OtherOrigin.admin = dash.url
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _OtherOrigin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        status = page.evaluate(
            """async (u) => { try { const r = await fetch(u, {method: 'POST', credentials: 'include', mode: 'no-cors',
                 headers: {'Content-Type': 'text/plain'}, body: '{"name":"csrf"}'}); return r.type; } catch (e) { return 'blocked'; } }""",
            dash.url + "/v1/workspaces/demo/tokens",
        )
        assert status in ("opaque", "blocked")
        with page.expect_navigation() as nav:
            page.evaluate("() => document.getElementById('f').submit()")
        assert nav.value.status == 403
        assert "csrf_failed" in page.content()
        page.goto(f"http://127.0.0.1:{port}/")
        with page.expect_navigation() as nav:
            page.evaluate("() => document.getElementById('s').submit()")
        assert nav.value.status == 403  # no login CSRF either
    finally:
        server.shutdown()
        server.server_close()
    after = len(dash.api("GET", "/v1/workspaces/demo/tokens?page_size=200").json()["tokens"])
    assert after == before, "a cross-origin request created a token"

    # The cookie alone, without the header, or with a wrong one: 403 JSON.
    session = next(c["value"] for c in context.cookies() if c["name"] == "portcullis_session")
    jar = {"Cookie": f"portcullis_session={session}", "Authorization": ""}
    for extra in ({}, {"X-CSRF-Token": "0" * 64}):
        r = httpx.post(dash.url + "/v1/workspaces/demo/tokens", json={"name": "x"},
                       headers={"Cookie": jar["Cookie"], **extra}, timeout=10)
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", r.text
    # A read with the cookie needs no CSRF token.
    r = httpx.get(dash.url + "/v1/workspaces/demo/tokens", headers={"Cookie": jar["Cookie"]}, timeout=10)
    assert r.status_code == 200
    context.close()


def test_usage_and_audit_tabs_render_the_contract_shapes(dash: Dash, browser) -> None:
    """The script against fixed answers of the §10 shapes: many buckets and
    keys, errors and 429s in every series, so the chart's patterns, the key
    selector and the exports are checked on known figures (the tests below
    run the same tabs against the real endpoints)."""
    context = browser.new_context()
    page = context.new_page()
    errors = watch_console(page)
    sign_in(page, dash)
    page.route("**/v1/workspaces/demo/usage?**", _sample_usage)
    page.route("**/v1/workspaces/demo/audit?**", _sample_audit)
    page.goto(dash.url + "/workspaces/demo/usage")
    chart = page.get_by_test_id("usage-chart")
    chart.locator("svg g.bar rect").first.wait_for(timeout=20000)
    assert chart.locator("svg title").first.text_content().startswith("Requests over time")
    assert chart.locator('rect[fill="url(#hatch)"]').count() > 0  # errors: a pattern, not a colour only
    assert chart.locator('rect[fill="url(#dots)"]').count() > 0   # 429s likewise
    rows = page.get_by_test_id("usage-row")
    rows.nth(4).wait_for(timeout=20000)
    texts = " ".join(rows.all_inner_texts())
    assert "alice@example.com" in texts and "echo" in texts
    page.locator("#usage-key").select_option("tkn_ci")  # one token's requests over time
    page.wait_for_function("() => document.querySelector('#usage-chart svg title').textContent.includes('tkn_ci')")
    page.locator("#usage-key").select_option("")

    page.goto(dash.url + "/workspaces/demo/audit")
    page.locator('[data-testid="audit-row"][data-type="tool_call"]').wait_for(timeout=20000)
    assert page.get_by_test_id("audit-row").count() == 4
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download CSV").click()
    csv = Path(dl.value.path()).read_text().splitlines()
    assert csv[0].startswith("id,at,type,actor") and len(csv) == 5
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download JSON").click()
    assert [e["type"] for e in json.loads(Path(dl.value.path()).read_text())][0] == "token_revoked"
    assert not errors, errors
    context.close()


def test_usage_and_audit_endpoints_are_served(dash: Dash) -> None:
    # What the tests below read; a 404 here is a routing bug, not a skip.
    for path in ("/v1/workspaces/demo/usage", "/v1/workspaces/demo/audit", "/v1/audit/stats"):
        r = dash.api("GET", path)
        assert r.status_code == 200, (path, r.text)


def _usage_requests(page) -> list[str]:
    """The usage URLs the page's script asks for."""
    seen: list[str] = []
    page.on("request", lambda req: seen.append(req.url) if "/usage?" in req.url else None)
    return seen


def test_usage_chart_shows_requests(dash: Dash, browser) -> None:
    created = dash.api("POST", "/v1/workspaces/demo/tokens", json={"name": "usage", "member_id": "bob"}).json()
    for i in range(3):
        run_async(echo, dash.ws_url("demo"), created["token"], f"u{i}")
    page = browser.new_page()
    errors = watch_console(page)
    asked = _usage_requests(page)
    sign_in(page, dash)
    deadline = time.monotonic() + 30
    while True:
        page.goto(dash.url + "/workspaces/demo/usage")
        page.get_by_test_id("usage-chart").locator("svg").wait_for(timeout=20000)
        page.wait_for_load_state("networkidle")
        if "bob" in " ".join(page.locator("#usage-members").get_by_test_id("usage-row").all_inner_texts()):
            break
        assert time.monotonic() < deadline, "usage never showed bob's requests"
        time.sleep(0.5)
    assert page.get_by_test_id("usage-chart").locator("g.bar rect").count() > 0
    # Explicit parameters: the page does not lean on the API's defaults.
    assert asked and all("bucket=" in u and "group_by=" in u and "from=" in u and "to=" in u for u in asked), asked
    assert {re.search(r"group_by=(\w+)", u).group(1) for u in asked} >= {"member", "tool"}, asked
    assert not errors, errors
    page.close()


def test_audit_rows_show_token_events(dash: Dash, browser) -> None:
    created = dash.api("POST", "/v1/workspaces/demo/tokens", json={"name": "audited"}).json()
    dash.api("DELETE", f"/v1/workspaces/demo/tokens/{created['info']['id']}")
    page = browser.new_page()
    errors = watch_console(page)
    sign_in(page, dash)
    page.goto(dash.url + "/workspaces/demo/audit")
    page.locator('[data-testid="audit-row"][data-type="token_revoked"]').first.wait_for(timeout=20000)
    assert page.locator('[data-testid="audit-row"][data-type="token_created"]').count() > 0
    # The writer's counters, drops included, as /v1/audit/stats says.
    stats = dash.api("GET", "/v1/audit/stats").json()
    line = page.get_by_test_id("audit-stats")
    line.filter(has_text="dropped").wait_for(timeout=20000)
    assert line.get_attribute("data-dropped") == str(stats["dropped"])
    assert f"{stats['dropped']} dropped" in line.inner_text()
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download CSV").click()
    text = Path(dl.value.path()).read_text()
    assert text.startswith("id,at,type,") and "token_revoked" in text
    assert "mwt_" not in text
    assert not errors, errors
    page.close()


def test_audit_tab_shows_dropped_events_as_a_warning(dash: Dash, browser) -> None:
    """Drops cannot be caused on demand against a real writer, so the stats
    answer is replaced in this page only (the shape is the real one's)."""
    real = dash.api("GET", "/v1/audit/stats").json()
    page = browser.new_page()
    sign_in(page, dash)
    body = json.dumps({**real, "dropped": 17})
    page.route("**/v1/audit/stats", lambda route: route.fulfill(status=200, content_type="application/json", body=body))
    page.goto(dash.url + "/workspaces/demo/audit")
    line = page.get_by_test_id("audit-stats")
    line.filter(has_text="17 dropped").wait_for(timeout=20000)
    assert "gaps" in line.inner_text()
    assert "warning" in (line.get_attribute("class") or "")
    page.close()


def test_real_traffic_in_usage_and_audit(dash: Dash, browser) -> None:
    """Two members' MCP calls, a 429 and an error through the gateway, then
    the Usage and Audit tabs show them (and are the docs' screenshots)."""
    alice = dash.api("POST", "/v1/workspaces/demo/tokens",
                     json={"name": "alice-laptop", "email": "alice@example.com", "requests_per_minute": 6}).json()
    carol = dash.api("POST", "/v1/workspaces/demo/tokens", json={"name": "carol-ci", "member_id": "carol"}).json()
    for i in range(3):
        run_async(echo, dash.ws_url("demo"), carol["token"], f"c{i}")
    # Alice's limit is 6 a minute: one MCP session (about five requests:
    # initialize, notification, stream, call, close), then plain calls over it.
    run_async(echo, dash.ws_url("demo"), alice["token"], "hello")
    statuses = []
    for i in range(3):
        r = httpx.post(dash.ws_url("demo"), timeout=10, headers={
            "Authorization": f"Bearer {alice['token']}", "Accept": "application/json, text/event-stream"},
            json={"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 2}}})
        statuses.append(r.status_code)
    assert 429 in statuses, statuses
    # An error: not JSON-RPC (400).
    r = httpx.post(dash.ws_url("demo"), content=b'{"hello": 1}', timeout=10, headers={
        "Authorization": f"Bearer {carol['token']}", "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream"})
    assert r.status_code == 400, r.text
    # Both test tokens are revoked before anything is shown.
    for t in (alice, carol):
        assert dash.api("DELETE", f"/v1/workspaces/demo/tokens/{t['info']['id']}").status_code == 200

    deadline = time.monotonic() + 30
    while True:
        rows = dash.api("GET", "/v1/workspaces/demo/usage?bucket=minute&group_by=member").json()["buckets"]
        got = {b["key"]: b for b in rows}
        if "alice@example.com" in got and "carol" in got and sum(b["rate_limited"] for b in rows) and sum(b["errors"] for b in rows):
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.3)

    page = browser.new_page()
    errors = watch_console(page)
    sign_in(page, dash)
    page.goto(dash.url + "/workspaces/demo/usage")
    page.locator("#usage-range").select_option("1h")
    page.wait_for_load_state("networkidle")
    page.locator("#usage-group").select_option("member")
    page.wait_for_function("() => document.querySelector('#usage-chart svg title').textContent.includes('members')")
    page.get_by_test_id("usage-chart").locator("g.bar rect").first.wait_for(timeout=20000)
    page.wait_for_load_state("networkidle")
    members = " ".join(page.locator("#usage-members").get_by_test_id("usage-row").all_inner_texts())
    assert "alice@example.com" in members and "carol" in members, members
    tools = " ".join(page.locator("#usage-tools").get_by_test_id("usage-row").all_inner_texts())
    assert "echo" in tools, tools
    page.set_viewport_size({"width": 1280, "height": 1100})
    shot(page, "usage")
    page.set_viewport_size({"width": 1280, "height": 720})

    page.goto(dash.url + "/workspaces/demo/audit")
    page.locator('[data-testid="audit-row"][data-type="tool_call"]').first.wait_for(timeout=20000)
    page.get_by_test_id("audit-stats").filter(has_text="dropped").wait_for(timeout=20000)
    page.wait_for_load_state("networkidle")
    assert "mwt_" not in page.content()
    shot(page, "audit")
    assert not errors, errors
    page.close()


@pytest.mark.skipif(not AXE.is_file(), reason="axe-core is not installed (tests/js: npm ci)")
def test_every_page_passes_axe(dash: Dash, browser) -> None:
    # axe is injected as a script, which the page's own CSP would refuse:
    # this context bypasses CSP for that only.
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    axe = AXE.read_text()

    def check(name: str) -> None:
        page.add_script_tag(content=axe)
        result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]
               if v["impact"] in ("serious", "critical")]
        assert not bad, f"{name}: {bad}"

    page.goto(dash.url + "/")
    check("sign-in")
    sign_in(page, dash)
    check("workspaces")
    for tab in ("tokens", "usage", "audit", "servers"):
        page.goto(f"{dash.url}/workspaces/demo/{tab}")
        page.wait_for_load_state("networkidle")
        check(tab)
    page.goto(f"{dash.url}/workspaces/demo/tokens")
    page.wait_for_load_state("networkidle")
    page.get_by_test_id("token-new").click()
    check("new-token dialog")
    page.get_by_test_id("token-name").fill("axe")
    page.get_by_test_id("token-create").click()
    page.get_by_test_id("token-secret").filter(has_text="mwt_").wait_for()
    check("new token shown")
    context.close()
