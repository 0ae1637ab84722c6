"""Fixtures for the real-SDK integration tests of the Portcullis gateway.

Everything here runs real processes on loopback, on free ports:
  * the gateway binary (`portcullis serve`) with a config written to a temp dir,
  * the demo upstream shipped in the binary (`portcullis demo-upstream`),
  * an upstream built with the official Python SDK (tests/py/upstream_py.py) that records
    the headers of every request it receives,
  * @modelcontextprotocol/server-everything (the official TypeScript reference server),
    started with a clean environment and bound to 127.0.0.1.
Every child is started in its own process group and killed at the end of the session,
whatever happened. When a test fails, the tails of all process logs are attached to the
report.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS_PY = ROOT / "tests" / "py"
TESTS_JS = ROOT / "tests" / "js"
SERVER_EVERYTHING = TESTS_JS / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
BIND_LOOPBACK = TESTS_JS / "bind-loopback.cjs"

# Secrets the gateway must inject towards upstreams (through ${NAME} expansion in the config)
# and that must never travel back to clients.
DEMO_UPSTREAM_KEY = "demo-key-" + secrets.token_hex(8)
PY_UPSTREAM_KEY = "py-key-" + secrets.token_hex(8)
PY_UPSTREAM_TAG = "portcullis-it-" + secrets.token_hex(4)
# The multi-server gateway (a session fixture that keeps running) shares the py upstream and
# probes it in the background; it marks its requests with this tag so that tests about the
# single-server gateway can leave them out without weakening their own header checks.
PY_UPSTREAM_TEAM_TAG = "portcullis-team-" + secrets.token_hex(4)
ALLOWED_ORIGIN = "http://allowed-origin.test"
LIMITED_RPM = 3

START_TIMEOUT = 30.0


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.25):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when pytest dies, even if it is SIGKILLed
    itself and no teardown runs (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; teardown and atexit still kill
        pass


@dataclass
class Proc:
    name: str
    argv: list[str]
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, limit: int = 6000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace")


class ProcessManager:
    """Starts children in their own process group; stop_all() always kills them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []
        _MANAGERS.append(self)

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
        log_path = self.log_dir / f"{name}-{len(self.procs)}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(cwd) if cwd else None,
                start_new_session=True,  # own process group: killpg reaches grandchildren too
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        proc = Proc(name, [str(a) for a in argv], popen, log_path)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 3.0) -> None:
        if proc.popen.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left in the group (the leader may have exited on TERM, children not)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


_MANAGERS: list[ProcessManager] = []


@atexit.register
def _kill_leftovers() -> None:  # last resort, e.g. after KeyboardInterrupt
    for m in _MANAGERS:
        m.stop_all()


def wait_until(pred: Callable[[], bool], what: str, *, timeout: float = START_TIMEOUT, procs: Iterable[Proc] = ()) -> None:
    """Poll `pred` every 50 ms; fail early with the log if a watched process died."""
    procs = list(procs)
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        for p in procs:
            if not p.alive():
                raise RuntimeError(
                    f"{p.name} exited with code {p.popen.returncode} while waiting for {what}\n"
                    f"argv: {p.argv}\n--- log ---\n{p.log_tail()}"
                )
        try:
            if pred():
                return
        except Exception as e:  # noqa: BLE001 - keep polling, report the last one
            last_exc = e
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name} log ---\n{p.log_tail()}" for p in procs)
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})\n{logs}")
        time.sleep(0.05)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for m in _MANAGERS:
            for p in m.procs:
                state = "running" if p.alive() else f"exited {p.popen.returncode}"
                report.sections.append((f"log of {p.name} (pid {p.pid}, {state})", p.log_tail(4000)))


@pytest.fixture(scope="session")
def procs(tmp_path_factory) -> Iterator[ProcessManager]:
    manager = ProcessManager(tmp_path_factory.mktemp("logs"))
    try:
        yield manager
    finally:
        manager.stop_all()


# --------------------------------------------------------------------------- binary


@pytest.fixture(scope="session")
def portcullis_bin() -> Path:
    path = Path(os.environ.get("PORTCULLIS_BIN", ROOT / "target" / "debug" / "portcullis"))
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"portcullis binary not found at {path}; build it with `cargo build` in {ROOT} "
            "or point PORTCULLIS_BIN at it",
            pytrace=False,
        )
    return path


# --------------------------------------------------------------------------- upstreams


@dataclass
class Upstream:
    name: str
    port: int
    url: str  # MCP endpoint
    proc: Proc


@dataclass
class RecordingUpstream(Upstream):
    record_path: Path = field(default=Path("/nonexistent"))

    def records(self, since: int = 0, *, exclude_tag: str | None = None) -> list[dict[str, Any]]:
        """Requests received so far (one dict per HTTP request), from index `since`; with
        `exclude_tag`, those whose X-Portcullis-Test header is that tag (another gateway's) are left out."""
        lines = self.record_path.read_text(encoding="utf-8").splitlines()
        recs = [json.loads(line) for line in lines[since:] if line.strip()]
        if exclude_tag is None:
            return recs
        return [r for r in recs
                if not any(k.lower() == "x-portcullis-test" and v == exclude_tag for k, v in r["headers"])]

    def mark(self) -> int:
        return len(self.records())


