"""A revoked token's open stream ends, seen through the official Python SDK client.

The issue's scenario: a `tools/call` whose tool reports progress for a long time, the
token revoked after the first progress event. The call must fail with the contract's
-31001 `Unauthorized` (the last event of the stream answers the call's id) instead of
running on to the tool's answer. The Rust tests (tests/it/stream_revocation.rs) pin
the exact bytes and the ordering for every stream kind.
"""

from __future__ import annotations

import anyio
import pytest

from mcp_helpers import OP_TIMEOUT, UNAUTHORIZED_CODE, ProgressLog, mcp_client, mcp_errors

pytestmark = pytest.mark.anyio

STEPS = 200


async def test_revoking_a_token_fails_its_streaming_tool_call(gateway):
    tok = gateway.create_token("py")
    first = anyio.Event()
    log = ProgressLog()

    async def on_progress(progress, total, message):
        await log(progress, total, message)
        first.set()

    outcome: dict = {}
    with anyio.fail_after(OP_TIMEOUT):
        async with mcp_client(gateway.ws_url("py"), tok["token"]) as client:

            async def call():
                try:
                    outcome["result"] = await client.call_tool(
                        "progress", {"steps": STEPS, "interval_ms": 50}, progress_callback=on_progress
                    )
                except Exception as e:  # noqa: BLE001 - inspected below
                    outcome["error"] = e

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await first.wait()
                await anyio.to_thread.run_sync(gateway.revoke_token, "py", tok["info"]["id"])
    assert "result" not in outcome, f"the tool ran to its answer after the revocation: {outcome['result']}"
    errors = mcp_errors(outcome["error"])
    assert [e.error.code for e in errors][:1] == [UNAUTHORIZED_CODE], repr(outcome["error"])
    assert 1 <= len(log.events) < STEPS, len(log.events)
