"""Failure statuses of the data plane other than 401 (contract §3), through real processes."""

from __future__ import annotations

import json
import time

import anyio
import httpx
import pytest

from conftest import ALLOWED_ORIGIN, LIMITED_RPM, PY_UPSTREAM_TEAM_TAG
from mcp_helpers import (
    ANY_ID,
    FORBIDDEN_CODE,
    INIT_PARAMS,
    IdOrNull,
    OP_TIMEOUT,
    assert_jsonrpc_error,
    flatten,
    jsonrpc,
    mcp_client,
    mcp_errors,
    raw_post,
)


def test_unreachable_upstream_is_502(gateway):
    tok = gateway.create_token("dead")
    # a refused connection is answered at once with the contract's 502 (no retry loop, no
    # timeout); the answer itself shows it, a timing bound would only measure the machine
    r = raw_post(gateway.ws_url("dead"), jsonrpc("initialize", INIT_PARAMS, id=12), token=tok["token"])
    assert_jsonrpc_error(r, 502, -32603, "Upstream unavailable", 12)


@pytest.mark.anyio
async def test_sdk_against_unreachable_upstream_fails_fast(gateway):
    tok = gateway.create_token("dead")
    # "fast": the SDK gets the error instead of retrying or hanging (fail_after is the guard)
    with anyio.fail_after(OP_TIMEOUT):
        with pytest.raises(BaseException) as info:
            async with mcp_client(gateway.ws_url("dead"), tok["token"]) as client:
                await client.list_tools()
    errors = mcp_errors(info.value)
    assert errors, [repr(e) for e in flatten(info.value)]
    assert {(e.code, e.message) for e in errors} == {(-32603, "Upstream unavailable")}


def test_upstream_refusing_the_gateway_credentials_is_502_not_401(gateway, py_upstream):
    """The upstream's 401 means the configured key is wrong; passing it on would tell the
    client that its own valid token failed."""
    tok = gateway.create_token("badkey")
    mark = py_upstream.mark()
    r = raw_post(gateway.ws_url("badkey"), jsonrpc("initialize", INIT_PARAMS, id=13), token=tok["token"])
    assert_jsonrpc_error(r, 502, -32603, "Upstream unavailable", 13)
    assert "www-authenticate" not in r.headers
    # it did reach the upstream, with the configured (wrong) key and not the client's token
    recs = py_upstream.records(mark, exclude_tag=PY_UPSTREAM_TEAM_TAG)
    assert [dict(x["headers"]).get("authorization") for x in recs] == ["Bearer not-the-upstream-key"]


def test_stuck_upstream_is_504(gateway):
    tok = gateway.create_token("slow")
    started = time.monotonic()
    r = raw_post(gateway.ws_url("slow"), jsonrpc("initialize", INIT_PARAMS, id=14), token=tok["token"])
    elapsed = time.monotonic() - started
    assert_jsonrpc_error(r, 504, -32603, "Upstream timeout", 14)
    # the upstream holds /slow for 30 s, so the 504 itself shows the timeout fired; a lower
    # bound only (a loaded machine makes answers later, never earlier)
    assert elapsed >= 0.4, f"timeout_ms=500 but answered after {elapsed:.2f}s"


def test_rate_limit_429_per_token(gateway):
    url = gateway.ws_url("limited")
    tok = gateway.create_token("limited")
    for i in range(LIMITED_RPM):
        r = raw_post(url, jsonrpc("initialize", INIT_PARAMS, id=i), token=tok["token"])
        assert r.status_code == 200, (i, r.status_code, r.text)
    r = raw_post(url, jsonrpc("initialize", INIT_PARAMS, id="over"), token=tok["token"])
    assert_jsonrpc_error(r, 429, -32000, "Rate limit exceeded", "over")
    retry_after = r.headers.get("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, dict(r.headers)
    assert r.headers.get("ratelimit-policy"), dict(r.headers)
    assert r.headers.get("ratelimit"), dict(r.headers)
    # the limit is per token: another token of the same workspace is unaffected
    other = gateway.create_token("limited")
    r = raw_post(url, jsonrpc("initialize", INIT_PARAMS, id=1), token=other["token"])
    assert r.status_code == 200, r.text


def test_body_not_json_is_parse_error(gateway):
    tok = gateway.create_token("demo")
    r = raw_post(gateway.ws_url("demo"), b"this is not json", token=tok["token"])
    assert_jsonrpc_error(r, 400, -32700, "Parse error", None)


@pytest.mark.parametrize("body", [{"hello": "world"}, "just a string", 42])
def test_json_but_not_jsonrpc_is_invalid_request(gateway, body):
    tok = gateway.create_token("demo")
    r = raw_post(gateway.ws_url("demo"), json.dumps(body), token=tok["token"])
    assert_jsonrpc_error(r, 400, -32600, "Invalid Request", None)


def test_body_over_limit_is_413(gateway):
    tok = gateway.create_token("demo")
    big = jsonrpc("tools/call", {"name": "echo", "arguments": {"text": "x" * (4 * 1024 * 1024 + 1024)}}, id=77)
    r = raw_post(gateway.ws_url("demo"), json.dumps(big), token=tok["token"], timeout=30)
    assert_jsonrpc_error(r, 413, -32600, "Request too large", ANY_ID)


def test_foreign_origin_is_403(gateway):
    tok = gateway.create_token("demo")
    r = raw_post(
        gateway.ws_url("demo"), jsonrpc("initialize", INIT_PARAMS, id=8), token=tok["token"],
        headers={"Origin": "http://evil.example"},
    )
    assert_jsonrpc_error(r, 403, FORBIDDEN_CODE, "Forbidden", IdOrNull(8))
    # the configured origin is accepted
    r = raw_post(
        gateway.ws_url("demo"), jsonrpc("initialize", INIT_PARAMS, id=9), token=tok["token"],
        headers={"Origin": ALLOWED_ORIGIN},
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/ws/demo",
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-authorization-server/ws/demo",
    ],
)
def test_oauth_discovery_probes_get_a_quick_404(gateway, path):
    # "quick" means answered by the gateway itself, without a token and without asking
    # an upstream (a timing bound would only measure the machine's load)
    r = httpx.get(gateway.data_url + path, timeout=5)
    assert r.status_code == 404, (r.status_code, r.text)
    assert "www-authenticate" not in r.headers


def test_token_self_check_on_data_listener(gateway):
    tok = gateway.create_token("demo", name="self-check")
    r = httpx.get(gateway.data_url + "/v1/tokens/self", headers={"Authorization": f"Bearer {tok['token']}"}, timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["valid"] is True
    assert body["id"] == tok["info"]["id"]
    assert body["name"] == "self-check"
    assert body["workspace"] == "demo"
    assert body["kind"] == "workspace"
    gateway.revoke_token("demo", tok["info"]["id"])
    r = httpx.get(gateway.data_url + "/v1/tokens/self", headers={"Authorization": f"Bearer {tok['token']}"}, timeout=5)
    assert r.status_code == 401, r.text
