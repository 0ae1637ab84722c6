"""Fixtures and helpers of tests/py/test_dashboard.py: a gateway of its own,
Debian's chromium through Playwright, and sample answers of the contract's
§10 shapes (usage, audit) for rendering checks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import (
    DEMO_UPSTREAM_KEY,
    ROOT,
    ProcessManager,
    Upstream,
    _toml_str,
    free_port,
    port_open,
    wait_until,
)
from mcp_helpers import mcp_client, text_of

playwright_sync = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium")
AXE = ROOT / "tests" / "js" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = os.environ.get("PORTCULLIS_SCREENSHOTS")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


class Dash:
    def __init__(self, admin_port: int, listen_port: int, admin_token: str, scoped_token: str, workdir: Path, env: dict):
        self.admin_port = admin_port
        self.listen_port = listen_port
        self.admin_token = admin_token
        self.scoped_token = scoped_token
        self.workdir = workdir
        self.env = env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def ws_url(self, slug: str) -> str:
        return f"http://127.0.0.1:{self.listen_port}/ws/{slug}"

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        headers.setdefault("Authorization", f"Bearer {self.admin_token}")
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **kw)


@pytest.fixture(scope="module")
def dash(procs: ProcessManager, portcullis_bin: Path, tmp_path_factory, demo_upstream: Upstream) -> Dash:
    workdir = tmp_path_factory.mktemp("dashboard")
    listen_port, admin_port = free_port(), free_port()
    while admin_port == listen_port:
        admin_port = free_port()
    config = f"""
[server]
listen = "127.0.0.1:{listen_port}"
admin_listen = "127.0.0.1:{admin_port}"
public_url = "http://127.0.0.1:{listen_port}"
last_used_flush_ms = 300
session_keys = ["{secrets.token_hex(32)}"]

[store]
path = {_toml_str(str(workdir / "portcullis.db"))}

[usage]
flush_interval_ms = 200

[dashboard]
idle_timeout = "30m"
absolute_timeout = "12h"

[[workspaces]]
slug = "demo"
[[workspaces.servers]]
name = "demo"
url = {_toml_str(demo_upstream.url)}
headers = {{ Authorization = "Bearer ${{PORTCULLIS_IT_DEMO_KEY}}" }}

[[workspaces]]
slug = "team"
[[workspaces.servers]]
name = "tools"
url = {_toml_str(demo_upstream.url)}
headers = {{ Authorization = "Bearer ${{PORTCULLIS_IT_DEMO_KEY}}" }}
[[workspaces.servers]]
name = "more"
url = {_toml_str(demo_upstream.url)}
headers = {{ Authorization = "Bearer ${{PORTCULLIS_IT_DEMO_KEY}}" }}
"""
    cfg = workdir / "portcullis.toml"
    cfg.write_text(config, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    env.update({"PORTCULLIS_IT_DEMO_KEY": DEMO_UPSTREAM_KEY, "NO_COLOR": "1"})

    def admin(*extra: str) -> str:
        res = subprocess.run(
            [str(portcullis_bin), "admin", "token", "create", "--config", str(cfg), "--json", *extra],
            env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["token"]

    admin_token = admin("--name", "browser-admin")
    scoped_token = admin("--name", "team-admin", "--workspace", "team")
    proc = procs.start("dashboard-gateway", [portcullis_bin, "serve", "--config", cfg], env=env, cwd=workdir)
    wait_until(lambda: port_open(admin_port) and port_open(listen_port), "dashboard gateway", procs=[proc])
    return Dash(admin_port, listen_port, admin_token, scoped_token, workdir, env)


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def watch_console(page) -> list[str]:
    """Console errors of a page (a CSP violation is logged there)."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def sign_in(page, dash: Dash, token: str | None = None) -> None:
    page.goto(dash.url + "/")
    page.get_by_test_id("signin-token").fill(token or dash.admin_token)
    page.get_by_test_id("signin-submit").click()
    page.wait_for_url(dash.url + "/workspaces")


def shot(page, name: str) -> None:
    if SHOTS:
        out = ROOT / SHOTS
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / f"dashboard-{name}.png"), full_page=True)


def run_async(coro_fn, *args):
    """Runs an SDK coroutine on its own thread and event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro_fn(*args)).result(timeout=60)


async def echo(url: str, token: str, text: str) -> str:
    async with mcp_client(url, token) as client:
        return text_of(await client.call_tool("echo", {"text": text}))


def storage_is_empty(page) -> bool:
    return page.evaluate("() => window.localStorage.length === 0 && window.sessionStorage.length === 0")


def _sample_usage(route) -> None:
    """Contract-shaped usage (§10): 24 hourly buckets per key."""
    from urllib.parse import parse_qs, urlparse

    group = parse_qs(urlparse(route.request.url).query).get("group_by", ["token"])[0]
    keys = {"token": ["tkn_laptop", "tkn_ci"], "member": ["alice@example.com", "bob"],
            "tool": ["echo", "add", "progress"], "server": ["demo"]}[group]
    now = int(time.time()) // 3600 * 3600
    buckets = []
    for h in range(24):
        start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - (23 - h) * 3600))
        for i, k in enumerate(keys):
            req = (h * 7 + i * 13) % 40 + 5 * (len(keys) - i)
            buckets.append({"start": start, "key": k, "requests": req, "errors": req // 9, "rate_limited": 3 if h % 6 == i else 0})
    route.fulfill(status=200, content_type="application/json", body=json.dumps({"buckets": buckets, "folded": 0}))


def _sample_audit(route) -> None:
    """Contract-shaped audit events (§10)."""
    base = {"workspace": "demo", "token_id": "tkn_9lz2w741tjGgmGnQ", "member_id": "alice@example.com",
            "server": None, "tool": None, "method": None, "status": None, "duration_ms": None, "request_id": None}
    t = time.time()
    at = lambda s: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t - s))  # noqa: E731
    events = [
        {**base, "id": "evt_4", "at": at(20), "type": "token_revoked", "actor": "tkn_admin"},
        {**base, "id": "evt_3", "at": at(60), "type": "tool_call", "actor": "tkn_9lz2w741tjGgmGnQ", "server": "demo",
         "tool": "echo", "method": "tools/call", "status": 200, "duration_ms": 4, "request_id": "req_7f3a"},
        {**base, "id": "evt_2", "at": at(300), "type": "token_created", "actor": "tkn_admin"},
        {**base, "id": "evt_1", "at": at(320), "type": "signin", "actor": "tkn_admin", "token_id": None, "member_id": None},
    ]
    route.fulfill(status=200, content_type="application/json", body=json.dumps({"events": events, "next_cursor": None}))
