"""The TypeScript admin SDK (clients/typescript) against the real gateway.

Builds the SDK with its pinned TypeScript compiler (a type error fails here), type-checks
its usage example (clients/typescript/test/example.ts) against the declarations, then runs its
node:test suite (clients/typescript/test/) with the gateway's admin URL and a global admin
token in the environment. Before the run it sends requests with a fresh workspace token and
waits until the usage API counts them, so the SDK's usage() test reads real buckets. No
test may skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import httpx

from conftest import ROOT

SDK = ROOT / "clients" / "typescript"
WORKSPACE = "demo"


def _make_usage(gateway) -> str:
    """Two requests with a new token, counted by the usage API; its id."""
    admin = {"Authorization": f"Bearer {gateway.admin_token}"}
    created = httpx.post(f"{gateway.admin_url}/v1/workspaces/{WORKSPACE}/tokens", headers=admin,
                         json={"name": "sdk-usage", "member_id": "sdk"}, timeout=10).json()
    for i in range(2):
        httpx.post(gateway.ws_url(WORKSPACE), timeout=10,
                   headers={"Authorization": f"Bearer {created['token']}", "Accept": "application/json, text/event-stream"},
                   json={"jsonrpc": "2.0", "id": i, "method": "tools/list", "params": {}})
    token_id = created["info"]["id"]
    # Counts are flushed every `usage.flush_interval_ms` (default 5 s).
    deadline = time.monotonic() + 20
    while True:
        r = httpx.get(f"{gateway.admin_url}/v1/workspaces/{WORKSPACE}/usage?bucket=minute&group_by=token",
                      headers=admin, timeout=10)
        assert r.status_code == 200, r.text
        if sum(b["requests"] for b in r.json()["buckets"] if b["key"] == token_id) >= 2:
            return token_id
        assert time.monotonic() < deadline, f"usage never counted {token_id}: {r.text}"
        time.sleep(0.5)


def test_typescript_sdk_against_the_gateway(gateway):
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node/npm not on PATH: run scripts/test-deps.sh"
    assert (SDK / "node_modules" / "typescript").is_dir(), "SDK dev dependencies missing: run scripts/test-deps.sh"

    # The build, then the README's example and the contract's names against the declarations.
    for script in ("build", "typecheck"):
        r = subprocess.run(
            [npm, "run", "--silent", script], cwd=SDK, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, f"npm run {script} (tsc) failed:\n{r.stdout}\n{r.stderr}"

    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    env.update(
        PORTCULLIS_ADMIN_URL=gateway.admin_url,
        PORTCULLIS_ADMIN_TOKEN=gateway.admin_token,
        PORTCULLIS_TEST_WORKSPACE=WORKSPACE,
        PORTCULLIS_TEST_USED_TOKEN_ID=_make_usage(gateway),
    )
    run = subprocess.run(
        [node, "--test", "--test-reporter=tap", "test/"],
        cwd=SDK,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout
    report = f"node --test exited {run.returncode}:\n{out[-8000:]}\n{run.stderr[-4000:]}"

    def count(name: str) -> int:
        m = re.search(rf"^# {name} (\d+)$", out, re.MULTILINE)
        assert m, f"no '# {name}' line in the TAP output; {report}"
        return int(m.group(1))

    assert run.returncode == 0 and count("fail") == 0, report
    # Every test runs: usage and audit are served (a skip would hide a failure).
    assert count("pass") >= 13 and count("skipped") == 0 and count("todo") == 0, report
