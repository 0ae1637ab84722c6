"""An upstream MCP server built with the official Python SDK (`mcp.server.MCPServer`),
served over Streamable HTTP by uvicorn, for the gateway integration tests.

It is wrapped in an ASGI middleware that appends one JSON line per HTTP request to
--record (method, path, every header as received), so tests can check what the
gateway forwarded: that the client's `mwt_` token never arrives, that the configured
upstream headers do, and that Host is this server's own authority.

With --expect-auth VALUE the middleware answers 401 to any request whose
Authorization header is not exactly VALUE, like a real upstream with its own key.
Requests to a path under /slow get no answer for 30 s (a stuck upstream).

With --event-store the server keeps an in-memory event store (SSE event ids, priming
events, GET + Last-Event-ID replays; the SDK only does this for clients of protocol
2025-11-25 and later) and offers one more tool, `poll`, that ends its own SSE stream
mid-call (SEP-1699 polling) and then finishes: the client has to resume to get the rest.

Run:  python upstream_py.py --port 8123 --record /tmp/requests.jsonl --expect-auth "Bearer k"
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import anyio
import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp_types import JSONRPCError, JSONRPCResponse

server = MCPServer("portcullis-py-upstream", version="1.0.0")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def progress(ctx: Context, steps: int = 5, interval_ms: int = 500, gate: str = "") -> str:
    """Report progress `steps` times, `interval_ms` apart, then answer. With `gate` (a file
    path), wait after the first report until that file exists: a test creates it only once
    the first report has reached the client, so a proxy that buffered the stream would leave
    the call waiting (tests judge streaming by this order of events, not by timing)."""
    for i in range(1, steps + 1):
        await ctx.report_progress(i, steps, f"step {i}/{steps}")
        if i == 1 and gate:
            with anyio.fail_after(60):  # bounded: a test that never releases fails, not hangs
                while not os.path.exists(gate):
                    await anyio.sleep(0.01)
        if i < steps:
            await anyio.sleep(interval_ms / 1000)
    return f"done after {steps} steps"


# Prompts, resources and a completion, for the multi-server workspace tests
# (test_multi_server.py). The tool set above is unchanged: other tests pin it.

PY_RESOURCE_URI = "py-upstream://info"
# Deliberately the same URI as one of server-everything's static resources, so that a
# workspace made of both has a resource URI collision for the gateway to resolve.
COLLIDING_RESOURCE_URI = "demo://resource/static/document/instructions.md"


@server.prompt()
def greet(name: str) -> str:
    """A greeting prompt with one argument."""
    return f"Hello from the py upstream, {name}!"


@server.resource(PY_RESOURCE_URI, name="py-info", mime_type="text/plain")
def py_info() -> str:
    """A static text resource."""
    return "py upstream resource content"


@server.resource(COLLIDING_RESOURCE_URI, name="py-colliding", mime_type="text/plain")
def py_colliding() -> str:
    """Same URI as a server-everything resource; different content."""
    return "py upstream's copy of instructions.md"


@server.resource("py-upstream://items/{item_id}", name="py-item", mime_type="text/plain")
def py_item(item_id: str) -> str:
    """A resource template."""
    return f"py item {item_id}"


@server.completion()
async def complete(ref, argument, context):
    from mcp_types import Completion, PromptReference

    if isinstance(ref, PromptReference) and ref.name == "greet" and argument.name == "name":
        values = [v for v in ("Ada", "Alan", "Grace") if v.startswith(argument.value)]
        return Completion(values=values, total=len(values), has_more=False)
    return None


class InMemoryEventStore(EventStore):
    """The SDK defines the EventStore interface but ships no implementation: this one keeps
    every event of this process in memory (bounded: a test upstream lives for one session).

    A replay waits until the stream's answer has been stored, so that the whole rest of the
    call comes by replay. Why: the SDK (mcp 2.3.0, streamable_http.py `_replay_events`)
    registers the resumed stream for live messages only after the replay, and a message
    produced in between is stored but sent on no connection (its own comment: "The
    replay→live-tail ordering window here is pre-existing and tracked separately"). Holding
    the replay makes the test deterministic without weakening it: the gateway still has to
    notice the cut, resume with the right Last-Event-ID and splice the replay in."""

    MAX_EVENTS = 10_000

    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []  # (event id, stream id, message or None)
        self.answered: dict[str, anyio.Event] = {}

    def _answered(self, stream_id: str) -> anyio.Event:
        return self.answered.setdefault(stream_id, anyio.Event())

    async def store_event(self, stream_id, message):
        if len(self.events) >= self.MAX_EVENTS:
            raise RuntimeError("test event store full")
        event_id = str(len(self.events) + 1)
        self.events.append((event_id, stream_id, message))
        if isinstance(message, JSONRPCResponse | JSONRPCError):
            self._answered(stream_id).set()
        return event_id

    async def replay_events_after(self, last_event_id, send_callback: EventCallback):
        found = [e for e in self.events if e[0] == last_event_id]
        if not found:
            return None
        stream_id = found[0][1]
        with anyio.fail_after(60):  # bounded: a call that never answers fails the test, not hangs
            await self._answered(stream_id).wait()
        for event_id, sid, message in self.events[int(last_event_id):]:
            if sid == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


async def poll(ctx: Context, steps: int = 3, gate: str = "") -> str:
    """Report progress 1, then (once `gate`, a file path, exists: the test creates it when
    that report reached the client) close this call's SSE stream, report the remaining
    steps and answer. A client (or gateway) that does not resume from the last event id
    never sees the rest. Registered only with --event-store: other tests pin the tool set."""
    await ctx.report_progress(1, steps, f"step 1/{steps}")
    if gate:
        with anyio.fail_after(60):
            while not os.path.exists(gate):
                await anyio.sleep(0.01)
    await ctx.close_sse_stream()
    for i in range(2, steps + 1):
        await ctx.report_progress(i, steps, f"step {i}/{steps}")
    return f"polled after {steps} steps"


class RecordHeaders:
    """ASGI middleware: record every HTTP request's headers, optionally enforce Authorization."""

    def __init__(self, app, record_path: str, expect_auth: str | None) -> None:
        self.app = app
        self.record_path = record_path
        self.expect_auth = expect_auth
        self.lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        entry = {
            "t": time.time(),
            "method": scope["method"],
            "path": scope["path"],
            "headers": headers,
        }
        line = json.dumps(entry) + "\n"
        with self.lock, open(self.record_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
        if scope["path"].startswith("/slow"):
            # a stuck upstream, for the gateway's upstream timeout: no answer for a long time
            await anyio.sleep(30)
        if self.expect_auth is not None:
            got = [v for k, v in headers if k.lower() == "authorization"]
            if got != [self.expect_auth]:
                body = json.dumps({"error": "upstream: bad or missing Authorization"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--record", required=True, help="JSON-lines file that receives one line per request")
    ap.add_argument("--expect-auth", default=None, help="exact Authorization value required, else 401")
    ap.add_argument("--event-store", action="store_true",
                    help="keep an in-memory event store (resumable streams) and offer the `poll` tool")
    args = ap.parse_args()

    store = None
    if args.event_store:
        store = InMemoryEventStore()
        server.tool()(poll)
    # host= makes the SDK turn on its DNS-rebinding protection: Host must be 127.0.0.1:<port>
    # (or localhost:<port>), so a gateway that forwarded a foreign Host would get 421.
    # retry_interval: the `retry:` of the priming event, the wait a client makes before it resumes.
    app = server.streamable_http_app(host=args.host, event_store=store, retry_interval=100 if store else None)
    open(args.record, "a").close()
    wrapped = RecordHeaders(app, args.record, args.expect_auth or os.environ.get("UPSTREAM_EXPECT_AUTH"))
    uvicorn.run(
        wrapped, host=args.host, port=args.port, log_level="warning", lifespan="on", timeout_graceful_shutdown=1
    )


if __name__ == "__main__":
    main()
