"""Helpers shared by the integration tests: real MCP SDK clients and raw HTTP probes."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

# What the contract (§3) says a data-plane auth failure looks like.
UNAUTHORIZED_CODE = -31001
FORBIDDEN_CODE = -31003
WWW_AUTH_INVALID = 'Bearer realm="portcullis", error="invalid_token"'
WWW_AUTH_MISSING = 'Bearer realm="portcullis"'

# Give every SDK operation a hard ceiling so a hang fails fast with a message instead of
# running into pytest-timeout.
OP_TIMEOUT = 20.0


@asynccontextmanager
async def mcp_client(
    url: str,
    token: str | None = None,
    *,
    mode: str = "auto",
    authorization: str | None = None,
    extra_headers: dict[str, str] | None = None,
    **client_kwargs: Any,
) -> AsyncIterator[Client]:
    """Connect the official Python SDK `Client` over Streamable HTTP.

    The bearer token travels as a default header of the httpx2 client that the SDK's
    `streamable_http_client` transport uses for every POST/GET/DELETE. `authorization`
    overrides the whole header value (for malformed-header tests).
    """
    headers: dict[str, str] = dict(extra_headers or {})
    if authorization is not None:
        headers["Authorization"] = authorization
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    timeout = httpx2.Timeout(OP_TIMEOUT, read=60.0)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, **client_kwargs) as client:
            yield client


def flatten(exc: BaseException) -> list[BaseException]:
    """All leaf exceptions of a (possibly nested) exception group, plus causes."""
    out: list[BaseException] = []
    stack = [exc]
    seen: set[int] = set()
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        else:
            out.append(e)
        for linked in (e.__cause__, e.__context__):
            if linked is not None:
                stack.append(linked)
    return out


def mcp_errors(exc: BaseException) -> list[MCPError]:
    return [e for e in flatten(exc) if isinstance(e, MCPError)]


def text_of(result: Any) -> str:
    """Concatenated text content of a CallToolResult."""
    return "".join(getattr(c, "text", "") for c in result.content)


@dataclass
class ProgressLog:
    """Progress callback that records (monotonic time, progress, total, message)."""

    events: list[tuple[float, float, float | None, str | None]] = field(default_factory=list)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((time.monotonic(), progress, total, message))


@dataclass
class GatedProgressLog(ProgressLog):
    """A ProgressLog that, on the first report, creates `gate`: the py upstream's `progress`
    tool (called with that `gate`) holds everything after its first report until the file
    exists. So the call completes only if the first report reached the client while the
    upstream was still holding the rest: a proxy that buffered the stream makes it time out.
    Streaming is shown by this order of events, not by timing."""

    gate: str = ""

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        await super().__call__(progress, total, message)
        if len(self.events) == 1:
            with open(self.gate, "w", encoding="utf-8"):
                pass


def jsonrpc(method: str, params: dict | None = None, id: int | str | None = 1) -> dict:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    if id is not None:
        msg["id"] = id
    return msg


INIT_PARAMS = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "portcullis-raw-test", "version": "0"},
}

MCP_ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def raw_post(
    url: str,
    body: Any,
    *,
    token: str | None = None,
    authorization: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> httpx.Response:
    """One plain HTTP POST (no SDK), body serialised as JSON unless it is bytes/str."""
    h = dict(MCP_ACCEPT)
    if authorization is not None:
        h["Authorization"] = authorization
    elif token is not None:
        h["Authorization"] = f"Bearer {token}"
    h.update(headers or {})
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    with httpx.Client(timeout=timeout) as c:
        return c.post(url, content=content, headers=h)


ANY_ID = object()


@dataclass(frozen=True)
class IdOrNull:
    """Expected id of an error answered before the body is read (401, 403): the gateway
    authenticates first and never reads an unauthenticated body, so the contract's
    "null if it could not be read" applies; echoing the request's id is also fine."""

    id: Any


def assert_jsonrpc_error(resp: httpx.Response, status: int, code: int, message: str, req_id: Any) -> dict:
    """Assert the contract §3 failure shape and return the parsed body (req_id=ANY_ID: id not checked)."""
    assert resp.status_code == status, f"expected HTTP {status}, got {resp.status_code}: {resp.text[:500]}"
    ctype = resp.headers.get("content-type", "")
    assert ctype.startswith("application/json"), f"error body must be JSON, got content-type {ctype!r}"
    body = resp.json()
    assert body.get("jsonrpc") == "2.0", body
    assert "id" in body, f"a JSON-RPC error response carries an id (null when unreadable): {body}"
    if isinstance(req_id, IdOrNull):
        assert body["id"] in (req_id.id, None), f"expected id {req_id.id!r} or null, got body {body}"
    elif req_id is not ANY_ID:
        assert body["id"] == req_id, f"expected id {req_id!r}, got body {body}"
    assert "result" not in body, body
    err = body.get("error")
    assert isinstance(err, dict), body
    assert err.get("code") == code, body
    assert err.get("message") == message, body
    return body
