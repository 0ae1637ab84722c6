"""Fixtures of tests/py/test_sso.py: a real OpenID Provider (panva's certified
oidc-provider, tests/js/oidc-provider.mjs) on loopback and gateways configured
to sign members in with it. No mock: the provider issues real codes and
RS256-signed ID tokens, and enforces PKCE."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from conftest import DEMO_UPSTREAM_KEY, ROOT, ProcessManager, Proc, Upstream, _toml_str, free_port, port_open, wait_until

OIDC_PROVIDER = ROOT / "tests" / "js" / "oidc-provider.mjs"
CLIENT_ID = "portcullis-test"


@dataclass
class Op:
    port: int
    issuer: str
    secret: str
    proc: Proc


@dataclass
class Gw:
    listen_port: int
    admin_port: int
    cfg: Path
    env: dict
    proc: Proc
    workdir: Path

    @property
    def public(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def callback(self) -> str:
        return self.public + "/signin/oidc/callback"


def start_op(procs: ProcessManager, redirect_uri: str, *, port: int | None = None, secret: str | None = None, **env: str) -> Op:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    port = port or free_port()
    secret = secret or "op-secret-" + secrets.token_hex(16)
    e = {k: v for k, v in os.environ.items() if not k.startswith(("OP_", "PORTCULLIS_"))}
    e.update({"OP_PORT": str(port), "OP_CLIENT_ID": CLIENT_ID, "OP_CLIENT_SECRET": secret, "OP_REDIRECT_URI": redirect_uri, **env})
    proc = procs.start("oidc-provider", [node, OIDC_PROVIDER], env=e, cwd=OIDC_PROVIDER.parent)
    wait_until(lambda: port_open(port), "oidc-provider", procs=[proc])
    return Op(port, f"http://127.0.0.1:{port}", secret, proc)


def start_gateway(
    procs: ProcessManager, bin: Path, workdir: Path, upstream: Upstream, op: Op, listen_port: int, *, issuer: str | None = None, extra: str = ""
) -> Gw:
    admin_port = free_port()
    config = f"""
[server]
listen = "127.0.0.1:{listen_port}"
admin_listen = "127.0.0.1:{admin_port}"
public_url = "http://127.0.0.1:{listen_port}"

[store]
path = {_toml_str(str(workdir / "portcullis.db"))}

[auth.oidc]
issuer = {_toml_str(issuer or op.issuer)}
client_id = "{CLIENT_ID}"
client_secret = "${{PORTCULLIS_IT_OIDC_SECRET}}"
allowed_email_domains = ["example.com"]
{extra}

[[workspaces]]
slug = "team"
[[workspaces.servers]]
name = "demo"
url = {_toml_str(upstream.url)}
headers = {{ Authorization = "Bearer ${{PORTCULLIS_IT_DEMO_KEY}}" }}
"""
    cfg = workdir / "portcullis.toml"
    cfg.write_text(config, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    env.update({"PORTCULLIS_IT_DEMO_KEY": DEMO_UPSTREAM_KEY, "PORTCULLIS_IT_OIDC_SECRET": op.secret, "NO_COLOR": "1", "PORTCULLIS_LOG": "debug"})
    proc = procs.start("sso-gateway", [bin, "serve", "--config", cfg], env=env, cwd=workdir)
    wait_until(lambda: port_open(admin_port) and port_open(listen_port), "sso gateway", procs=[proc])
    return Gw(listen_port, admin_port, cfg, env, proc, workdir)


def admin_token(gw: Gw, bin: Path) -> str:
    res = subprocess.run(
        [str(bin), "admin", "token", "create", "--config", str(gw.cfg), "--json", "--name", "sso-test-admin"],
        env=gw.env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stderr
    import json

    return json.loads(res.stdout)["token"]


def admin_api(gw: Gw, token: str, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, f"http://127.0.0.1:{gw.admin_port}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10, **kw)


def doctor_oidc(gw: Gw, bin: Path) -> dict:
    """`portcullis doctor --json`'s `oidc` check (the run as a whole fails
    while the gateway holds its ports)."""
    import json

    res = subprocess.run(
        [str(bin), "doctor", "--config", str(gw.cfg), "--json"],
        env=gw.env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    for out in (res.stdout, res.stderr):
        try:
            report = json.loads(out)
        except ValueError:
            continue
        checks = report.get("checks") or report.get("error", {}).get("checks") or []
        found = [c for c in checks if c["name"] == "oidc"]
        if found:
            return found[0]
    raise AssertionError(f"no oidc check in doctor's output: {res.stdout!r} {res.stderr!r}")


def begin(gw: Gw) -> tuple[str, str]:
    """GET /signin/oidc without following: (the provider URL, the flow cookie's value)."""
    r = httpx.get(gw.public + "/signin/oidc", timeout=10)
    assert r.status_code == 302, r.text
    cookie = r.cookies.get("portcullis_oidc")
    assert cookie, r.headers
    return r.headers["location"], cookie


def with_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    q = parse_qs(parts.query)
    q[name] = [value]
    return urlunsplit(parts._replace(query=urlencode({k: v[0] for k, v in q.items()})))


def log_in_at_provider(page, login: str) -> None:
    """The provider's login page, then its consent page."""
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any password")
    page.locator("button[type=submit]").click()
    page.locator("button[type=submit]", has_text="Continue").click()


def sign_in_as(context, gw: Gw, login: str, *, start_url: str | None = None, cookie: str | None = None):
    """Drives the whole flow in the browser; returns (callback response, page)."""
    page = context.new_page()
    if cookie is not None:
        context.add_cookies([{"name": "portcullis_oidc", "value": cookie, "url": gw.public + "/signin/oidc"}])
    page.goto(start_url or gw.public + "/signin/oidc")
    with page.expect_response(lambda r: r.url.startswith(gw.callback)) as info:
        log_in_at_provider(page, login)
    resp = info.value
    page.wait_for_load_state()
    return resp, page


def gateway_log(gw: Gw) -> str:
    return gw.proc.log_path.read_text(encoding="utf-8", errors="replace")


__all__ = ["Gw", "Op", "admin_api", "admin_token", "begin", "doctor_oidc", "gateway_log", "sign_in_as", "start_gateway", "start_op", "with_param", "CLIENT_ID", "subprocess"]
