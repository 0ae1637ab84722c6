"""Controls for the harness itself, without the gateway: the upstreams behave as the
gateway tests assume (so a failure there is the gateway's, not the fixture's)."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from conftest import PY_UPSTREAM_KEY, PY_UPSTREAM_TEAM_TAG
from mcp_helpers import INIT_PARAMS, OP_TIMEOUT, jsonrpc, mcp_client, mcp_errors, raw_post, text_of

pytestmark = pytest.mark.anyio


async def test_py_upstream_direct_with_its_key(py_upstream):
    mark = py_upstream.mark()
    with anyio.fail_after(OP_TIMEOUT):
        async with mcp_client(py_upstream.url, authorization=f"Bearer {PY_UPSTREAM_KEY}") as client:
            assert text_of(await client.call_tool("echo", {"text": "direct"})) == "direct"
    recs = py_upstream.records(mark, exclude_tag=PY_UPSTREAM_TEAM_TAG)
    assert recs and all(dict(r["headers"]).get("host") == f"127.0.0.1:{py_upstream.port}" for r in recs)


async def test_py_upstream_rejects_missing_key(py_upstream):
    with anyio.fail_after(OP_TIMEOUT):
        with pytest.raises(BaseException) as info:
            async with mcp_client(py_upstream.url) as client:
                await client.list_tools()
    assert mcp_errors(info.value), repr(info.value)


def test_py_upstream_rejects_foreign_host(py_upstream):
    """The SDK's DNS-rebinding guard is on, so forwarding the gateway's Host would fail."""
    r = raw_post(
        py_upstream.url, jsonrpc("initialize", INIT_PARAMS), authorization=f"Bearer {PY_UPSTREAM_KEY}",
        headers={"Host": "gateway.example:8080"},
    )
    assert r.status_code == 421, (r.status_code, r.text)


async def test_everything_direct(everything_upstream):
    with anyio.fail_after(OP_TIMEOUT):
        async with mcp_client(everything_upstream.url) as client:
            assert text_of(await client.call_tool("echo", {"message": "m"})) == "Echo: m"
            env = json.loads(text_of(await client.call_tool("get-env", {})))
    assert set(env) <= {"PATH", "HOME", "PORT"}, f"server-everything must run with a clean env, got {sorted(env)}"


def test_everything_listens_on_loopback_only(everything_upstream):
    with open("/proc/net/tcp6") as f6, open("/proc/net/tcp") as f4:
        tables = f4.read() + f6.read()
    port_hex = f"{everything_upstream.port:04X}"
    listeners = [line.split()[1] for line in tables.splitlines()[1:] if line.split()[1].endswith(":" + port_hex) and line.split()[3] == "0A"]
    assert listeners == ["0100007F:" + port_hex], f"listen sockets for the port: {listeners}"

