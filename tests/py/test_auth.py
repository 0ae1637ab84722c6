"""Authentication on the data plane, seen by real SDK clients and by raw HTTP (contract §2, §3)."""

from __future__ import annotations

import time

import anyio
import pytest
from mcp import MCPError

from mcp_helpers import (
    INIT_PARAMS,
    IdOrNull,
    OP_TIMEOUT,
    UNAUTHORIZED_CODE,
    WWW_AUTH_INVALID,
    WWW_AUTH_MISSING,
    assert_jsonrpc_error,
    flatten,
    jsonrpc,
    mcp_client,
    mcp_errors,
    raw_post,
    text_of,
)

pytestmark = pytest.mark.anyio


def assert_unauthorized_mcp_error(exc: BaseException) -> None:
    errors = mcp_errors(exc)
    assert errors, f"expected an MCPError from the SDK, got {[type(e).__name__ + ': ' + str(e) for e in flatten(exc)]}"
    codes = {e.code for e in errors}
    assert codes == {UNAUTHORIZED_CODE}, f"SDK errors: {[(e.code, e.message) for e in errors]}"
    assert all(e.message == "Unauthorized" for e in errors), [(e.code, e.message) for e in errors]


async def connect_and_list(url: str, **kw) -> None:
    async with mcp_client(url, **kw) as client:
        await client.list_tools()


# ---------------------------------------------------------------- SDK client, bad credentials


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_sdk_without_token_fails_fast_with_401(gateway, mode):
    started = time.monotonic()
    with anyio.fail_after(OP_TIMEOUT):
        with pytest.raises(BaseException) as info:
            await connect_and_list(gateway.ws_url("demo"), mode=mode)
    assert_unauthorized_mcp_error(info.value)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer not-a-token", id="garbage"),
        pytest.param("Bearer mwt_" + "A" * 36, id="bad-checksum"),
        pytest.param("Bearer mwt_short", id="too-short"),
        pytest.param("Basic dXNlcjpwYXNz", id="basic-scheme"),
    ],
)
async def test_sdk_with_wrong_token_fails_with_401(gateway, authorization):
    with anyio.fail_after(OP_TIMEOUT):
        with pytest.raises(BaseException) as info:
            await connect_and_list(gateway.ws_url("demo"), authorization=authorization)
    assert_unauthorized_mcp_error(info.value)


async def test_sdk_with_admin_token_on_data_plane_fails(gateway):
    with anyio.fail_after(OP_TIMEOUT):
        with pytest.raises(BaseException) as info:
            await connect_and_list(gateway.ws_url("demo"), token=gateway.admin_token)
    assert_unauthorized_mcp_error(info.value)


async def test_sdk_with_token_of_another_workspace_fails(gateway):
    tok = gateway.create_token("demo")
    with anyio.fail_after(OP_TIMEOUT):
        with pytest.raises(BaseException) as info:
            await connect_and_list(gateway.ws_url("py"), token=tok["token"])
    assert_unauthorized_mcp_error(info.value)


async def test_sdk_with_tampered_token_fails(gateway):
    """Same shape as a real token, one character changed: the checksum must catch it."""
    tok = gateway.create_token("demo")["token"]
    i = 10
    tampered = tok[:i] + ("B" if tok[i] != "B" else "C") + tok[i + 1 :]
    with anyio.fail_after(OP_TIMEOUT):
        with pytest.raises(BaseException) as info:
            await connect_and_list(gateway.ws_url("demo"), token=tampered)
    assert_unauthorized_mcp_error(info.value)


# ---------------------------------------------------------------- revocation


async def test_revoked_token_next_connection_fails(gateway):
    tok = gateway.create_token("demo")
    url = gateway.ws_url("demo")
    with anyio.fail_after(OP_TIMEOUT):
        async with mcp_client(url, tok["token"]) as client:
            assert text_of(await client.call_tool("echo", {"text": "before"})) == "before"

    res = gateway.revoke_token("demo", tok["info"]["id"])
    assert res.returncode == 0

    with anyio.fail_after(OP_TIMEOUT):
        with pytest.raises(BaseException) as info:
            await connect_and_list(url, token=tok["token"])
    assert_unauthorized_mcp_error(info.value)

    r = raw_post(url, jsonrpc("initialize", INIT_PARAMS, id=41), token=tok["token"])
    assert_jsonrpc_error(r, 401, UNAUTHORIZED_CODE, "Unauthorized", IdOrNull(41))
    assert r.headers.get("www-authenticate") == WWW_AUTH_INVALID
    assert tok["token"] not in r.text