@pytest.fixture(scope="session")
def demo_upstream(procs: ProcessManager, portcullis_bin: Path) -> Upstream:
    """`portcullis demo-upstream`, requiring its own API key (the gateway injects it)."""
    port = free_port()
    proc = procs.start(
        "demo-upstream",
        [portcullis_bin, "demo-upstream", "--listen", f"127.0.0.1:{port}", "--api-key", DEMO_UPSTREAM_KEY],
    )
    wait_until(lambda: port_open(port), f"demo upstream on port {port}", procs=[proc])
    return Upstream("demo", port, f"http://127.0.0.1:{port}/mcp", proc)


@pytest.fixture(scope="session")
def py_upstream(procs: ProcessManager, tmp_path_factory) -> RecordingUpstream:
    """An MCPServer (official Python SDK) under uvicorn that records every request's headers."""
    port = free_port()
    record = tmp_path_factory.mktemp("py-upstream") / "requests.jsonl"
    record.touch()
    proc = procs.start(
        "py-upstream",
        [
            sys.executable,
            TESTS_PY / "upstream_py.py",
            "--port",
            str(port),
            "--record",
            record,
            "--expect-auth",
            f"Bearer {PY_UPSTREAM_KEY}",
        ],
    )
    wait_until(lambda: port_open(port), f"python upstream on port {port}", procs=[proc])
    return RecordingUpstream("py", port, f"http://127.0.0.1:{port}/mcp", proc, record_path=record)


@pytest.fixture(scope="session")
def everything_upstream(procs: ProcessManager, tmp_path_factory) -> Upstream:
    """@modelcontextprotocol/server-everything in streamable HTTP mode.

    Started with an empty environment (only PATH, HOME, PORT) because its get-env tool
    returns its environment, and with a preload that binds its listener to 127.0.0.1
    (the package itself listens on all interfaces).
    """
    if not SERVER_EVERYTHING.is_file():
        pytest.fail(f"{SERVER_EVERYTHING} missing: run scripts/test-deps.sh", pytrace=False)
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found on PATH: run scripts/test-deps.sh", pytrace=False)
    port = free_port()
    home = tmp_path_factory.mktemp("everything-home")
    env = {"PATH": os.path.dirname(node) + ":/usr/bin:/bin", "HOME": str(home), "PORT": str(port)}
    proc = procs.start(
        "server-everything",
        [node, "--require", BIND_LOOPBACK, SERVER_EVERYTHING, "streamableHttp"],
        env=env,
        cwd=home,
    )
    wait_until(lambda: port_open(port), f"server-everything on port {port}", procs=[proc])
    return Upstream("everything", port, f"http://127.0.0.1:{port}/mcp", proc)


# --------------------------------------------------------------------------- gateway


