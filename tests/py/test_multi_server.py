"""Multi-server ("aggregating") workspaces, contract §7, issue 5 — with the real SDKs.

A second gateway process (its own config, SQLite file and `server.session_keys`) serves:

  * `team`     = `py` (tests/py/upstream_py.py, the session's shared Python SDK upstream)
                 + `everything` (@modelcontextprotocol/server-everything). Both have `echo`.
  * `fragile`  = `py` on a *dedicated* Python upstream (killed by one test) + `everything`.
  * `halfdead` = `py` + `gone` (nothing listens), `failure_mode = "fail_open"` (explicit).
  * `strict`   = `py` + `second` (a *dedicated* Python upstream, killed by one test),
                 `failure_mode = "fail_closed"`.
  * `solo`     = `py` alone: stays a pass-through even in a config with session keys.
  * `polling`  = `poller` (a *dedicated* Python upstream run with an in-memory event store,
                 whose `poll` tool ends its SSE stream mid-call) + `py`.

Through `/ws/<slug>` of an aggregating workspace the client must see ONE MCP server
(serverInfo.name "portcullis"), tools/prompts named `<server>__<name>`, resources with their
own URIs (rewritten to `portcullis://<server>/<original>` only on a collision), and a sealed
`Mcp-Session-Id` that any instance with the same session keys can continue, across restarts.

Choices this file pins where the brief/contract leave room (a careful user's expectation):
  * resource URI collision: servers are taken in configuration order, the *later* server's
    URI is the one rewritten (plan-multi-server.md: "the later server's URI is rewritten");
    reading a rewritten URI returns contents whose `uri` is the rewritten one the client asked for;
  * an unknown/garbage/tampered `Mcp-Session-Id` answers HTTP 404 with a JSON-RPC error body
    (MCP Streamable HTTP: 404 tells the client to start a new session; 400 is for a request
    that carries no session id at all), never 401 (the token itself is fine) and never 5xx;
  * a session id presented with another (valid) token of the same workspace: 401 / -31001;
  * the gateway initialises each upstream with the client's own capabilities, so that
    server-everything registers its sampling/elicitation tools when the client declares them;
  * a call to a dead upstream under fail_open gets a JSON-RPC error carrying the request's id
    (the SDK raises MCPError), the session survives, and the next tools/list omits that server;
  * under fail_closed, a list that cannot reach every upstream fails with a JSON-RPC error.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest

from conftest import (
    PY_UPSTREAM_KEY,
    PY_UPSTREAM_TEAM_TAG,
    TESTS_JS,
    TESTS_PY,
    Gateway,
    ProcessManager,
    Proc,
    RecordingUpstream,
    Upstream,
    _toml_str,
    free_port,
    port_open,
    wait_until,
)
from mcp_helpers import (
    FORBIDDEN_CODE,
    OP_TIMEOUT,
    GatedProgressLog,
    UNAUTHORIZED_CODE,
    IdOrNull,
    ProgressLog,
    assert_jsonrpc_error,
    jsonrpc,
    mcp_client,
    mcp_errors,
    text_of,
)

pytestmark = pytest.mark.anyio

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SESSION_KEY_A = secrets.token_hex(32)  # 32 bytes as 64 hex chars
SESSION_KEY_B = secrets.token_hex(32)  # the "rotated-in" key of the rotation test
PROTO = "2025-06-18"
HANDSHAKE_VERSIONS = {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"}

PY_RESOURCE_URI = "py-upstream://info"
COLLIDING_URI = "demo://resource/static/document/instructions.md"  # served by both upstreams
EVERYTHING_DOC_URI = "demo://resource/static/document/features.md"  # only server-everything
MULTI_CLIENT = TESTS_JS / "multi_client.mjs"


# --------------------------------------------------------------------------- fixtures


def _multi_config(
    *, listen: int, admin: int, db: Path, keys: list[str], py_url: str, fragile_py_url: str,
    strict_py_url: str, everything_url: str, dead_port: int, poller_url: str,
) -> str:
    py_headers = '{ Authorization = "Bearer ${PORTCULLIS_IT_PY_KEY}", "X-Portcullis-Test" = ' + \
        _toml_str(PY_UPSTREAM_TEAM_TAG) + ' }'
    return f"""
[server]
listen = "127.0.0.1:{listen}"
admin_listen = "127.0.0.1:{admin}"
public_url = "http://127.0.0.1:{listen}"
shutdown_grace_ms = 1000
session_keys = [{", ".join(_toml_str(k) for k in keys)}]

[store]
backend = "sqlite"
path = {_toml_str(str(db))}

[limits]
requests_per_minute = 6000

[[workspaces]]
slug = "team"

[[workspaces.servers]]
name = "py"
url = {_toml_str(py_url)}
headers = {py_headers}
timeout_ms = 30000

[[workspaces.servers]]
name = "everything"
url = {_toml_str(everything_url)}
timeout_ms = 30000

[[workspaces]]
slug = "fragile"

[[workspaces.servers]]
name = "py"
url = {_toml_str(fragile_py_url)}
headers = {py_headers}
timeout_ms = 30000
connect_timeout_ms = 1000

[[workspaces.servers]]
name = "everything"
url = {_toml_str(everything_url)}
timeout_ms = 30000

[[workspaces]]
slug = "halfdead"
failure_mode = "fail_open"

[[workspaces.servers]]
name = "py"
url = {_toml_str(py_url)}
headers = {py_headers}
timeout_ms = 30000

[[workspaces.servers]]
name = "gone"
url = "http://127.0.0.1:{dead_port}/mcp"
timeout_ms = 5000
connect_timeout_ms = 1000

[[workspaces]]
slug = "strict"
failure_mode = "fail_closed"

[[workspaces.servers]]
name = "py"
url = {_toml_str(py_url)}
headers = {py_headers}
timeout_ms = 30000

[[workspaces.servers]]
name = "second"
url = {_toml_str(strict_py_url)}
headers = {py_headers}
timeout_ms = 5000
connect_timeout_ms = 1000

[[workspaces]]
slug = "polling"

[[workspaces.servers]]
name = "poller"
url = {_toml_str(poller_url)}
headers = {py_headers}
timeout_ms = 30000

[[workspaces.servers]]
name = "py"
url = {_toml_str(py_url)}
headers = {py_headers}
timeout_ms = 30000

[[workspaces]]
slug = "solo"

[[workspaces.servers]]
name = "py"
url = {_toml_str(py_url)}
headers = {py_headers}
timeout_ms = 30000
"""


@dataclass
class MultiGateway(Gateway):
    """A gateway process that can be restarted with the same config and database."""

    manager: ProcessManager | None = None
    label: str = "gateway-multi"

    def start(self) -> None:
        self.proc = _spawn_gateway(self.manager, self.bin, self.config_path, self.env, self.workdir, self.label,
                                   self.listen_port, self.admin_port)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, wait for a graceful exit (then SIGKILL what is left); the exit code."""
        self.manager.stop(self.proc, grace=grace)
        return self.proc.popen.returncode

    def restart(self) -> None:
        old = self.proc.pid
        self.stop()
        self.start()
        assert self.proc.pid != old

    def token(self, workspace: str, servers: list[str] | None = None) -> dict[str, Any]:
        args = ["workspace", "token", "create", workspace, "--name", f"ms-{uuid.uuid4().hex[:8]}", "--json"]
        if servers is not None:
            args += ["--servers", ",".join(servers)]
        out = json.loads(self.cli(*args).stdout)
        assert out["token"].startswith("mwt_"), out
        return out


