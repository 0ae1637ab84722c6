"""Python SDK client -> gateway -> the demo upstream shipped in the binary."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from conftest import DEMO_UPSTREAM_KEY

from mcp_helpers import OP_TIMEOUT, ProgressLog, mcp_client, text_of

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_initialize_list_and_call(gateway, mode):
    tok = gateway.create_token("demo")
    with anyio.fail_after(OP_TIMEOUT):
        async with mcp_client(gateway.ws_url("demo"), tok["token"], mode=mode) as client:
            assert client.protocol_version
            tools = await client.list_tools()
            names = {t.name for t in tools.tools}
            assert {"echo", "add", "progress"} <= names, names

            text = "héllo through portcullis ✓"
            result = await client.call_tool("echo", {"text": text})
            assert not result.is_error
            assert text_of(result) == text

            result = await client.call_tool("add", {"a": 40, "b": 2})
            assert not result.is_error
            assert "42" in text_of(result)


async def test_progress_arrives_before_result(gateway):
    """Progress notifications stream through the gateway as they happen, not buffered."""
    tok = gateway.create_token("demo")
    steps, interval_ms = 4, 400
    log = ProgressLog()
    with anyio.fail_after(OP_TIMEOUT):
        async with mcp_client(gateway.ws_url("demo"), tok["token"]) as client:
            started = time.monotonic()
            result = await client.call_tool(
                "progress", {"steps": steps, "interval_ms": interval_ms}, progress_callback=log
            )
            done = time.monotonic()

    assert not result.is_error
    assert text_of(result) == f"done after {steps} steps"
    assert len(log.events) == steps, log.events
    values = [p for _, p, _, _ in log.events]
    assert values == sorted(values) and len(set(values)) == steps, values
    # the tool takes at least (steps-1)*interval; the gateway must not hold the stream
    assert done - started >= (steps - 1) * interval_ms / 1000 * 0.9
    # relative, not a fixed margin: the first report arrives in the first half of the call
    # (buffered, it would arrive with the result). tests/it/data_plane.rs checks the same
    # by the order of events against an upstream that holds its result.
    first = log.events[0][0]
    assert first - started < (done - started) / 2, (
        f"first progress {first - started:.3f}s after the call, result at {done - started:.3f}s: "
        "the gateway buffered the SSE stream"
    )


async def test_mcp_json_from_token_create_is_a_working_client_config(gateway):
    """What `token create` prints under mcp_json is what a user pastes into a client."""
    out = gateway.create_token("demo")
    entry = out["mcp_json"]["mcpServers"]["demo"]
    assert entry["url"] == gateway.ws_url("demo")
    assert entry["headers"] == {"Authorization": f"Bearer {out['token']}"}
    with anyio.fail_after(OP_TIMEOUT):
        async with mcp_client(entry["url"], extra_headers=entry["headers"]) as client:
            result = await client.call_tool("echo", {"text": "pasted config"})
            assert text_of(result) == "pasted config"


BATCH = [
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "one"}}},
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 2}}},
]
JSON_ONLY = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def _post(url: str, body, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, json=body, headers={**JSON_ONLY, **headers}, timeout=10)


def _check_batch_answers(r: httpx.Response) -> None:
    assert r.status_code == 200, r.text
    answers = r.json()
    assert isinstance(answers, list) and [a["id"] for a in answers] == [1, 2], answers
    assert answers[0]["result"]["content"][0]["text"] == "one"
    assert answers[1]["result"]["content"][0]["text"] == "3"


def _check_batch_refused(r: httpx.Response) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"]["code"] == -32600 and body["id"] is None, body


def _check_get_refused(r: httpx.Response) -> None:
    assert r.status_code == 405, r.text
    assert set(m.strip() for m in r.headers["allow"].split(",")) == {"POST", "DELETE"}
    assert r.json()["error"]["code"] == -32600


def test_demo_upstream_answers_batches_per_revision(demo_upstream):
    """Before 2025-06-18 (or without the header, i.e. 2025-03-26) a batch gets one answer per
    request; from 2025-06-18 on, batching is gone and the batch is an Invalid Request."""
    auth = {"Authorization": f"Bearer {DEMO_UPSTREAM_KEY}"}
    _check_batch_answers(_post(demo_upstream.url, BATCH, auth))
    _check_batch_answers(_post(demo_upstream.url, BATCH, {**auth, "MCP-Protocol-Version": "2025-03-26"}))
    for rev in ("2025-06-18", "2025-11-25"):
        _check_batch_refused(_post(demo_upstream.url, BATCH, {**auth, "MCP-Protocol-Version": rev}))
    # Only notifications: nothing to answer.
    r = _post(demo_upstream.url, [BATCH[1]], auth)
    assert r.status_code == 202 and r.content == b""
    _check_get_refused(httpx.get(demo_upstream.url, headers=auth, timeout=10))


def test_gateway_forwards_batches_on_a_pass_through_workspace(gateway):
    """docs/behaviour.md "Batches": a one-server workspace is transparent, so the batch goes to the
    upstream, which answers it according to the revision the client negotiated with it."""
    tok = gateway.create_token("demo")
    auth = {"Authorization": f"Bearer {tok['token']}"}
    url = gateway.ws_url("demo")
    _check_batch_answers(_post(url, BATCH, auth))
    _check_batch_refused(_post(url, BATCH, {**auth, "MCP-Protocol-Version": "2025-06-18"}))
    # The gateway itself refuses what is not a batch of JSON-RPC messages.
    r = _post(url, [], auth)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32600
    _check_get_refused(httpx.get(url, headers=auth, timeout=10))
