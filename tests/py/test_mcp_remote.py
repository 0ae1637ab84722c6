"""`mcp-remote` (npm, the stdio <-> HTTP bridge Claude Desktop and other stdio-only
clients run: `npx mcp-remote https://gateway/ws/<slug>`) given nothing but the
workspace URL, against the gateway as OAuth 2.1 authorization server (docs/oauth.md).

mcp-remote does everything itself: it probes the URL, reads `resource_metadata`
from the 401, fetches both metadata documents, registers (RFC 7591), listens on a
loopback callback port and opens "the browser" at the authorization URL. Its
browser opener is the `open` package, which runs its bundled `xdg-open`; with no
desktop session that honours `$BROWSER`. `$BROWSER` here is a two-line script that
hands the URL to this test, which opens it in Debian's headless chromium: the
sign-in page, the member's sign-in link (`portcullis member invite`), back to the
consent page, Allow, and the redirect lands on mcp-remote's own callback server.
The test then speaks MCP to mcp-remote over its stdio, as Claude Desktop would.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from conftest import (
    TESTS_JS,
    ProcessManager,
    Upstream,
    _die_with_parent,
    free_port,
)
from dashboard_helpers import CHROMIUM, CHROMIUM_ARGS
from oauth_helpers import OAuthGateway, start_oauth_gateway

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test-deps.sh)")
playwright_sync = pytest.importorskip("playwright.sync_api")

MCP_REMOTE = TESTS_JS / "node_modules" / "mcp-remote" / "dist" / "proxy.js"
NODE = shutil.which("node")
STEP_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def gw(procs: ProcessManager, portcullis_bin: Path, tmp_path_factory, demo_upstream: Upstream) -> OAuthGateway:
    # mcp-remote refreshes an access token once it is within 60 s of its expiry
    # (TOKEN_EXPIRY_MARGIN_MS): a 65-second token is used as is for 5 s, and then
    # refreshed before the next request.
    return start_oauth_gateway(procs, portcullis_bin, tmp_path_factory.mktemp("mcp-remote-gw"), demo_upstream,
                               name="mcp-remote", access_token_ttl="65s")


class McpRemote:
    """mcp-remote as Claude Desktop runs it: a child process spoken to over stdio,
    with nothing but the URL. It picks its callback port itself (derived from the URL)."""

    def __init__(self, url: str, home: Path, browser: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.config_dir = home / "mcp-auth"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            # Where mcp-remote keeps client_info.json and tokens.json (default ~/.mcp-auth).
            "MCP_REMOTE_CONFIG_DIR": str(self.config_dir),
            # The `open` package's xdg-open calls $BROWSER when there is no desktop session.
            "BROWSER": str(browser),
            "NO_COLOR": "1",
            **(env or {}),
        }
        self.log = log
        self._stderr = open(log, "ab")
        self.proc = subprocess.Popen(
            [NODE, str(MCP_REMOTE), url, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env, cwd=str(home),
            start_new_session=True, preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.lines: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._next_id = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                self.lines.put({"unparsed": raw.decode("utf-8", "replace")})

    def send(self, method: str, params: dict | None = None, *, notify: bool = False) -> int | None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        rid = None
        if not notify:
            self._next_id += 1
            rid = msg["id"] = self._next_id
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()
        return rid

    def answer(self, rid: int, timeout: float = STEP_TIMEOUT) -> dict:
        """The response to request `rid`; notifications on the way are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no answer to request {rid} from mcp-remote; its log:\n{self.log_tail()}")
            try:
                msg = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"mcp-remote exited ({self.proc.returncode}); its log:\n{self.log_tail()}") from None
                continue
            if msg.get("id") == rid and ("result" in msg or "error" in msg):
                return msg

    def request(self, method: str, params: dict | None = None) -> dict:
        return self.answer(self.send(method, params))  # type: ignore[arg-type]

    def tokens(self) -> dict:
        files = list(self.config_dir.glob("mcp-remote-v*/*_tokens.json"))
        assert len(files) == 1, files
        return json.loads(files[0].read_text())

    def client_info(self) -> dict:
        files = list(self.config_dir.glob("mcp-remote-v*/*_client_info.json"))
        assert len(files) == 1, files
        return json.loads(files[0].read_text())

    def log_tail(self, limit: int = 6000) -> str:
        self._stderr.flush()
        return self.log.read_bytes()[-limit:].decode("utf-8", "replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._stderr.close()


def _fake_browser(tmp: Path) -> tuple[Path, Path]:
    """An executable for $BROWSER that records the URL it is asked to open."""
    opened = tmp / "opened-urls"
    script = tmp / "browser.sh"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{opened}'\n", encoding="utf-8")
    script.chmod(0o755)
    return script, opened


def _wait_for_url(opened: Path, count: int, remote: McpRemote) -> str:
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        urls = opened.read_text().splitlines() if opened.exists() else []
        if len(urls) >= count:
            return urls[count - 1]
        if remote.proc.poll() is not None:
            raise AssertionError(f"mcp-remote exited ({remote.proc.returncode}); its log:\n{remote.log_tail()}")
        time.sleep(0.05)
    raise AssertionError(f"mcp-remote opened no browser (#{count}); its log:\n{remote.log_tail()}")


def _text(answer: dict) -> str:
    assert "result" in answer, answer
    return "".join(c.get("text", "") for c in answer["result"]["content"])


@pytest.mark.skipif(NODE is None or not MCP_REMOTE.is_file(), reason="node or tests/js/node_modules/mcp-remote missing (scripts/test-deps.sh)")
def test_mcp_remote_with_only_the_url_signs_in_calls_tools_refreshes_and_reauthorizes(gw: OAuthGateway, tmp_path: Path) -> None:
    ws_url = f"{gw.base}/ws/demo"
    browser_script, opened = _fake_browser(tmp_path)
    link = gw.invite("desk@example.com")
    members = gw.api("GET", "/v1/workspaces/demo/members").json()["members"]
    member_id = next(m["id"] for m in members if m["email"] == "desk@example.com")
    remote = McpRemote(ws_url, tmp_path, browser_script, tmp_path / "mcp-remote.log")
    seen: dict[str, Any] = {}
    try:
        with playwright_sync.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(f"{m.location.get('url')}: {m.text}") if m.type == "error" else None)

            # 1. mcp-remote found the server, registered, and opened the browser.
            auth_url = _wait_for_url(opened, 1, remote)
            seen["auth_url"] = auth_url
            redirect_uri = parse_qs(urlparse(auth_url).query)["redirect_uri"][0]
            cb_port = urlparse(redirect_uri).port
            # Not signed in: the "Sign in to continue" page; the link brings the member back.
            resp = page.goto(auth_url)
            seen["signin_status"] = resp.status if resp else None
            seen["signin_client"] = page.get_by_test_id("consent-client").inner_text()
            seen["sso_links"] = page.get_by_test_id("signin-sso").count()
            page.goto(link)
            page.get_by_test_id("signin-link-continue").click()
            page.wait_for_url(gw.base + "/oauth/authorize?**")
            seen["workspace"] = page.get_by_test_id("consent-workspace").inner_text()
            seen["client"] = page.get_by_test_id("consent-client").inner_text()
            seen["checked"] = page.get_by_test_id("consent-server-demo").is_checked()
            page.get_by_test_id("consent-allow").click()
            # The redirect reaches mcp-remote's own callback server.
            page.wait_for_url(f"http://localhost:{cb_port}/oauth/callback?**")
            seen["callback_url"] = page.url

            # 2. MCP over stdio, as Claude Desktop speaks it.
            init = remote.request(
                "initialize",
                {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "pytest-desktop", "version": "1"}},
            )
            seen["init"] = init
            remote.send("notifications/initialized", notify=True)
            seen["tools"] = remote.request("tools/list")
            seen["echo1"] = _text(remote.request("tools/call", {"name": "echo", "arguments": {"text": "via mcp-remote"}}))
            first_tokens = remote.tokens()
            seen["client_info"] = remote.client_info()

            # 3. The access token lives 65 s and mcp-remote refreshes it 60 s before
            # it expires: after 6 s the next call needs a refresh.
            time.sleep(6)
            seen["echo2"] = _text(remote.request("tools/call", {"name": "echo", "arguments": {"text": "after refresh"}}))
            second_tokens = remote.tokens()

            # 4. The owner disconnects the app. mcp-remote's refresh is refused, so it
            # signs in again mid-session: a second browser visit, straight to the
            # consent page (the member's session is still there), and the call it was
            # making goes through on the new grant.
            grants = gw.api("GET", "/v1/workspaces/demo/grants").json()["grants"]
            active = [g for g in grants if g["status"] == "active"]
            assert len(active) == 1, grants
            seen["grant1"] = active[0]
            r = gw.api("DELETE", f"/v1/workspaces/demo/grants/{active[0]['id']}")
            assert r.status_code in (200, 204), r.text
            rid = remote.send("tools/call", {"name": "echo", "arguments": {"text": "after reauth"}})
            auth_url2 = _wait_for_url(opened, 2, remote)
            page.goto(auth_url2)
            seen["reauth_client"] = page.get_by_test_id("consent-client").inner_text()
            page.get_by_test_id("consent-allow").click()
            page.wait_for_url(f"http://localhost:{cb_port}/oauth/callback?**")
            seen["echo3"] = _text(remote.answer(rid))  # type: ignore[arg-type]
            third_tokens = remote.tokens()
            seen["console_errors"] = errors
            browser.close()

        # 5. Claude Desktop restarts mcp-remote: the stored tokens and registration
        # are used again, with no browser and no new grant.
        remote.close()
        remote = McpRemote(ws_url, tmp_path, browser_script, tmp_path / "mcp-remote-2.log")
        remote.request(
            "initialize",
            {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "pytest-desktop", "version": "1"}},
        )
        remote.send("notifications/initialized", notify=True)
        seen["echo4"] = _text(remote.request("tools/call", {"name": "echo", "arguments": {"text": "after restart"}}))
        seen["opened_after_restart"] = opened.read_text().splitlines()
    finally:
        remote.close()

    # Discovery, registration and the authorization request, all from the URL alone.
    q = {k: v[0] for k, v in parse_qs(urlparse(seen["auth_url"]).query).items()}
    assert seen["auth_url"].startswith(f"{gw.base}/oauth/authorize?")
    assert q["resource"] == ws_url
    assert q["code_challenge_method"] == "S256" and q["response_type"] == "code"
    assert q["redirect_uri"] == f"http://localhost:{cb_port}/oauth/callback"
    assert q["client_id"].startswith("mcc_"), "registered with the gateway (RFC 7591)"
    assert seen["client_info"]["client_id"] == q["client_id"]
    cb = {k: v[0] for k, v in parse_qs(urlparse(seen["callback_url"]).query).items()}
    assert cb["iss"] == gw.base and cb["state"] == q["state"] and cb["code"].startswith("mwc_")
    # The pages the member saw.
    assert seen["signin_status"] == 401
    assert seen["signin_client"] == "MCP CLI Proxy"
    assert seen["sso_links"] == 0, "no single sign-on link without [auth.oidc]"
    assert (seen["workspace"], seen["client"], seen["checked"]) == ("demo", "MCP CLI Proxy", True)
    assert seen["reauth_client"] == "MCP CLI Proxy"
    # Chrome logs the sign-in page's 401 and mcp-remote's callback server has no
    # favicon; anything else (a CSP violation, a script error) fails.
    expected = (f"{gw.base}/oauth/authorize?", f"http://localhost:{cb_port}/favicon.ico: ")
    assert [e for e in seen["console_errors"] if not e.startswith(expected)] == [], seen["console_errors"]
    # MCP through the bridge.
    assert seen["init"]["result"]["serverInfo"], seen["init"]
    assert "echo" in [t["name"] for t in seen["tools"]["result"]["tools"]]
    assert "via mcp-remote" in seen["echo1"]
    assert "after refresh" in seen["echo2"]
    assert "after reauth" in seen["echo3"]
    assert "after restart" in seen["echo4"]
    assert len(seen["opened_after_restart"]) == 2, "no third sign-in after the restart"
    # What mcp-remote holds: a workspace OAuth access token and a refresh token, both
    # rotated by the refresh, and a new pair from the second sign-in.
    assert first_tokens["access_token"].startswith("mwt_") and first_tokens["refresh_token"].startswith("mwr_")
    assert second_tokens["access_token"] != first_tokens["access_token"]
    assert second_tokens["refresh_token"] != first_tokens["refresh_token"]
    assert third_tokens["access_token"] not in (first_tokens["access_token"], second_tokens["access_token"])
    # The refresh token is never a bearer credential.
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    hdrs = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    r = httpx.post(ws_url, json=ping, headers={**hdrs, "authorization": f"Bearer {third_tokens['refresh_token']}"})
    assert r.status_code == 401
    # The gateway's side: what mcp-remote holds is a workspace token of kind oauth...
    r = httpx.get(f"{gw.base}/v1/tokens/self", headers={"authorization": f"Bearer {third_tokens['access_token']}"})
    assert r.status_code == 200, r.text
    assert (r.json()["kind"], r.json()["workspace"], r.json()["name"]) == ("oauth", "demo", "MCP CLI Proxy")
    # ...issued to this member through a grant that shows up as a connected app (and,
    # one per refresh, left out of the token listing people read).
    assert [t for t in gw.api("GET", "/v1/workspaces/demo/tokens").json()["tokens"] if t.get("kind") == "oauth"] == []
    grants = gw.api("GET", "/v1/workspaces/demo/grants").json()["grants"]
    assert sorted(g["status"] for g in grants) == ["active", "revoked"], grants
    assert all(g["client_name"] == "MCP CLI Proxy" and g["member_id"] == member_id for g in grants), grants
    assert seen["grant1"]["id"] in [g["id"] for g in grants if g["status"] == "revoked"]
    # The audit trail: a code exchange for each sign-in, and at least one refresh.
    events = gw.api("GET", "/v1/workspaces/demo/audit", params={"type": "oauth_tokens_issued", "member_id": member_id}).json()["events"]
    hows = [e["method"] for e in events]
    assert hows.count("authorization_code") == 2, events
    assert hows.count("refresh_token") >= 1, events
    grant_ids = {g["id"] for g in grants}
    for e in events:
        rec = gw.api("GET", f"/v1/workspaces/demo/tokens/{e['token_id']}").json()
        assert (rec["kind"], rec["name"], rec["member_id"]) == ("oauth", "MCP CLI Proxy", member_id), rec
        assert rec["created_by"] in grant_ids, rec
    created = gw.api("GET", "/v1/workspaces/demo/audit", params={"type": "grant_created", "member_id": member_id}).json()["events"]
    assert len(created) == 2 and all(e["method"] == "MCP CLI Proxy" for e in created), created
    revoked = gw.api("GET", "/v1/workspaces/demo/audit", params={"type": "grant_revoked"}).json()["events"]
    assert [e["method"] for e in revoked] == ["admin"], revoked