def _spawn_gateway(manager, bin_, config_path, env, workdir, label, listen_port, admin_port) -> Proc:
    proc = manager.start(label, [bin_, "serve", "--config", config_path], env=env, cwd=workdir)

    def ready() -> bool:
        r = httpx.get(f"http://127.0.0.1:{admin_port}/readyz", timeout=1.0)
        return r.status_code == 200 and port_open(listen_port)

    wait_until(ready, f"{label} /readyz", procs=[proc])
    return proc


def _two_ports() -> tuple[int, int]:
    a = free_port()
    b = free_port()
    while b == a:
        b = free_port()
    return a, b


@pytest.fixture(scope="session")
def fragile_py_upstream(procs: ProcessManager, tmp_path_factory) -> RecordingUpstream:
    """A Python upstream of its own for the `fragile` workspace: one test kills it."""
    port = free_port()
    record = tmp_path_factory.mktemp("fragile-py") / "requests.jsonl"
    record.touch()
    proc = procs.start(
        "fragile-py-upstream",
        [sys.executable, TESTS_PY / "upstream_py.py", "--port", str(port), "--record", record,
         "--expect-auth", f"Bearer {PY_UPSTREAM_KEY}"],
    )
    wait_until(lambda: port_open(port), f"fragile python upstream on port {port}", procs=[proc])
    return RecordingUpstream("fragile-py", port, f"http://127.0.0.1:{port}/mcp", proc, record_path=record)


@pytest.fixture(scope="session")
def strict_py_upstream(procs: ProcessManager, tmp_path_factory) -> RecordingUpstream:
    """A Python upstream of its own for the `strict` (fail_closed) workspace: one test kills it."""
    port = free_port()
    record = tmp_path_factory.mktemp("strict-py") / "requests.jsonl"
    record.touch()
    proc = procs.start(
        "strict-py-upstream",
        [sys.executable, TESTS_PY / "upstream_py.py", "--port", str(port), "--record", record,
         "--expect-auth", f"Bearer {PY_UPSTREAM_KEY}"],
    )
    wait_until(lambda: port_open(port), f"strict python upstream on port {port}", procs=[proc])
    return RecordingUpstream("strict-py", port, f"http://127.0.0.1:{port}/mcp", proc, record_path=record)


@pytest.fixture(scope="session")
def poller_py_upstream(procs: ProcessManager, tmp_path_factory) -> RecordingUpstream:
    """A Python upstream with an in-memory event store, for the `polling` workspace."""
    port = free_port()
    record = tmp_path_factory.mktemp("poller-py") / "requests.jsonl"
    record.touch()
    proc = procs.start(
        "poller-py-upstream",
        [sys.executable, TESTS_PY / "upstream_py.py", "--port", str(port), "--record", record,
         "--expect-auth", f"Bearer {PY_UPSTREAM_KEY}", "--event-store"],
    )
    wait_until(lambda: port_open(port), f"poller python upstream on port {port}", procs=[proc])
    return RecordingUpstream("poller-py", port, f"http://127.0.0.1:{port}/mcp", proc, record_path=record)


@dataclass
class MultiSetup:
    """Everything needed to start more instances on the same database."""

    workdir: Path
    db: Path
    env: dict[str, str]
    config_kwargs: dict[str, Any]


@pytest.fixture(scope="session")
def multi_setup(
    portcullis_bin: Path, tmp_path_factory, py_upstream: RecordingUpstream, everything_upstream: Upstream,
    fragile_py_upstream: RecordingUpstream, strict_py_upstream: RecordingUpstream, dead_port: int,
    poller_py_upstream: RecordingUpstream,
) -> MultiSetup:
    workdir = tmp_path_factory.mktemp("gateway-multi")
    db = workdir / "data" / "portcullis.db"
    db.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    env.update({"PORTCULLIS_IT_PY_KEY": PY_UPSTREAM_KEY, "RUST_BACKTRACE": "1", "NO_COLOR": "1"})
    if os.environ.get("PORTCULLIS_IT_LOG"):  # e.g. PORTCULLIS_IT_LOG=debug to debug a failure
        env["PORTCULLIS_LOG"] = os.environ["PORTCULLIS_IT_LOG"]
    return MultiSetup(
        workdir=workdir, db=db, env=env,
        config_kwargs=dict(db=db, py_url=py_upstream.url, fragile_py_url=fragile_py_upstream.url,
                           strict_py_url=strict_py_upstream.url,
                           everything_url=everything_upstream.url, dead_port=dead_port,
                           poller_url=poller_py_upstream.url),
    )


def _instance(procs, portcullis_bin, setup: MultiSetup, label: str, keys: list[str], admin_token: str = "",
              admin_info: dict | None = None, bootstrap: bool = False) -> MultiGateway:
    listen, admin = _two_ports()
    config_path = setup.workdir / f"{label}.toml"
    config = _multi_config(listen=listen, admin=admin, keys=keys, **setup.config_kwargs)
    config_path.write_text(config, encoding="utf-8")
    if bootstrap:
        res = subprocess.run(
            [str(portcullis_bin), "admin", "token", "create", "--name", "pytest-multi-admin", "--config",
             str(config_path), "--json"],
            env=setup.env, cwd=setup.workdir, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
        )
        if res.returncode != 0:
            pytest.fail(f"admin token create for the multi-server config exited {res.returncode}\n"
                        f"stdout: {res.stdout}\nstderr: {res.stderr}\nconfig:\n{config}", pytrace=False)
        boot = json.loads(res.stdout)
        admin_token, admin_info = boot["token"], boot.get("info", {})
    gw = MultiGateway(
        bin=portcullis_bin, workdir=setup.workdir, config_path=config_path, listen_port=listen, admin_port=admin,
        admin_token=admin_token, admin_token_info=admin_info or {}, env=setup.env, proc=None,  # type: ignore[arg-type]
        manager=procs, label=label,
    )
    gw.start()
    return gw


@pytest.fixture(scope="session")
def team_gw(procs: ProcessManager, portcullis_bin: Path, multi_setup: MultiSetup) -> MultiGateway:
    """Instance A of the multi-server gateway (session keys [A])."""
    return _instance(procs, portcullis_bin, multi_setup, "gateway-multi-a", [SESSION_KEY_A], bootstrap=True)


