"""Python SDK client -> gateway -> an upstream built with the Python SDK (MCPServer).

The upstream records the headers of every HTTP request it receives, which lets these
tests check what the gateway forwards.
"""

from __future__ import annotations

import time

import anyio
import pytest

from conftest import ALLOWED_ORIGIN, PY_UPSTREAM_KEY, PY_UPSTREAM_TAG, PY_UPSTREAM_TEAM_TAG
from mcp_helpers import INIT_PARAMS, OP_TIMEOUT, GatedProgressLog, jsonrpc, mcp_client, raw_post, text_of

pytestmark = pytest.mark.anyio


def header_values(record: dict, name: str) -> list[str]:
    return [v for k, v in record["headers"] if k.lower() == name.lower()]


def assert_forwarded_cleanly(records: list[dict], upstream, client_token: str) -> None:
    assert records, "the upstream received no request"
    for rec in records:
        where = f"{rec['method']} {rec['path']}"
        for k, v in rec["headers"]:
            assert "mwt_" not in v and "mwt_" not in k, f"{where}: client token leaked in header {k}: {v}"
            assert client_token not in v, f"{where}: client token leaked in header {k}"
        assert header_values(rec, "authorization") == [f"Bearer {PY_UPSTREAM_KEY}"], (
            f"{where}: upstream Authorization should be exactly the configured one, got "
            f"{header_values(rec, 'authorization')}"
        )
        assert header_values(rec, "x-portcullis-test") == [PY_UPSTREAM_TAG], f"{where}: {rec['headers']}"
        assert header_values(rec, "host") == [f"127.0.0.1:{upstream.port}"], (
            f"{where}: Host must be the upstream's own authority, got {header_values(rec, 'host')}"
        )


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_list_call_and_forwarded_headers(gateway, py_upstream, mode):
    tok = gateway.create_token("py")
    mark = py_upstream.mark()
    with anyio.fail_after(OP_TIMEOUT):
        async with mcp_client(gateway.ws_url("py"), tok["token"], mode=mode) as client:
            assert client.server_info is not None and client.server_info.name == "portcullis-py-upstream"
            tools = await client.list_tools()
            assert {t.name for t in tools.tools} == {"echo", "add", "progress"}
            result = await client.call_tool("echo", {"text": "through the gateway"})
            assert text_of(result) == "through the gateway"
            result = await client.call_tool("add", {"a": 2, "b": 3})
            assert result.structured_content == {"result": 5}

    records = py_upstream.records(mark, exclude_tag=PY_UPSTREAM_TEAM_TAG)
    methods = [r["method"] for r in records]
    assert methods.count("POST") >= 3, methods
    if mode == "legacy":
        # a legacy session ends with DELETE; it must be forwarded with the same rewriting
        deadline = time.monotonic() + 5
        while "DELETE" not in methods and time.monotonic() < deadline:
            await anyio.sleep(0.05)
            records = py_upstream.records(mark, exclude_tag=PY_UPSTREAM_TEAM_TAG)
            methods = [r["method"] for r in records]
        assert "DELETE" in methods, methods
    assert_forwarded_cleanly(records, py_upstream, tok["token"])


async def test_progress_through_gateway_any_protocol_era(gateway, tmp_path):
    """The Python SDK negotiates whatever the upstream speaks; progress still streams: the
    upstream holds the rest of the call until the first report has reached the client."""
    tok = gateway.create_token("py")
    gate = str(tmp_path / "first-progress-seen")
    log = GatedProgressLog(gate=gate)
    with anyio.fail_after(OP_TIMEOUT):
        async with mcp_client(gateway.ws_url("py"), tok["token"]) as client:
            result = await client.call_tool(
                "progress", {"steps": 4, "interval_ms": 50, "gate": gate}, progress_callback=log
            )
    assert text_of(result) == "done after 4 steps"
    assert [p for _, p, _, _ in log.events] == [1, 2, 3, 4]


def test_request_id_added_both_ways(gateway, py_upstream):
    tok = gateway.create_token("py")
    url = gateway.ws_url("py")

    mark = py_upstream.mark()
    r = raw_post(url, jsonrpc("initialize", INIT_PARAMS, id=7), token=tok["token"])
    assert r.status_code == 200, r.text
    generated = r.headers.get("x-request-id")
    assert generated, f"no X-Request-Id on the response: {dict(r.headers)}"
    seen = [v for rec in py_upstream.records(mark, exclude_tag=PY_UPSTREAM_TEAM_TAG)
            for v in header_values(rec, "x-request-id")]
    assert seen == [generated], (seen, generated)

    mark = py_upstream.mark()
    mine = "it-req-" + tok["info"]["id"]
    r = raw_post(url, jsonrpc("initialize", INIT_PARAMS, id=8), token=tok["token"], headers={"X-Request-Id": mine})
    assert r.status_code == 200, r.text
    assert r.headers.get("x-request-id") == mine
    seen = [v for rec in py_upstream.records(mark, exclude_tag=PY_UPSTREAM_TEAM_TAG)
            for v in header_values(rec, "x-request-id")]
    assert seen == [mine], seen


def test_allowed_origin_is_checked_and_not_forwarded(gateway, py_upstream):
    tok = gateway.create_token("py")
    mark = py_upstream.mark()
    r = raw_post(
        gateway.ws_url("py"), jsonrpc("initialize", INIT_PARAMS, id=1), token=tok["token"],
        headers={"Origin": ALLOWED_ORIGIN},
    )
    assert r.status_code == 200, r.text
    records = py_upstream.records(mark, exclude_tag=PY_UPSTREAM_TEAM_TAG)
    assert len(records) == 1, records
    assert header_values(records[0], "origin") == [], records[0]["headers"]
    assert_forwarded_cleanly(records, py_upstream, tok["token"])