@pytest.mark.skipif(NODE is None or not MCP_REMOTE.is_file(), reason="node or tests/js/node_modules/mcp-remote missing (scripts/test-deps.sh)")
def test_mcp_remote_with_a_header_token_opens_no_browser(gw: OAuthGateway, tmp_path: Path) -> None:
    """The README's recipe for clients without OAuth, on a gateway with OAuth on:
    `mcp-remote URL --header Authorization:${PORTCULLIS_AUTH}` with the token in the
    environment. The token works as before and mcp-remote starts no sign-in."""
    r = gw.api("POST", "/v1/workspaces/demo/tokens", json={"name": "desktop-header"})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    browser_script, opened = _fake_browser(tmp_path)
    remote = McpRemote(
        f"{gw.base}/ws/demo", tmp_path, browser_script, tmp_path / "mcp-remote.log",
        "--header", "Authorization:${PORTCULLIS_AUTH}", env={"PORTCULLIS_AUTH": f"Bearer {token}"},
    )
    try:
        init = remote.request(
            "initialize",
            {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "pytest-desktop", "version": "1"}},
        )
        remote.send("notifications/initialized", notify=True)
        echo = _text(remote.request("tools/call", {"name": "echo", "arguments": {"text": "via header"}}))
    finally:
        remote.close()
    assert init["result"]["serverInfo"], init
    assert "via header" in echo
    assert not opened.exists(), opened.read_text()
    assert not list(remote.config_dir.glob("mcp-remote-v*/*_tokens.json")), "no OAuth tokens"