@pytest.fixture(scope="session")
def team_gw_b(procs: ProcessManager, portcullis_bin: Path, multi_setup: MultiSetup, team_gw: MultiGateway) -> MultiGateway:
    """Instance B: same SQLite file, same session keys, other ports."""
    return _instance(procs, portcullis_bin, multi_setup, "gateway-multi-b", [SESSION_KEY_A],
                     admin_token=team_gw.admin_token, admin_info=team_gw.admin_token_info)


# --------------------------------------------------------------------------- raw HTTP helpers


def sse_messages(text: str) -> list[dict]:
    """JSON payloads of the `data:` fields of an SSE body (comments, ids and empty events skipped)."""
    out: list[dict] = []
    data: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line == "":
            if data and "".join(data).strip():
                out.append(json.loads("\n".join(data)))
            data = []
        elif line.startswith("data:"):
            v = line[5:]
            data.append(v[1:] if v.startswith(" ") else v)
    if data and "".join(data).strip():
        out.append(json.loads("\n".join(data)))
    return out


def messages_of(resp: httpx.Response) -> list[dict]:
    ctype = resp.headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        return sse_messages(resp.text)
    if ctype.startswith("application/json"):
        body = resp.json()
        return body if isinstance(body, list) else [body]
    return []


def response_for(resp: httpx.Response, req_id: Any) -> dict:
    msgs = [m for m in messages_of(resp) if m.get("id") == req_id and ("result" in m or "error" in m)]
    assert len(msgs) == 1, (
        f"expected exactly one JSON-RPC response with id {req_id!r} (HTTP {resp.status_code}, "
        f"content-type {resp.headers.get('content-type')!r}), got: {resp.text[:1500]}"
    )
    return msgs[0]


def raw_text(result: dict) -> str:
    return "".join(c.get("text", "") for c in result.get("content", []) if c.get("type") == "text")


_MISSING = object()


