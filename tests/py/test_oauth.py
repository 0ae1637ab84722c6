"""The built-in OAuth 2.1 authorization server (docs/oauth.md) with the official
Python SDK's own OAuth client, `mcp.client.auth.OAuthClientProvider`, given only
the workspace URL.

The SDK discovers everything from the 401 (`resource_metadata`), registers
itself (RFC 7591), sends the person to the consent page (driven in Debian's
headless chromium through Playwright's async API, on the SDK's own event loop),
receives the code on a real loopback HTTP server, exchanges it with PKCE, lists
and calls tools, and refreshes once its 3-second access token has expired. The
person who consents is an administrator signed in to the dashboard on the same
host (the sign-in seam of `oauth::member`).
"""

from __future__ import annotations

import asyncio
import http.server
import json
import subprocess
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from conftest import ROOT, ProcessManager, Upstream, free_port
from dashboard_helpers import CHROMIUM, CHROMIUM_ARGS, SHOTS
from oauth_helpers import OAuthGateway, start_oauth_gateway
from mcp_helpers import text_of

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test-deps.sh)")
async_api = pytest.importorskip("playwright.async_api")


async def oauth_shot(page, name: str) -> None:
    """With PORTCULLIS_SCREENSHOTS=docs/img, saves the page as docs/img/oauth-<name>.png."""
    if SHOTS:
        out = ROOT / SHOTS
        out.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(out / f"oauth-{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def oauth_gateway(procs: ProcessManager, portcullis_bin: Path, tmp_path_factory, demo_upstream: Upstream) -> OAuthGateway:
    # a 3-second access token: the SDK clients refresh within the test
    return start_oauth_gateway(procs, portcullis_bin, tmp_path_factory.mktemp("oauth"), demo_upstream,
                               name="oauth", access_token_ttl="3s")


class MemoryStorage:
    """The SDK's TokenStorage, in memory; keeps every token set for the assertions."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.history: list[OAuthToken] = []
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.history.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, info: OAuthClientInformationFull) -> None:
        self.client = info


class Callback:
    """A real loopback HTTP server for the redirect, as a native app runs one."""

    def __init__(self) -> None:
        self.port = free_port()
        self.queries: list[dict[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                u = urlparse(self.path)
                if u.path == "/callback":  # not the browser's /favicon.ico
                    outer.queries.append({k: v[0] for k, v in parse_qs(u.query).items()})
                body = b"You can close this window."
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _flow(gw: OAuthGateway, cb: Callback, storage: MemoryStorage, seen: dict) -> None:
    ws_url = f"{gw.base}/ws/demo"
    async with async_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        # An owner invites the person; the link is theirs to open.
        r = httpx.post(
            f"{gw.admin}/v1/workspaces/demo/members/invite",
            json={"email": "ann@example.com", "role": "member"},
            headers={"authorization": f"Bearer {gw.admin_token}"},
        )
        assert r.status_code == 201, r.text
        link = r.json()["url"]

        authorization_url: dict[str, str] = {}

        async def redirect_handler(url: str) -> None:
            authorization_url["url"] = url

        async def callback_handler() -> AuthorizationCodeResult:
            # Not signed in: the page says so; the link brings them back here.
            resp = await page.goto(authorization_url["url"])
            assert resp.status == 401
            seen["signin_page"] = await page.get_by_test_id("consent-client").inner_text()
            await oauth_shot(page, "sign-in")
            await page.goto(link)
            await page.get_by_test_id("signin-link-continue").click()
            await page.wait_for_url(gw.base + "/oauth/authorize?**")
            seen["workspace"] = await page.get_by_test_id("consent-workspace").inner_text()
            seen["client"] = await page.get_by_test_id("consent-client").inner_text()
            seen["checked"] = await page.get_by_test_id("consent-server-demo").is_checked()
            await oauth_shot(page, "consent")
            before = len(cb.queries)
            await page.get_by_test_id("consent-allow").click()
            await page.wait_for_url(cb.url + "**")
            for _ in range(100):
                if len(cb.queries) > before:
                    break
                await asyncio.sleep(0.05)
            q = cb.queries[-1]
            seen["redirect"] = q
            return AuthorizationCodeResult(code=q["code"], state=q.get("state"), iss=q.get("iss"))

        provider = OAuthClientProvider(
            server_url=ws_url,
            client_metadata=OAuthClientMetadata(
                client_name="Python SDK test",
                redirect_uris=[cb.url],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                token_endpoint_auth_method="none",
            ),
            storage=storage,
            redirect_handler=redirect_handler,
            callback_handler=callback_handler,
        )
        async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(20.0, read=60.0)) as http:
            async with Client(streamable_http_client(ws_url, http_client=http)) as client:
                tools = await client.list_tools()
                seen["tools"] = [t.name for t in tools.tools]
                seen["echo1"] = text_of(await client.call_tool("echo", {"text": "via oauth"}))
                # The access token lives 3 s: the SDK refreshes before its next request.
                await asyncio.sleep(4)
                seen["echo2"] = text_of(await client.call_tool("echo", {"text": "after refresh"}))
        seen["console_errors"] = errors
        await browser.close()


def test_python_sdk_oauth_client_completes_the_flow_and_refreshes(oauth_gateway: OAuthGateway) -> None:
    gw = oauth_gateway
    cb = Callback()
    storage = MemoryStorage()
    seen: dict = {}
    try:
        asyncio.run(asyncio.wait_for(_flow(gw, cb, storage, seen), 90))
    finally:
        cb.close()
    assert seen["signin_page"] == "Python SDK test"
    assert seen["workspace"] == "demo"
    assert seen["client"] == "Python SDK test"
    assert seen["checked"] is True
    assert seen["redirect"]["iss"] == gw.base
    assert "echo" in seen["tools"]
    assert "via oauth" in seen["echo1"]
    assert "after refresh" in seen["echo2"]
    # The sign-in page is a 401 (Chrome logs that); nothing else, no CSP violation.
    assert [e for e in seen["console_errors"] if "401" not in e] == [], seen["console_errors"]
    # Two token sets: the code exchange and one refresh, each with a new
    # (rotated) refresh token; access tokens are mwt_, refresh tokens mwr_.
    assert len(storage.history) >= 2, storage.history
    first, last = storage.history[0], storage.history[-1]
    assert first.access_token.startswith("mwt_") and first.refresh_token.startswith("mwr_")
    assert last.access_token != first.access_token
    assert last.refresh_token != first.refresh_token
    # The expired access token is refused; the old refresh token is now a
    # reuse, which ends the grant: the newest access token stops working too.
    ws_url = f"{gw.base}/ws/demo"
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    r = httpx.post(ws_url, json=body, headers={**headers, "authorization": f"Bearer {first.access_token}"})
    assert r.status_code == 401
    assert f'resource_metadata="{gw.base}/.well-known/oauth-protected-resource/ws/demo"' in r.headers["www-authenticate"]
    client_id = storage.client.client_id
    r = httpx.post(
        f"{gw.base}/oauth/token",
        data={"grant_type": "refresh_token", "client_id": client_id, "refresh_token": first.refresh_token},
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = httpx.post(ws_url, json=body, headers={**headers, "authorization": f"Bearer {last.access_token}"})
    assert r.status_code == 401
    # The admin API shows the grant, revoked.
    r = httpx.get(f"{gw.admin}/v1/workspaces/demo/grants", headers={"authorization": f"Bearer {gw.admin_token}"})
    grants = r.json()["grants"]
    assert [g["client_name"] for g in grants] == ["Python SDK test"]
    assert grants[0]["status"] == "revoked"


def test_typescript_sdk_oauth_client_completes_the_flow_and_refreshes(oauth_gateway: OAuthGateway) -> None:
    """The TypeScript SDK's OAuthClientProvider (tests/js/oauth_client.mjs): discovery,
    registration, consent (posted with a member's session cookie), code exchange,
    tools, and a refresh after the 3-second access token expired."""
    import shutil

    gw = oauth_gateway
    node = shutil.which("node")
    script = Path(__file__).resolve().parent.parent / "js" / "oauth_client.mjs"
    if node is None or not (script.parent / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir():
        pytest.skip("node or tests/js/node_modules missing (scripts/test-deps.sh)")
    r = httpx.post(
        f"{gw.admin}/v1/workspaces/demo/members/invite",
        json={"email": "ts@example.com", "role": "member"},
        headers={"authorization": f"Bearer {gw.admin_token}"},
    )
    assert r.status_code == 201, r.text
    link = r.json()["url"]
    r = httpx.post(link, headers={"origin": gw.base, "sec-fetch-site": "same-origin"})
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"].split(";")[0]
    assert cookie.startswith("portcullis_member=")
    res = subprocess.run(
        [node, str(script), "--url", f"{gw.base}/ws/demo", "--cookie", cookie, "--wait-ms", "4000"],
        capture_output=True, text=True, timeout=60, cwd=script.parent,
    )
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert seen["ok"], seen.get("error")
    assert seen["unauthorizedFirst"] is True
    assert seen["consentStatus"] == 200 and seen["client"] == "TypeScript SDK test"
    assert seen["iss"] == gw.base
    assert "echo" in seen["tools"]
    assert "ts via oauth" in seen["echo1"] and "ts after refresh" in seen["echo2"]
    tokens = seen["tokens"]
    assert len(tokens) >= 2, tokens
    assert tokens[0]["access"] == "mwt_" and tokens[0]["refresh"] == "mwr_"
    assert tokens[-1]["r"] != tokens[0]["r"], "rotated"


def test_dashboard_lists_and_disconnects_connected_apps(oauth_gateway: OAuthGateway) -> None:
    """The admin dashboard's Connected apps tab (tab-apps) after the two SDK tests:
    the Python SDK's grant revoked (refresh-token reuse), the TypeScript SDK's active
    until disconnected here; its token is refused at once."""
    gw = oauth_gateway
    grants = httpx.get(f"{gw.admin}/v1/workspaces/demo/grants", headers={"authorization": f"Bearer {gw.admin_token}"}).json()["grants"]
    ts = [g for g in grants if g["client_name"] == "TypeScript SDK test" and g["status"] == "active"]
    if not ts:
        pytest.skip("the TypeScript SDK test did not run first")
    gid = ts[0]["id"]
    out: dict = {}

    async def run() -> None:
        async with async_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await page.goto(gw.admin + "/")
            await page.get_by_test_id("signin-token").fill(gw.admin_token)
            await page.get_by_test_id("signin-submit").click()
            await page.wait_for_url(gw.admin + "/workspaces")
            await page.goto(gw.admin + "/workspaces/demo/apps")
            await page.get_by_test_id(f"app-row-{gid}").wait_for()
            out["name"] = await page.get_by_test_id(f"app-name-{gid}").inner_text()
            out["before"] = await page.get_by_test_id(f"app-status-{gid}").inner_text()
            await page.get_by_test_id(f"app-revoke-{gid}").click()
            await page.get_by_test_id("confirm").click()
            await async_api.expect(page.get_by_test_id(f"app-status-{gid}")).to_have_text("revoked")
            out["after"] = await page.get_by_test_id(f"app-status-{gid}").inner_text()
            out["errors"] = errors
            await browser.close()

    asyncio.run(asyncio.wait_for(run(), 60))
    assert out["name"] == "TypeScript SDK test"
    assert (out["before"], out["after"]) == ("active", "revoked")
    assert out["errors"] == [], "no CSP violation or script error"
    grants = httpx.get(f"{gw.admin}/v1/workspaces/demo/grants", headers={"authorization": f"Bearer {gw.admin_token}"}).json()["grants"]
    assert all(g["status"] == "revoked" for g in grants), grants