@pytest.mark.skipif(NODE is None or not MCP_REMOTE.is_file(), reason="node or tests/js/node_modules/mcp-remote missing (scripts/test-deps.sh)")
def test_mcp_remote_with_single_sign_on_comes_back_to_the_consent_page(
    procs: ProcessManager, portcullis_bin: Path, tmp_path_factory, tmp_path: Path, demo_upstream: Upstream
) -> None:
    """With `[auth.oidc]` configured, the "Sign in to continue" page offers single
    sign-on; after the provider (panva's oidc-provider, tests/js/oidc-provider.mjs)
    the person lands back on the consent page of the same authorization request,
    not on /me, and mcp-remote's sign-in completes."""
    from sso_helpers import admin_api, admin_token, log_in_at_provider, start_gateway, start_op

    listen_port = free_port()
    op = start_op(procs, f"http://127.0.0.1:{listen_port}/signin/oidc/callback")
    sgw = start_gateway(
        procs, portcullis_bin, tmp_path_factory.mktemp("mcp-remote-sso"), demo_upstream, op, listen_port,
        extra="\n[oauth]\nenabled = true\n",
    )
    token = admin_token(sgw, portcullis_bin)
    r = admin_api(sgw, token, "POST", "/v1/workspaces/team/members", json={"email": "ann@example.com", "role": "member"})
    assert r.status_code == 201, r.text
    member_id = r.json()["id"]
    browser_script, opened = _fake_browser(tmp_path)
    ws_url = f"{sgw.public}/ws/team"
    remote = McpRemote(ws_url, tmp_path, browser_script, tmp_path / "mcp-remote.log")
    seen: dict[str, Any] = {}
    try:
        with playwright_sync.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            auth_url = _wait_for_url(opened, 1, remote)
            cb_port = urlparse(parse_qs(urlparse(auth_url).query)["redirect_uri"][0]).port
            resp = page.goto(auth_url)
            seen["signin_status"] = resp.status if resp else None
            page.get_by_test_id("signin-sso").click()
            page.wait_for_url(op.issuer + "/**")
            log_in_at_provider(page, "ann@example.com")
            # Back from the provider: the consent page of the request mcp-remote made.
            page.wait_for_url(sgw.public + "/oauth/authorize?**")
            seen["back_to"] = page.url
            seen["client"] = page.get_by_test_id("consent-client").inner_text()
            page.get_by_test_id("consent-allow").click()
            page.wait_for_url(f"http://localhost:{cb_port}/oauth/callback?**")
            # The return cookie is spent: a later visit to /me stays on /me.
            seen["cookies"] = [c["name"] for c in page.context.cookies(sgw.public)]
            browser.close()
        remote.request(
            "initialize",
            {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "pytest-desktop", "version": "1"}},
        )
        remote.send("notifications/initialized", notify=True)
        seen["echo"] = _text(remote.request("tools/call", {"name": "echo", "arguments": {"text": "via sso"}}))
    finally:
        remote.close()
    assert seen["signin_status"] == 401
    assert seen["back_to"] == auth_url
    assert seen["client"] == "MCP CLI Proxy"
    assert "portcullis_next" not in seen["cookies"], seen["cookies"]
    assert "via sso" in seen["echo"]
    signins = admin_api(sgw, token, "GET", "/v1/workspaces/team/audit", params={"type": "signin", "member_id": member_id}).json()["events"]
    assert [e["method"] for e in signins] == ["oidc"], signins
    grants = admin_api(sgw, token, "GET", "/v1/workspaces/team/grants").json()["grants"]
    assert [(g["client_name"], g["member_id"], g["status"]) for g in grants] == [("MCP CLI Proxy", member_id, "active")], grants