class RawSession:
    """A hand-driven MCP session over plain httpx: every status and header is visible."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.sid: str | None = None
        self.protocol = PROTO
        self._next = 100

    def next_id(self) -> int:
        self._next += 1
        return self._next

    def post(self, body: Any, *, sid: Any = _MISSING, token: Any = _MISSING, url: str | None = None,
             timeout: float = 15.0) -> httpx.Response:
        h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        tok = self.token if token is _MISSING else token
        if tok is not None:
            h["Authorization"] = f"Bearer {tok}"
        s = self.sid if sid is _MISSING else sid
        if s is not None:
            h["Mcp-Session-Id"] = s
            h["MCP-Protocol-Version"] = self.protocol
        content = body if isinstance(body, (bytes, str)) else json.dumps(body)
        with httpx.Client(timeout=timeout) as c:
            return c.post(url or self.url, content=content, headers=h)

    def initialize(self, capabilities: dict | None = None, version: str = PROTO) -> tuple[httpx.Response, dict]:
        rid = self.next_id()
        params = {"protocolVersion": version, "capabilities": capabilities or {},
                  "clientInfo": {"name": "portcullis-raw-multi", "version": "0"}}
        r = self.post(jsonrpc("initialize", params, id=rid), sid=None)
        assert r.status_code == 200, f"initialize: HTTP {r.status_code}: {r.text[:800]}"
        msg = response_for(r, rid)
        assert "result" in msg, msg
        self.sid = r.headers.get("mcp-session-id")
        assert self.sid, f"an aggregating workspace must issue an Mcp-Session-Id; headers {dict(r.headers)}"
        self.protocol = msg["result"]["protocolVersion"]
        n = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert n.status_code == 202, f"notifications/initialized: HTTP {n.status_code}: {n.text[:500]}"
        return r, msg["result"]

    def request(self, method: str, params: dict | None = None, *, url: str | None = None, **kw: Any) -> dict:
        rid = self.next_id()
        r = self.post(jsonrpc(method, params, id=rid), url=url, **kw)
        assert r.status_code == 200, f"{method} via {url or self.url}: HTTP {r.status_code}: {r.text[:800]}"
        msg = response_for(r, rid)
        assert "result" in msg, f"{method}: expected a result, got {msg}"
        return msg["result"]

    def call(self, name: str, args: dict, *, url: str | None = None) -> dict:
        return self.request("tools/call", {"name": name, "arguments": args}, url=url)

    def tool_names(self, *, url: str | None = None) -> list[str]:
        names: list[str] = []
        cursor = None
        for _ in range(50):
            res = self.request("tools/list", {"cursor": cursor} if cursor else {}, url=url)
            names += [t["name"] for t in res["tools"]]
            cursor = res.get("nextCursor")
            if not cursor:
                break
        return names


def check_both_echos(s: RawSession, tag: str, *, url: str | None = None) -> None:
    r = s.call("py__echo", {"text": f"py {tag}"}, url=url)
    assert not r.get("isError"), r
    assert raw_text(r) == f"py {tag}", r
    r = s.call("everything__echo", {"message": f"everything {tag}"}, url=url)
    assert not r.get("isError"), r
    assert raw_text(r) == f"Echo: everything {tag}", r


# --------------------------------------------------------------------------- SDK helpers


async def all_tools(client) -> list[types.Tool]:
    out: list[types.Tool] = []
    cursor = None
    for _ in range(50):
        res = await client.list_tools(cursor=cursor)
        out += res.tools
        cursor = res.next_cursor
        if not cursor:
            break
    return out


async def all_pages(fn, attr: str) -> list[Any]:
    out: list[Any] = []
    cursor = None
    for _ in range(50):
        res = await fn(cursor=cursor)
        out += getattr(res, attr)
        cursor = res.next_cursor
        if not cursor:
            break
    return out


def assert_prefixed_names(names: list[str], servers: tuple[str, ...] = ("py", "everything")) -> None:
    assert len(names) == len(set(names)), f"duplicate names: {sorted(names)}"
    for n in names:
        assert NAME_RE.match(n), f"{n!r} does not match ^[A-Za-z0-9_-]{{1,64}}$"
        assert n.split("__", 1)[0] in servers and "__" in n, f"{n!r} is not <server>__<name> for {servers}"


def client(url: str, token: str, **kw: Any):
    kw.setdefault("mode", "legacy")
    return mcp_client(url, token, cache=None, **kw)


# --------------------------------------------------------------------------- harness controls
# The same scenarios straight against the upstreams (no gateway): a failure further down
# is the gateway's, not the harness's.


async def test_control_sampling_and_elicitation_direct(everything_upstream):
    rec = Recorder()
    with anyio.fail_after(OP_TIMEOUT):
        async with mcp_client(everything_upstream.url, cache=None, mode="legacy", sampling_callback=rec.sample,
                              elicitation_callback=rec.elicit) as c:
            r = await c.call_tool("trigger-sampling-request", {"prompt": "portcullis-probe", "maxTokens": 5})
            assert "sampled by the pytest client" in text_of(r) and "pytest-model" in text_of(r), text_of(r)
            r = await c.call_tool("trigger-elicitation-request", {})
            assert "- Name: Ada Lovelace" in text_of(r) and "- Favorite Integer: 7" in text_of(r), text_of(r)


async def test_control_concurrent_sampling_and_elicitation_direct(everything_upstream):
    rec = Recorder()
    results: dict[str, str] = {}
    with anyio.fail_after(OP_TIMEOUT):
        async with mcp_client(everything_upstream.url, cache=None, mode="legacy", sampling_callback=rec.sample,
                              elicitation_callback=rec.elicit) as c:
            async def call(name: str, args: dict) -> None:
                results[name] = text_of(await c.call_tool(name, args))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "trigger-sampling-request", {"prompt": "one"})
                tg.start_soon(call, "trigger-elicitation-request", {})
    assert "sampled by the pytest client" in results["trigger-sampling-request"], results
    assert "- Name: Ada Lovelace" in results["trigger-elicitation-request"], results


def test_control_raw_session_direct(everything_upstream, py_upstream):
    s = RawSession(everything_upstream.url, None)
    s.initialize()
    assert raw_text(s.call("echo", {"message": "m"})) == "Echo: m"
    assert s.request("ping") == {}
    s = RawSession(py_upstream.url, PY_UPSTREAM_KEY)
    s.initialize()
    assert raw_text(s.call("echo", {"text": "t"})) == "t"
    r = s.request("resources/read", {"uri": COLLIDING_URI})
    assert r["contents"][0]["text"] == "py upstream's copy of instructions.md"


# --------------------------------------------------------------------------- 1. Python SDK: tools


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_py_client_lists_and_calls_both_echos(team_gw, py_upstream, mode):
    tok = team_gw.token("team")
    mark = py_upstream.mark()
    with anyio.fail_after(OP_TIMEOUT):
        async with client(team_gw.ws_url("team"), tok["token"], mode=mode) as c:
            if mode == "legacy":
                assert c.server_info is not None and c.server_info.name == "portcullis", c.server_info
            tools = await all_tools(c)
            names = [t.name for t in tools]
            assert_prefixed_names(names)
            assert {"py__echo", "py__add", "py__progress"} <= set(names), names
            assert {"everything__echo", "everything__get-sum", "everything__trigger-long-running-operation"} <= set(
                names), names
            by_name = {t.name: t for t in tools}
            # schemas are the upstreams' own
            assert "text" in by_name["py__echo"].input_schema.get("properties", {}), by_name["py__echo"]
            assert "message" in by_name["everything__echo"].input_schema.get("properties", {}), by_name["everything__echo"]

            r = await c.call_tool("py__echo", {"text": "to py"})
            assert not r.is_error, r
            assert text_of(r) == "to py"  # the py upstream echoes verbatim
            r = await c.call_tool("everything__echo", {"message": "to everything"})
            assert not r.is_error, r
            assert text_of(r) == "Echo: to everything"  # server-everything prefixes "Echo: "
            r = await c.call_tool("py__add", {"a": 2, "b": 3})
            assert r.structured_content == {"result": 5}, r
            r = await c.call_tool("everything__get-sum", {"a": 19, "b": 23})
            assert "42" in text_of(r), r

    # whatever the gateway forwards to the py upstream, a routing header must carry the
    # stripped name, never the prefixed one
    for rec in py_upstream.records(mark):
        for k, v in rec["headers"]:
            assert not (k.lower() == "mcp-name" and v.startswith("py__")), rec
            assert "mwt_" not in v, f"client token forwarded upstream in {k}"


async def test_initialize_answered_by_gateway_with_merged_capabilities(team_gw):
    tok = team_gw.token("team")
    with anyio.fail_after(OP_TIMEOUT):
        async with client(team_gw.ws_url("team"), tok["token"]) as c:
            assert c.server_info.name == "portcullis"
            caps = c.server_capabilities
            assert caps.tools is not None and caps.prompts is not None and caps.resources is not None, caps
            assert caps.logging is not None, f"server-everything has logging: the union must have it: {caps}"
            assert caps.completions is not None, f"both upstreams complete: {caps}"
            await c.send_ping()


# --------------------------------------------------------------------------- 2. TypeScript SDK


def run_multi_client(url: str, token: str, *extra: str, timeout_ms: int = 20000) -> dict:
    node = shutil.which("node")
    assert node, "node not on PATH"
    env = {k: v for k, v in os.environ.items() if k != "PORTCULLIS_TOKEN"}
    env["PORTCULLIS_TOKEN"] = token
    res = subprocess.run(
        [node, str(MULTI_CLIENT), "--url", url, "--timeout-ms", str(timeout_ms), *extra],
        env=env, cwd=TESTS_JS, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout_ms / 1000 + 15,
    )
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert lines, f"multi_client.mjs printed nothing (exit {res.returncode}); stderr:\n{res.stderr}"
    out = json.loads(lines[-1])
    assert res.returncode == 0 and out.get("ok"), f"TS client failed: {out}\nstderr:\n{res.stderr[-2000:]}"
    return out


def test_ts_client_lists_and_calls_both_echos(team_gw):
    tok = team_gw.token("team")
    calls = [
        {"name": "py__echo", "arguments": {"text": "from ts to py"}},
        {"name": "everything__echo", "arguments": {"message": "from ts to everything"}},
        {"name": "py__add", "arguments": {"a": 40, "b": 2}},
    ]
    out = run_multi_client(team_gw.ws_url("team"), tok["token"], "--calls", json.dumps(calls),
                           "--prompt", json.dumps({"name": "py__greet", "arguments": {"name": "Lin"}}),
                           "--read", PY_RESOURCE_URI)
    assert out["serverVersion"]["name"] == "portcullis", out["serverVersion"]
    assert out["sessionId"], "an aggregating workspace is stateful: the TS client must get a session id"
    names = [t["name"] for t in out["tools"]]
    assert_prefixed_names(names)
    assert {"py__echo", "everything__echo"} <= set(names), names
    res = {r["name"]: r for r in out["results"]}
    for r in out["results"]:
        assert "error" not in r, r
        assert not r["result"].get("isError"), r
    assert res["py__echo"]["result"]["content"] == [{"type": "text", "text": "from ts to py"}]
    assert res["everything__echo"]["result"]["content"] == [{"type": "text", "text": "Echo: from ts to everything"}]
    assert res["py__add"]["result"].get("structuredContent") == {"result": 42}, res["py__add"]
    assert "py__greet" in out["prompts"] and "everything__simple-prompt" in out["prompts"], out["prompts"]
    assert out["prompt"]["messages"][0]["content"]["text"] == "Hello from the py upstream, Lin!"
    assert PY_RESOURCE_URI in out["resources"] and EVERYTHING_DOC_URI in out["resources"], out["resources"]
    assert out["read"]["contents"][0]["text"] == "py upstream resource content"
    # DELETE of the gateway's session must be accepted (the TS SDK treats only 2xx/405 as fine)
    assert "terminateError" not in out, out["terminateError"]


# --------------------------------------------------------------------------- 3. prompts and resources


async def test_prompts_from_both_servers(team_gw):
    tok = team_gw.token("team")
    with anyio.fail_after(OP_TIMEOUT):
        async with client(team_gw.ws_url("team"), tok["token"]) as c:
            prompts = await all_pages(c.list_prompts, "prompts")
            names = [p.name for p in prompts]
            assert_prefixed_names(names)
            assert {"py__greet", "everything__simple-prompt", "everything__args-prompt"} <= set(names), names
            greet = next(p for p in prompts if p.name == "py__greet")
            assert [a.name for a in greet.arguments or []] == ["name"], greet

            r = await c.get_prompt("py__greet", {"name": "Ada"})
            assert r.messages[0].content.text == "Hello from the py upstream, Ada!", r
            r = await c.get_prompt("everything__args-prompt", {"city": "Paris"})
            assert r.messages[0].content.text == "What's weather in Paris?", r
            r = await c.get_prompt("everything__simple-prompt", {})
            assert r.messages[0].content.text == "This is a simple prompt without arguments.", r


async def test_resources_from_both_servers(team_gw):
    tok = team_gw.token("team")
    with anyio.fail_after(OP_TIMEOUT):
        async with client(team_gw.ws_url("team"), tok["token"]) as c:
            uris = [str(r.uri) for r in await all_pages(c.list_resources, "resources")]
            assert len(uris) == len(set(uris)), f"duplicate URIs: {sorted(uris)}"
            assert PY_RESOURCE_URI in uris and EVERYTHING_DOC_URI in uris, uris

            r = await c.read_resource(PY_RESOURCE_URI)
            assert r.contents[0].text == "py upstream resource content", r
            r = await c.read_resource(EVERYTHING_DOC_URI)
            assert str(r.contents[0].uri) == EVERYTHING_DOC_URI and len(r.contents[0].text) > 20, r


async def test_colliding_resource_uri_is_rewritten_for_the_later_server(team_gw):
    """Both upstreams serve COLLIDING_URI. `py` comes first in the config, so it keeps the
    URI; server-everything's copy is listed as portcullis://everything/<original>."""
    rewritten = f"portcullis://everything/{COLLIDING_URI}"
    tok = team_gw.token("team")
    with anyio.fail_after(OP_TIMEOUT):
        async with client(team_gw.ws_url("team"), tok["token"]) as c:
            uris = [str(r.uri) for r in await all_pages(c.list_resources, "resources")]
            assert uris.count(COLLIDING_URI) == 1, uris
            assert rewritten in uris, f"expected {rewritten!r} in {uris}"
            assert not any(u.startswith("portcullis://py/") for u in uris), uris
            # other resources keep their URIs
            assert EVERYTHING_DOC_URI in uris and f"portcullis://everything/{EVERYTHING_DOC_URI}" not in uris

            r = await c.read_resource(COLLIDING_URI)
            assert r.contents[0].text == "py upstream's copy of instructions.md", r
            r = await c.read_resource(rewritten)
            text = r.contents[0].text
            assert text and text != "py upstream's copy of instructions.md", r
            assert str(r.contents[0].uri) == rewritten, (
                f"contents should carry the URI the client knows, got {r.contents[0].uri}")