async def test_revocation_cuts_an_open_session(gateway):
    """Revocation is immediate: the next request of an already-open session is refused."""
    tok = gateway.create_token("demo")
    with anyio.fail_after(OP_TIMEOUT):
        async with mcp_client(gateway.ws_url("demo"), tok["token"], mode="legacy") as client:
            assert text_of(await client.call_tool("echo", {"text": "a"})) == "a"
            gateway.revoke_token("demo", tok["info"]["id"])
            with pytest.raises(MCPError) as info:
                await client.call_tool("echo", {"text": "b"})
            assert info.value.code == UNAUTHORIZED_CODE, (info.value.code, info.value.message)


def test_revoke_twice_is_not_an_error(gateway):
    tok = gateway.create_token("demo")
    assert gateway.revoke_token("demo", tok["info"]["id"]).returncode == 0
    assert gateway.revoke_token("demo", tok["info"]["id"]).returncode == 0


def test_expired_token_is_refused(gateway):
    tok = gateway.create_token("demo", expires_in=1)
    url = gateway.ws_url("demo")
    assert tok["info"].get("expires_at"), tok["info"]
    deadline = time.monotonic() + 10
    while True:
        r = raw_post(url, jsonrpc("initialize", INIT_PARAMS, id=5), token=tok["token"])
        if r.status_code == 401:
            break
        assert r.status_code == 200, r.text
        assert time.monotonic() < deadline, "token with expires_in=1 still accepted after 10 s"
        time.sleep(0.1)
    assert_jsonrpc_error(r, 401, UNAUTHORIZED_CODE, "Unauthorized", IdOrNull(5))
    assert r.headers.get("www-authenticate") == WWW_AUTH_INVALID


# ---------------------------------------------------------------- raw HTTP shape of a 401


def test_raw_missing_header_401_shape(gateway):
    r = raw_post(gateway.ws_url("demo"), jsonrpc("tools/list", {}, id="abc"))
    assert_jsonrpc_error(r, 401, UNAUTHORIZED_CODE, "Unauthorized", IdOrNull("abc"))
    assert r.headers.get("www-authenticate") == WWW_AUTH_MISSING
    assert "resource_metadata" not in r.headers.get("www-authenticate", "")


def test_raw_invalid_token_401_shape(gateway):
    bad = "mwt_" + "z" * 36
    r = raw_post(gateway.ws_url("demo"), jsonrpc("tools/list", {}, id=99), token=bad)
    assert_jsonrpc_error(r, 401, UNAUTHORIZED_CODE, "Unauthorized", IdOrNull(99))
    assert r.headers.get("www-authenticate") == WWW_AUTH_INVALID
    assert bad not in r.text


def test_raw_unreadable_body_gives_null_id(gateway):
    r = raw_post(gateway.ws_url("demo"), b"{not json", token="mwt_" + "z" * 36)
    assert_jsonrpc_error(r, 401, UNAUTHORIZED_CODE, "Unauthorized", None)


def test_unknown_slug_is_401_not_404(gateway):
    tok = gateway.create_token("demo")
    r = raw_post(gateway.data_url + "/ws/no-such-workspace", jsonrpc("initialize", INIT_PARAMS, id=3), token=tok["token"])
    assert_jsonrpc_error(r, 401, UNAUTHORIZED_CODE, "Unauthorized", IdOrNull(3))
    r = raw_post(gateway.data_url + "/ws/no-such-workspace", jsonrpc("initialize", INIT_PARAMS, id=4))
    assert_jsonrpc_error(r, 401, UNAUTHORIZED_CODE, "Unauthorized", IdOrNull(4))


def test_get_and_delete_require_a_token(gateway):
    import httpx

    url = gateway.ws_url("demo")
    with httpx.Client(timeout=10) as c:
        for method in ("GET", "DELETE"):
            r = c.request(method, url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": "x"})
            assert r.status_code == 401, (method, r.status_code, r.text)
            assert r.headers.get("www-authenticate") == WWW_AUTH_MISSING, (method, dict(r.headers))
            body = r.json()
            assert body["error"] == {"code": UNAUTHORIZED_CODE, "message": "Unauthorized"}, body
