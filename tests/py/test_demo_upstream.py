"""Python SDK client -> gateway -> the demo upstream shipped in the binary."""

from __future__ import annotations

import time

import anyio
import pytest

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