async def test_resource_templates_merged_and_templated_reads_routed(team_gw):
    tok = team_gw.token("team")
    with anyio.fail_after(OP_TIMEOUT):
        async with client(team_gw.ws_url("team"), tok["token"]) as c:
            templates = [t.uri_template for t in await all_pages(c.list_resource_templates, "resource_templates")]
            assert "py-upstream://items/{item_id}" in templates, templates
            assert "demo://resource/dynamic/text/{resourceId}" in templates, templates
            # a URI that is in no list, only matches a template: routed to the template's owner
            r = await c.read_resource("py-upstream://items/7")
            assert r.contents[0].text == "py item 7", r
            r = await c.read_resource("demo://resource/dynamic/text/3")
            assert r.contents[0].text.startswith("Resource 3: This is a plaintext resource"), r


async def test_completion_routed_by_prompt_prefix(team_gw):
    tok = team_gw.token("team")
    with anyio.fail_after(OP_TIMEOUT):
        async with client(team_gw.ws_url("team"), tok["token"]) as c:
            r = await c.complete(types.PromptReference(type="ref/prompt", name="py__greet"), {"name": "name", "value": "A"})
            assert r.completion.values == ["Ada", "Alan"], r
            r = await c.complete(types.PromptReference(type="ref/prompt", name="everything__completable-prompt"),
                                 {"name": "department", "value": "E"})
            assert r.completion.values == ["Engineering"], r


# --------------------------------------------------------------------------- 4. progress


async def test_progress_before_result_from_both_servers(team_gw, tmp_path):
    tok = team_gw.token("team")
    with anyio.fail_after(OP_TIMEOUT):
        async with client(team_gw.ws_url("team"), tok["token"]) as c:
            log = ProgressLog()
            started = time.monotonic()
            r = await c.call_tool("everything__trigger-long-running-operation", {"duration": 1.6, "steps": 4},
                                  progress_callback=log)
            done = time.monotonic()
            assert not r.is_error and "Long running operation completed" in text_of(r), r
            assert [(p, t) for _, p, t, _ in log.events] == [(1, 4), (2, 4), (3, 4), (4, 4)], log.events
            # server-everything cannot be held back on demand: relative, the first report
            # arrives in the first half of the call (buffered, it would come with the result)
            assert log.events[0][0] - started < (done - started) / 2, "progress was not streamed (buffered?)"

            # the py server holds the rest of the call until the first report reached the client
            log = GatedProgressLog(gate=str(tmp_path / "py-first-progress-seen"))
            r = await c.call_tool("py__progress", {"steps": 3, "interval_ms": 50, "gate": log.gate},
                                  progress_callback=log)
            assert text_of(r) == "done after 3 steps", r
            assert [p for _, p, _, _ in log.events] == [1, 2, 3], log.events


