"""A gateway with the built-in OAuth authorization server on, for the OAuth client tests
(`test_oauth.py`: the SDKs' clients; `test_mcp_remote.py`: mcp-remote)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import httpx

from conftest import DEMO_UPSTREAM_KEY, ProcessManager, Upstream, _toml_str, free_port, port_open, wait_until


class OAuthGateway:
    def __init__(self, listen_port: int, admin_port: int, admin_token: str, bin_path: Path, env: dict[str, str]):
        self.listen_port, self.admin_port, self.admin_token = listen_port, admin_port, admin_token
        self.bin, self.env = bin_path, env

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """A call to the admin API with the admin token."""
        return httpx.request(method, self.admin + path, headers={"authorization": f"Bearer {self.admin_token}"}, **kw)

    def invite(self, email: str) -> str:
        """A one-time sign-in link, made the way an owner makes one: `portcullis member invite`."""
        res = subprocess.run(
            [str(self.bin), "member", "invite", "demo", "--email", email, "--json", "--admin-url", self.admin],
            env={**self.env, "PORTCULLIS_ADMIN_TOKEN": self.admin_token},
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["url"]


def start_oauth_gateway(procs: ProcessManager, portcullis_bin: Path, workdir: Path, demo_upstream: Upstream, *,
                        name: str, access_token_ttl: str) -> OAuthGateway:
    """`portcullis serve` with `[oauth] enabled`, one workspace `demo` on the demo upstream,
    and an admin token made offline with `portcullis admin token create`."""
    listen_port, admin_port = free_port(), free_port()
    while admin_port == listen_port:
        admin_port = free_port()
    cfg = workdir / "portcullis.toml"
    cfg.write_text(
        f"""
[server]
listen = "127.0.0.1:{listen_port}"
admin_listen = "127.0.0.1:{admin_port}"
public_url = "http://127.0.0.1:{listen_port}"
session_keys = ["{secrets.token_hex(32)}"]

[store]
path = {_toml_str(str(workdir / "portcullis.db"))}

[oauth]
enabled = true
access_token_ttl = {_toml_str(access_token_ttl)}

[[workspaces]]
slug = "demo"
[[workspaces.servers]]
name = "demo"
url = {_toml_str(demo_upstream.url)}
headers = {{ Authorization = "Bearer ${{PORTCULLIS_IT_DEMO_KEY}}" }}
""",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    env.update({"PORTCULLIS_IT_DEMO_KEY": DEMO_UPSTREAM_KEY, "NO_COLOR": "1"})
    res = subprocess.run(
        [str(portcullis_bin), "admin", "token", "create", "--config", str(cfg), "--json", "--name", f"{name}-admin"],
        env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stderr
    admin_token = json.loads(res.stdout)["token"]
    proc = procs.start(f"{name}-gateway", [portcullis_bin, "serve", "--config", cfg], env=env, cwd=workdir)
    wait_until(lambda: port_open(admin_port) and port_open(listen_port), f"{name} gateway", procs=[proc])
    return OAuthGateway(listen_port, admin_port, admin_token, portcullis_bin, env)
