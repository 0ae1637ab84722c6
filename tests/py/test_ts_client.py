"""TypeScript SDK client (tests/js/client.mjs, StreamableHTTPClientTransport) -> gateway."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import TESTS_JS

CLIENT = TESTS_JS / "client.mjs"


def run_ts_client(url: str, token: str | None, *extra: str, timeout_ms: int = 20000) -> tuple[int, dict]:
    node = shutil.which("node")
    assert node, "node not on PATH: run scripts/test-deps.sh"
    env = {k: v for k, v in os.environ.items() if k != "PORTCULLIS_TOKEN"}
    if token is not None:
        env["PORTCULLIS_TOKEN"] = token
    res = subprocess.run(
        [node, str(CLIENT), "--url", url, "--timeout-ms", str(timeout_ms), *extra],
        env=env,
        cwd=TESTS_JS,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_ms / 1000 + 15,
    )
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert lines, f"client.mjs printed nothing (exit {res.returncode}); stderr:\n{res.stderr}"
    try:
        out = json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise AssertionError(f"client.mjs printed no JSON: {res.stdout!r} / {res.stderr!r}") from e
    return res.returncode, out


def test_ts_client_list_and_call_demo(gateway):
    tok = gateway.create_token("demo")
    rc, out = run_ts_client(gateway.ws_url("demo"), tok["token"], "--tool", "echo", "--args", json.dumps({"text": "from ts"}))
    assert rc == 0 and out["ok"], out
    assert {"echo", "add", "progress"} <= set(out["tools"]), out["tools"]
    assert out["result"]["content"] == [{"type": "text", "text": "from ts"}], out["result"]
    assert not out["result"].get("isError", False)
    assert "terminateError" not in out, out["terminateError"]


def test_ts_client_everything_with_progress(gateway):
    tok = gateway.create_token("everything")
    rc, out = run_ts_client(
        gateway.ws_url("everything"),
        tok["token"],
        "--tool",
        "trigger-long-running-operation",
        "--args",
        json.dumps({"duration": 1.6, "steps": 4}),
        "--progress",
    )
    assert rc == 0 and out["ok"], out
    assert "echo" in out["tools"]
    assert out["sessionId"], "server-everything is stateful: the session id must pass through"
    assert "Long running operation completed" in out["result"]["content"][0]["text"]
    assert [p["progress"] for p in out["progress"]] == [1, 2, 3, 4], out["progress"]
    assert out["progress"][0]["ms"] < out["resultMs"] - 800, out
    assert "terminateError" not in out, out.get("terminateError")


@pytest.mark.parametrize("case", ["missing", "garbage", "revoked"])
def test_ts_client_rejected_with_401(gateway, case):
    token = None
    if case == "garbage":
        token = "mwt_" + "A" * 36
    elif case == "revoked":
        tok = gateway.create_token("demo")
        gateway.revoke_token("demo", tok["info"]["id"])
        token = tok["token"]
    rc, out = run_ts_client(gateway.ws_url("demo"), token, "--tool", "echo", "--args", '{"text":"x"}', timeout_ms=15000)
    assert rc == 1 and not out["ok"], out
    assert out["error"]["code"] == 401, out
    assert "Unauthorized" in out["error"]["message"], out
    if token:
        assert token not in out["error"]["message"]