def test_call_stream_closed_by_the_upstream_is_resumed_by_the_gateway(team_gw, poller_py_upstream, py_upstream,
                                                                      tmp_path):
    """SEP-1699 polling with the real SDK: `poller__poll` reports progress 1, then the SDK
    server ends the call's SSE stream (`ctx.close_sse_stream()`), reports progress 2 and 3
    into its event store and answers. The gateway must resume the upstream stream itself
    (GET + Last-Event-ID) so that the client gets ONE uninterrupted stream: every report and
    the answer, in order, none twice. Protocol 2025-11-25: the SDK primes streams (event ids,
    `retry:`) and lets a tool close its stream only for clients of that revision or later."""
    tok = team_gw.token("polling")
    py_mark = py_upstream.mark()
    s = RawSession(team_gw.ws_url("polling"), tok["token"])
    s.initialize(version="2025-11-25")
    assert s.protocol == "2025-11-25"
    gate = tmp_path / "poll-first-progress-seen"
    rid = s.next_id()
    body = jsonrpc("tools/call", {"name": "poller__poll", "arguments": {"steps": 3, "gate": str(gate)},
                                  "_meta": {"progressToken": "poll-1"}}, id=rid)
    h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
         "Authorization": f"Bearer {s.token}", "Mcp-Session-Id": s.sid, "MCP-Protocol-Version": s.protocol}
    msgs: list[dict] = []
    with httpx.Client(timeout=OP_TIMEOUT) as hc, hc.stream("POST", s.url, content=json.dumps(body), headers=h) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream"), r.headers
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[len("data:"):])
            msgs.append(msg)
            if msg.get("method") == "notifications/progress" and msg["params"]["progress"] == 1:
                gate.touch()  # the tool ends its stream only once this report reached us
    # the whole body was read: the gateway ended the stream after the answer
    progress = [(m["params"]["progressToken"], m["params"]["progress"]) for m in msgs
                if m.get("method") == "notifications/progress"]
    assert progress == [("poll-1", 1), ("poll-1", 2), ("poll-1", 3)], msgs
    answers = [m for m in msgs if "method" not in m]
    assert len(answers) == 1 and msgs[-1] is answers[0], msgs
    assert answers[0]["id"] == rid and raw_text(answers[0]["result"]) == "polled after 3 steps", answers
    # the cut really happened and the gateway resumed: one GET with Last-Event-ID reached the poller
    resumes = [e for e in poller_py_upstream.records()
               if e["method"] == "GET" and any(k.lower() == "last-event-id" for k, _ in e["headers"])]
    assert len(resumes) == 1, resumes
    # neither the call nor its resumption went to the workspace's other server
    py_records = py_upstream.records(py_mark)
    assert not [e for e in py_records if any(k.lower() == "last-event-id" for k, _ in e["headers"])], py_records


# --------------------------------------------------------------------------- 5. sampling, elicitation


class Recorder:
    def __init__(self) -> None:
        self.sampling: list[types.CreateMessageRequestParams] = []
        self.elicitation: list[types.ElicitRequestParams] = []

    async def sample(self, ctx, params: types.CreateMessageRequestParams):
        self.sampling.append(params)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled by the pytest client"),
            model="pytest-model", stop_reason="endTurn",
        )

    async def elicit(self, ctx, params: types.ElicitRequestParams):
        self.elicitation.append(params)
        return types.ElicitResult(action="accept", content={"name": "Ada Lovelace", "check": True, "integer": 7})


async def test_sampling_and_elicitation_round_trips(team_gw):
    """server-everything registers trigger-sampling-request / trigger-elicitation-request only
    for a client that declared sampling / elicitation: the gateway must pass the client's
    capabilities on to the upstream, relay the upstream's request on the call's stream and
    route the client's answer back."""
    tok = team_gw.token("team")
    rec = Recorder()
    with anyio.fail_after(OP_TIMEOUT):
        async with client(team_gw.ws_url("team"), tok["token"], sampling_callback=rec.sample,
                          elicitation_callback=rec.elicit) as c:
            names = {t.name for t in await all_tools(c)}
            assert {"everything__trigger-sampling-request", "everything__trigger-elicitation-request"} <= names, (
                sorted(names))

            r = await c.call_tool("everything__trigger-sampling-request", {"prompt": "portcullis-probe", "maxTokens": 5})
            assert not r.is_error, r
            assert len(rec.sampling) == 1, rec.sampling
            assert "portcullis-probe" in rec.sampling[0].messages[0].content.text, rec.sampling[0]
            assert rec.sampling[0].max_tokens == 5
            assert "sampled by the pytest client" in text_of(r) and "pytest-model" in text_of(r), text_of(r)

            r = await c.call_tool("everything__trigger-elicitation-request", {})
            assert not r.is_error, r
            assert len(rec.elicitation) == 1, rec.elicitation
            assert "- Name: Ada Lovelace" in text_of(r) and "- Favorite Integer: 7" in text_of(r), text_of(r)

            # the session keeps working
            assert text_of(await c.call_tool("py__echo", {"text": "after"})) == "after"


async def test_concurrent_sampling_and_elicitation(team_gw):
    """Two server-to-client requests outstanding at once on two call streams: each answer
    must reach the request it belongs to (ids rewritten both ways)."""
    tok = team_gw.token("team")
    rec = Recorder()
    results: dict[str, str] = {}
    with anyio.fail_after(OP_TIMEOUT):
        async with client(team_gw.ws_url("team"), tok["token"], sampling_callback=rec.sample,
                          elicitation_callback=rec.elicit) as c:
            async def call(name: str, args: dict) -> None:
                results[name] = text_of(await c.call_tool(name, args))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "everything__trigger-sampling-request", {"prompt": "one"})
                tg.start_soon(call, "everything__trigger-elicitation-request", {})
    assert "sampled by the pytest client" in results["everything__trigger-sampling-request"], results
    assert "- Name: Ada Lovelace" in results["everything__trigger-elicitation-request"], results


def test_concurrent_requests_in_one_session(team_gw):
    """Clients send requests concurrently within one session (the Python SDK, for one,
    lists tools before calling one it has not seen). Each must be answered: the gateway's
    own requests to an upstream need ids that are unique within that upstream session."""
    import concurrent.futures

    tok = team_gw.token("team")
    for attempt in range(3):
        s = RawSession(team_gw.ws_url("team"), tok["token"])
        s.initialize()
        with concurrent.futures.ThreadPoolExecutor(6) as ex:
            lists = [ex.submit(s.tool_names) for _ in range(3)]
            prompts = [ex.submit(s.request, "prompts/list", {}) for _ in range(2)]
            call = ex.submit(s.call, "everything__echo", {"message": f"c{attempt}"})
            try:
                names = [f.result(timeout=8) for f in lists]
                [f.result(timeout=8) for f in prompts]
                echoed = call.result(timeout=8)
            except concurrent.futures.TimeoutError:
                pytest.fail(f"attempt {attempt}: a concurrent request in one session got no answer within 8 s")
        assert all("everything__echo" in n and "py__echo" in n for n in names), names
        assert raw_text(echoed) == f"Echo: c{attempt}"


# --------------------------------------------------------------------------- 6. scoped token