@dataclass
class Gateway:
    bin: Path
    workdir: Path
    config_path: Path
    listen_port: int
    admin_port: int
    admin_token: str
    admin_token_info: dict[str, Any]
    env: dict[str, str]
    proc: Proc

    @property
    def data_url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def ws_url(self, slug: str) -> str:
        return f"{self.data_url}/ws/{slug}"

    def cli(self, *args: str, check: bool = True, admin_token: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a `portcullis` client command against this gateway's admin listener."""
        env = dict(self.env)
        env["PORTCULLIS_ADMIN_URL"] = self.admin_url
        env["PORTCULLIS_ADMIN_TOKEN"] = admin_token if admin_token is not None else self.admin_token
        res = subprocess.run(
            [str(self.bin), *args],
            env=env,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"`portcullis {' '.join(args)}` exited {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
            )
        return res

    def create_token(self, workspace: str, name: str | None = None, expires_in: int | None = None) -> dict[str, Any]:
        """`portcullis workspace token create WS --name N [--expires-in S] --json` -> parsed JSON."""
        args = ["workspace", "token", "create", workspace, "--name", name or f"pytest-{uuid.uuid4().hex[:8]}", "--json"]
        if expires_in is not None:
            args += ["--expires-in", str(expires_in)]
        res = self.cli(*args)
        try:
            out = json.loads(res.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"token create --json printed no JSON: {res.stdout!r} ({e})") from e
        assert isinstance(out.get("token"), str) and out["token"].startswith("mwt_"), out
        assert isinstance(out.get("info"), dict) and out["info"].get("id", "").startswith("tkn_"), out
        return out

    def revoke_token(self, workspace: str, token_id: str) -> subprocess.CompletedProcess:
        return self.cli("workspace", "token", "revoke", workspace, token_id)


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string of printable ASCII is a valid TOML basic string


@pytest.fixture(scope="session")
def dead_port() -> int:
    """A port nothing listens on: the upstream of the `dead` workspace."""
    return free_port()


@pytest.fixture(scope="session")
def gateway(
    procs: ProcessManager,
    portcullis_bin: Path,
    tmp_path_factory,
    demo_upstream: Upstream,
    py_upstream: RecordingUpstream,
    everything_upstream: Upstream,
    dead_port: int,
) -> Gateway:
    """`portcullis serve` with one workspace per upstream, an admin token bootstrapped offline."""
    workdir = tmp_path_factory.mktemp("gateway")
    listen_port, admin_port = free_port(), free_port()
    while admin_port == listen_port:
        admin_port = free_port()
    db = workdir / "data" / "portcullis.db"
    db.parent.mkdir()
    config = f"""
[server]
listen = "127.0.0.1:{listen_port}"
admin_listen = "127.0.0.1:{admin_port}"
public_url = "http://127.0.0.1:{listen_port}"
allowed_origins = [{_toml_str(ALLOWED_ORIGIN)}]

[store]
backend = "sqlite"
path = {_toml_str(str(db))}

[limits]
requests_per_minute = 600

[[workspaces]]
slug = "demo"

[[workspaces.servers]]
name = "demo"
url = {_toml_str(demo_upstream.url)}
headers = {{ Authorization = "Bearer ${{PORTCULLIS_IT_DEMO_KEY}}" }}
timeout_ms = 30000

[[workspaces]]
slug = "py"

[[workspaces.servers]]
name = "py"
url = {_toml_str(py_upstream.url)}
headers = {{ Authorization = "Bearer ${{PORTCULLIS_IT_PY_KEY}}", "X-Portcullis-Test" = {_toml_str(PY_UPSTREAM_TAG)} }}
timeout_ms = 30000

[[workspaces]]
slug = "everything"

[[workspaces.servers]]
name = "everything"
url = {_toml_str(everything_upstream.url)}
timeout_ms = 30000

[[workspaces]]
slug = "dead"

[[workspaces.servers]]
name = "dead"
url = "http://127.0.0.1:{dead_port}/mcp"
timeout_ms = 5000
connect_timeout_ms = 1000

[[workspaces]]
slug = "badkey"

[[workspaces.servers]]
name = "badkey"
url = {_toml_str(py_upstream.url)}
headers = {{ Authorization = "Bearer not-the-upstream-key" }}
timeout_ms = 30000

[[workspaces]]
slug = "slow"

[[workspaces.servers]]
name = "slow"
url = "http://127.0.0.1:{py_upstream.port}/slow/mcp"
headers = {{ Authorization = "Bearer ${{PORTCULLIS_IT_PY_KEY}}" }}
timeout_ms = 500

[[workspaces]]
slug = "limited"
requests_per_minute = {LIMITED_RPM}

[[workspaces.servers]]
name = "limited"
url = {_toml_str(demo_upstream.url)}
headers = {{ Authorization = "Bearer ${{PORTCULLIS_IT_DEMO_KEY}}" }}
timeout_ms = 30000
"""
    config_path = workdir / "portcullis.toml"
    config_path.write_text(config, encoding="utf-8")

    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    env.update(
        {
            "PORTCULLIS_IT_DEMO_KEY": DEMO_UPSTREAM_KEY,
            "PORTCULLIS_IT_PY_KEY": PY_UPSTREAM_KEY,
            "RUST_BACKTRACE": "1",
            "NO_COLOR": "1",
        }
    )

    # Offline bootstrap of the first admin token, before the server runs.
    res = subprocess.run(
        [str(portcullis_bin), "admin", "token", "create", "--name", "pytest-admin", "--config", str(config_path), "--json"],
        env=env,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if res.returncode != 0:
        pytest.fail(
            f"`portcullis admin token create` exited {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}\n"
            f"config:\n{config}",
            pytrace=False,
        )
    try:
        boot = json.loads(res.stdout)
        admin_token = boot["token"]
    except (json.JSONDecodeError, KeyError) as e:
        pytest.fail(f"admin token create --json printed {res.stdout!r}: {e!r}", pytrace=False)
    assert admin_token.startswith("mwa_"), boot

    proc = procs.start("gateway", [portcullis_bin, "serve", "--config", config_path], env=env, cwd=workdir)

    def ready() -> bool:
        r = httpx.get(f"http://127.0.0.1:{admin_port}/readyz", timeout=1.0)
        return r.status_code == 200 and port_open(listen_port)

    wait_until(ready, "gateway /readyz", procs=[proc])
    return Gateway(
        bin=portcullis_bin,
        workdir=workdir,
        config_path=config_path,
        listen_port=listen_port,
        admin_port=admin_port,
        admin_token=admin_token,
        admin_token_info=boot.get("info", {}),
        env=env,
        proc=proc,
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
