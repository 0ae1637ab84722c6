"""The TypeScript admin SDK (clients/typescript) against the real gateway.

Builds the SDK with its pinned TypeScript compiler (a type error fails here), type-checks
its usage example (clients/typescript/test/example.ts) against the declarations, then runs its
node:test suite (clients/typescript/test/) with the gateway's admin URL and a global admin
token in the environment. The usage and audit tests skip themselves only when the gateway
answers the router's own 404 for those endpoints; this test checks that such a skip is
true, so once the endpoints are served a skip fails the run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import httpx

from conftest import ROOT

SDK = ROOT / "clients" / "typescript"
WORKSPACE = "demo"


def _endpoint_served(gateway, path: str) -> bool:
    r = httpx.get(
        f"{gateway.admin_url}{path}",
        headers={"Authorization": f"Bearer {gateway.admin_token}"},
        timeout=10,
    )
    return not (r.status_code == 404 and r.json().get("error", {}).get("code") == "not_found")


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
    # 13 tests: 11 always run, usage and audit run where the gateway serves them.
    assert count("pass") >= 11 and count("pass") + count("skipped") >= 13, report

    # A skip is allowed only for an endpoint this gateway really does not serve.
    skips = re.findall(r"^\s*ok \d+ - (.*) # SKIP (.*)$", out, re.MULTILINE)
    assert count("skipped") == len(skips), report
    served = {
        "usage": _endpoint_served(gateway, f"/v1/workspaces/{WORKSPACE}/usage"),
        "audit": _endpoint_served(gateway, f"/v1/workspaces/{WORKSPACE}/audit"),
    }
    for name, reason in skips:
        which = "usage" if "/usage" in reason else "audit" if "/audit" in reason else None
        assert which, f"unexpected skip of {name!r}: {reason}"
        assert not served[which], f"{name!r} skipped although the gateway serves /{which}: {reason}"
    for which, is_served in served.items():
        if not is_served:
            print(f"note: GET /v1/workspaces/{{ws}}/{which} not served by this build; the SDK's {which}() test skipped")