async def test_scoped_token_sees_and_calls_only_its_server(team_gw):
    tok = team_gw.token("team", servers=["py"])
    assert tok["info"].get("allowed_servers") == ["py"], tok["info"]
    with anyio.fail_after(OP_TIMEOUT):
        async with client(team_gw.ws_url("team"), tok["token"]) as c:
            names = [t.name for t in await all_tools(c)]
            assert "py__echo" in names, names
            assert all(n.startswith("py__") for n in names), names
            prompts = [p.name for p in await all_pages(c.list_prompts, "prompts")]
            assert "py__greet" in prompts and all(n.startswith("py__") for n in prompts), prompts
            uris = [str(r.uri) for r in await all_pages(c.list_resources, "resources")]
            assert PY_RESOURCE_URI in uris, uris
            assert EVERYTHING_DOC_URI not in uris and not any(u.startswith("portcullis://everything/") for u in uris), uris
            templates = [t.uri_template for t in await all_pages(c.list_resource_templates, "resource_templates")]
            assert not any(t.startswith("demo://") for t in templates), templates

            assert text_of(await c.call_tool("py__echo", {"text": "allowed"})) == "allowed"
            with pytest.raises(Exception) as info:
                await c.call_tool("everything__echo", {"message": "not allowed"})
            errs = mcp_errors(info.value)
            assert errs and errs[0].error.code == FORBIDDEN_CODE, repr(info.value)
            # the session survives the refusal
            assert text_of(await c.call_tool("py__echo", {"text": "still"})) == "still"

    # the HTTP status, which the SDK hides
    s = RawSession(team_gw.ws_url("team"), tok["token"])
    s.initialize()
    rid = s.next_id()
    r = s.post(jsonrpc("tools/call", {"name": "everything__echo", "arguments": {"message": "x"}}, id=rid))
    assert_jsonrpc_error(r, 403, FORBIDDEN_CODE, "Forbidden", rid)
    rid = s.next_id()
    r = s.post(jsonrpc("prompts/get", {"name": "everything__simple-prompt", "arguments": {}}, id=rid))
    assert_jsonrpc_error(r, 403, FORBIDDEN_CODE, "Forbidden", rid)
    assert raw_text(s.call("py__echo", {"text": "raw ok"})) == "raw ok"


# --------------------------------------------------------------------------- 7. raw protocol checks


def test_raw_initialize_ping_unknown_method_and_session_ids(team_gw):
    url = team_gw.ws_url("team")
    tok = team_gw.token("team")
    s = RawSession(url, tok["token"])
    resp, init = s.initialize()
    assert init["protocolVersion"] == PROTO, init
    assert init["serverInfo"]["name"] == "portcullis", init
    assert {"tools", "prompts", "resources"} <= set(init["capabilities"]), init["capabilities"]
    assert "x-request-id" in resp.headers

    assert s.request("ping") == {}
    assert s.request("logging/setLevel", {"level": "warning"}) == {}  # fanned out to upstreams with logging
    names = s.tool_names()
    assert "py__echo" in names and "everything__echo" in names, names

    # a method nobody handles: JSON-RPC -32601 with a 4xx status (clients probing newer revisions fall back)
    rid = s.next_id()
    r = s.post(jsonrpc("portcullis/no-such-method", {}, id=rid))
    assert_jsonrpc_error(r, 400, -32601, "Method not found", rid)

    # the session id with another valid token of the same workspace -> 401 / -31001
    other = team_gw.token("team")
    rid = s.next_id()
    r = s.post(jsonrpc("tools/list", {}, id=rid), token=other["token"])
    assert_jsonrpc_error(r, 401, UNAUTHORIZED_CODE, "Unauthorized", IdOrNull(rid))

    # an unknown session id (garbage, or a real one tampered with) -> 404 + JSON-RPC error body
    tampered = s.sid[:-2] + ("AA" if not s.sid.endswith("AA") else "BB")
    for bad in ("not-a-session", tampered, "A" * len(s.sid)):
        rid = s.next_id()
        r = s.post(jsonrpc("tools/list", {}, id=rid), sid=bad)
        assert r.status_code == 404, f"session id {bad[:20]!r}…: HTTP {r.status_code}: {r.text[:300]}"
        assert r.headers.get("content-type", "").startswith("application/json"), r.headers
        b = r.json()
        assert b.get("jsonrpc") == "2.0" and "error" in b and b.get("id") in (rid, None), b

    # the original session is unaffected by all of the above
    check_both_echos(s, "raw")


def test_raw_version_negotiation(team_gw):
    tok = team_gw.token("team")
    for version in ("2024-11-05", "2025-03-26", "2025-11-25"):
        s = RawSession(team_gw.ws_url("team"), tok["token"])
        _, init = s.initialize(version=version)
        assert init["protocolVersion"] == version, init
        check_both_echos(s, version)
    s = RawSession(team_gw.ws_url("team"), tok["token"])
    _, init = s.initialize(version="1999-01-01")
    assert init["protocolVersion"] in HANDSHAKE_VERSIONS, init


def _py_sessions(records: list[dict], method: str) -> list[str]:
    """The Mcp-Session-Id of each `method` request the py upstream recorded (None if absent)."""
    out = []
    for rec in records:
        if rec["method"] == method:
            out.append(next((v for k, v in rec["headers"] if k.lower() == "mcp-session-id"), None))
    return out


def test_raw_delete_ends_session_cleanly(team_gw, py_upstream):
    tok = team_gw.token("team")
    s = RawSession(team_gw.ws_url("team"), tok["token"])
    s.initialize()
    mark = py_upstream.mark()
    check_both_echos(s, "before delete")
    used = {sid for sid in _py_sessions(py_upstream.records(mark), "POST") if sid}
    assert len(used) == 1, used  # the py upstream's own session for this client session
    (py_sid,) = used
    mark = py_upstream.mark()
    with httpx.Client(timeout=15) as h:
        r = h.delete(s.url, headers={"Authorization": f"Bearer {tok['token']}", "Mcp-Session-Id": s.sid,
                                     "MCP-Protocol-Version": s.protocol})
    assert r.status_code == 200, (r.status_code, r.text)  # docs/multi-server.md: "ends every upstream session; 200"
    # The session really ended upstream: the py server was sent DELETE for exactly its session,
    # and no longer knows it.
    assert _py_sessions(py_upstream.records(mark), "DELETE") == [py_sid], py_upstream.records(mark)
    with httpx.Client(timeout=15) as h:
        r = h.post(py_upstream.url, json=jsonrpc("tools/list", {}, id=1),
                   headers={"Authorization": f"Bearer {PY_UPSTREAM_KEY}", "Mcp-Session-Id": py_sid,
                            "MCP-Protocol-Version": s.protocol, "Accept": "application/json, text/event-stream"})
    assert r.status_code == 404, (r.status_code, r.text)


# --------------------------------------------------------------------------- 8. restart


def test_gateway_restart_keeps_the_session(team_gw):
    tok = team_gw.token("team")
    s = RawSession(team_gw.ws_url("team"), tok["token"])
    s.initialize()
    check_both_echos(s, "before restart")
    sid = s.sid
    team_gw.restart()
    assert s.sid == sid
    check_both_echos(s, "after restart")
    names = s.tool_names()
    assert "py__echo" in names and "everything__echo" in names, names


async def test_sdk_session_survives_restart(team_gw):
    """A real client keeps its session across a gateway restart (e.g. a deploy)."""
    tok = team_gw.token("team")
    with anyio.fail_after(OP_TIMEOUT + 15):
        async with client(team_gw.ws_url("team"), tok["token"]) as c:
            assert text_of(await c.call_tool("py__echo", {"text": "one"})) == "one"
            # blocking on purpose: not from a worker thread, whose exit would SIGKILL the new
            # gateway (the harness sets PR_SET_PDEATHSIG, which follows the spawning thread)
            team_gw.restart()
            assert text_of(await c.call_tool("py__echo", {"text": "two"})) == "two"
            assert text_of(await c.call_tool("everything__echo", {"message": "three"})) == "Echo: three"


