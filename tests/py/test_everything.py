"""Python SDK client -> gateway -> @modelcontextprotocol/server-everything (TypeScript SDK server)."""

from __future__ import annotations

import time

import anyio
import mcp_types as types
import pytest

from mcp_helpers import OP_TIMEOUT, ProgressLog, mcp_client, text_of

pytestmark = pytest.mark.anyio


async def test_list_and_echo(gateway):
    tok = gateway.create_token("everything")
    with anyio.fail_after(OP_TIMEOUT):
        async with mcp_client(gateway.ws_url("everything"), tok["token"]) as client:
            assert client.server_info is not None
            assert client.server_info.name == "mcp-servers/everything"
            tools = await client.list_tools()
            names = {t.name for t in tools.tools}
            assert {"echo", "get-sum", "trigger-long-running-operation"} <= names, names
            result = await client.call_tool("echo", {"message": "via portcullis"})
            assert not result.is_error
            assert text_of(result) == "Echo: via portcullis"
            result = await client.call_tool("get-sum", {"a": 19, "b": 23})
            assert "42" in text_of(result)


async def test_long_running_operation_streams_progress(gateway):
    tok = gateway.create_token("everything")
    log = ProgressLog()
    with anyio.fail_after(OP_TIMEOUT):
        async with mcp_client(gateway.ws_url("everything"), tok["token"]) as client:
            started = time.monotonic()
            result = await client.call_tool(
                "trigger-long-running-operation", {"duration": 2, "steps": 4}, progress_callback=log
            )
            done = time.monotonic()
    assert not result.is_error
    assert "Long running operation completed" in text_of(result)
    assert [(p, t) for _, p, t, _ in log.events] == [(1, 4), (2, 4), (3, 4), (4, 4)], log.events
    # server-everything cannot be held back on demand, so this is relative: the first report
    # arrives in the first half of the call (buffered, it would arrive with the result).
    first = log.events[0][0]
    assert first - started < (done - started) / 2, (
        f"first progress at {first - started:.3f}s, result at {done - started:.3f}s: stream was buffered"
    )


async def test_server_to_client_request_over_get_stream(gateway):
    """server-everything asks the client for its roots (roots/list) on the standalone GET
    SSE stream right after initialization; the client answers with a POST. Both directions
    have to pass the gateway with the session id."""
    tok = gateway.create_token("everything")
    asked = anyio.Event()

    async def list_roots(ctx) -> types.ListRootsResult:
        asked.set()
        return types.ListRootsResult(roots=[types.Root(uri="file:///tmp/portcullis-it", name="it")])

    with anyio.fail_after(OP_TIMEOUT):
        async with mcp_client(gateway.ws_url("everything"), tok["token"], mode="legacy", list_roots_callback=list_roots) as client:
            with anyio.fail_after(10):
                await asked.wait()
            # the session keeps working after the server-initiated exchange
            result = await client.call_tool("echo", {"message": "after roots"})
            assert text_of(result) == "Echo: after roots"