# --------------------------------------------------------------------------- 9. second instance


def test_second_instance_continues_session(team_gw, team_gw_b):
    tok = team_gw.token("team")
    s = RawSession(team_gw.ws_url("team"), tok["token"])
    s.initialize()
    check_both_echos(s, "on A")
    b_url = team_gw_b.ws_url("team")
    check_both_echos(s, "on B", url=b_url)
    names = s.tool_names(url=b_url)
    assert "py__echo" in names and "everything__echo" in names, names
    assert s.request("ping", url=b_url) == {}
    check_both_echos(s, "back on A")

    # and the other way round: a session begun on B continues on A
    s2 = RawSession(b_url, tok["token"])
    s2.initialize()
    check_both_echos(s2, "begun on B", url=team_gw.ws_url("team"))


def test_session_key_rotation(procs, portcullis_bin, multi_setup, team_gw):
    """session_keys newest first: an instance with [B, A] opens A-sealed sessions and seals
    new ones with B; an instance with only [B] cannot open A-sealed sessions (404)."""
    tok = team_gw.token("team")
    old = RawSession(team_gw.ws_url("team"), tok["token"])
    old.initialize()
    rotated = _instance(procs, portcullis_bin, multi_setup, "gateway-multi-rotated", [SESSION_KEY_B, SESSION_KEY_A],
                        admin_token=team_gw.admin_token)
    only_new = _instance(procs, portcullis_bin, multi_setup, "gateway-multi-newkey", [SESSION_KEY_B],
                         admin_token=team_gw.admin_token)
    try:
        check_both_echos(old, "old key on rotated instance", url=rotated.ws_url("team"))
        rid = old.next_id()
        r = old.post(jsonrpc("tools/list", {}, id=rid), url=only_new.ws_url("team"))
        assert r.status_code == 404, f"an A-sealed session on a [B]-only instance: HTTP {r.status_code} {r.text[:300]}"

        new = RawSession(rotated.ws_url("team"), tok["token"])
        new.initialize()
        check_both_echos(new, "new key on [B]-only instance", url=only_new.ws_url("team"))
        rid = new.next_id()
        r = new.post(jsonrpc("tools/list", {}, id=rid), url=team_gw.ws_url("team"))
        assert r.status_code == 404, f"a B-sealed session on an [A]-only instance: HTTP {r.status_code} {r.text[:300]}"
    finally:
        rotated.stop(grace=3)
        only_new.stop(grace=3)


# --------------------------------------------------------------------------- 10. failure modes


async def test_upstream_killed_mid_session_fail_open(team_gw, fragile_py_upstream, procs):
    tok = team_gw.token("fragile")
    url = team_gw.ws_url("fragile")
    raw = RawSession(url, tok["token"])
    raw.initialize()
    with anyio.fail_after(OP_TIMEOUT + 10):
        async with client(url, tok["token"]) as c:
            names = {t.name for t in await all_tools(c)}
            assert {"py__echo", "everything__echo"} <= names, names
            assert text_of(await c.call_tool("py__echo", {"text": "alive"})) == "alive"

            await anyio.to_thread.run_sync(procs.stop, fragile_py_upstream.proc)
            assert not fragile_py_upstream.proc.alive()

            # the other server keeps working
            assert text_of(await c.call_tool("everything__echo", {"message": "still here"})) == "Echo: still here"
            # a call to the dead one: a JSON-RPC error, not a hang or a dead session
            with pytest.raises(Exception) as info:
                await c.call_tool("py__echo", {"text": "anyone?"})
            assert mcp_errors(info.value), f"expected a JSON-RPC error, got {info.value!r}"
            # lists leave the dead server out
            names = {t.name for t in await all_tools(c)}
            assert "everything__echo" in names and not any(n.startswith("py__") for n in names), sorted(names)
            assert text_of(await c.call_tool("everything__echo", {"message": "after"})) == "Echo: after"

    # the same over raw HTTP: the error carries the request's id
    rid = raw.next_id()
    r = raw.post(jsonrpc("tools/call", {"name": "py__echo", "arguments": {"text": "x"}}, id=rid))
    # as pinned in tests/it/aggregate.rs for a stopped upstream
    assert_jsonrpc_error(r, 502, -32603, "Upstream unavailable", rid)
    assert raw_text(raw.call("everything__echo", {"message": "raw"})) == "Echo: raw"


async def test_fail_open_with_upstream_down_from_the_start(team_gw):
    tok = team_gw.token("halfdead")
    with anyio.fail_after(OP_TIMEOUT):
        async with client(team_gw.ws_url("halfdead"), tok["token"]) as c:
            assert c.server_info.name == "portcullis"
            names = {t.name for t in await all_tools(c)}
            assert "py__echo" in names and not any(n.startswith("gone__") for n in names), sorted(names)
            assert text_of(await c.call_tool("py__echo", {"text": "half"})) == "half"
            with pytest.raises(Exception) as info:
                await c.call_tool("gone__echo", {"text": "x"})
            assert mcp_errors(info.value), repr(info.value)


def test_fail_closed_fails_the_request(team_gw, strict_py_upstream, procs):
    """fail_closed: while every upstream is up the workspace works; once one is unreachable,
    requests that need it fail with a JSON-RPC error (tools/list needs every upstream), and so
    does a new handshake (as pinned in tests/it/aggregate.rs: 502, -32603)."""
    tok = team_gw.token("strict")
    s = RawSession(team_gw.ws_url("strict"), tok["token"])
    s.initialize()
    names = s.tool_names()
    assert "py__echo" in names and "second__echo" in names, names

    procs.stop(strict_py_upstream.proc)
    assert not strict_py_upstream.proc.alive()

    rid = s.next_id()
    r = s.post(jsonrpc("tools/list", {}, id=rid))
    assert_jsonrpc_error(r, 502, -32603, "Upstream unavailable", rid)

    fresh = RawSession(team_gw.ws_url("strict"), tok["token"])
    rid = fresh.next_id()
    r = fresh.post(jsonrpc("initialize", {"protocolVersion": PROTO, "capabilities": {},
                                          "clientInfo": {"name": "t", "version": "0"}}, id=rid), sid=None)
    assert_jsonrpc_error(r, 502, -32603, "Upstream unavailable", rid)
    assert "mcp-session-id" not in r.headers, r.headers


# --------------------------------------------------------------------------- single server in this config


async def test_single_server_workspace_stays_pass_through(team_gw):
    tok = team_gw.token("solo")
    with anyio.fail_after(OP_TIMEOUT):
        async with client(team_gw.ws_url("solo"), tok["token"]) as c:
            assert c.server_info.name == "portcullis-py-upstream"
            assert {t.name for t in await all_tools(c)} == {"echo", "add", "progress"}
            assert text_of(await c.call_tool("echo", {"text": "solo"})) == "solo"
