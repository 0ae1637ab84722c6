"""Run the MCP conformance suite's authorization-server scenarios against Portcullis.

    .venv/bin/python tests/conformance/authorization.py --bin PORTCULLIS --node NODE22 \
        --suite node_modules/conformance-authorization/dist/index.js --out DIR [--deny] [--keep]

`@modelcontextprotocol/conformance` 0.2.0-alpha.12 has an `authorization` command that
tests an OAuth authorization server (0.1.16, npm `latest`, has none: its `auth/*`
scenarios test OAuth *clients* against a mock server). Its two scenarios:

  authorization-server-metadata-endpoint  GET <issuer>/.well-known/oauth-authorization-server
  authorization-code-grant                authorize (code + PKCE S256 + state + resource) in a
                                          browser, then the token request, with a client id
                                          registered beforehand (--client-id)

This script starts `portcullis serve` with `[oauth] enabled = true` (SQLite in a
temporary directory, one workspace `conf` in front of `portcullis demo-upstream`),
makes a member's sign-in link, registers a public client (RFC 7591) with the
suite's callback `http://127.0.0.1:<port>/callback`, runs both scenarios in one
suite process (the second reads the first one's metadata), and plays the person in
the browser: when the suite prints the authorization URL, Debian's chromium (through
Playwright) opens it, signs in with the link, and clicks Allow (or Deny with --deny,
which must make authorization-code-grant fail). The redirect reaches the suite's own
callback server. Results: <out>/<scenario>-<time>/checks.json, <out>/suite.log,
<out>/gateway.log, <out>/summary.txt.

Exit status: 0 when every check of both scenarios is SUCCESS (with --deny: when
authorization-code-grant fails on access_denied and the metadata scenario passes),
3 when not, anything else when the harness failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, name: str, log: Path) -> None:
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"authorization.py: {name} exited:\n{log.read_text()[-4000:]}")
            time.sleep(0.1)
    sys.exit(f"authorization.py: {name} did not listen on {port}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="the portcullis binary")
    ap.add_argument("--node", required=True, help="Node >= 22 (the suite needs it)")
    ap.add_argument("--suite", required=True, help="the suite's dist/index.js (0.2.0-alpha.12)")
    ap.add_argument("--out", required=True, help="results directory")
    ap.add_argument("--deny", action="store_true", help="click Deny instead of Allow (a negative control)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    # Absolute: the children run in the work directory.
    args.bin, args.node, args.suite = (str(Path(x).resolve()) for x in (args.bin, args.node, args.suite))
    chromium = shutil.which("chromium")
    if chromium is None:
        print("authorization.py: Debian's chromium is needed (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="portcullis-conformance-as."))
    procs: list[subprocess.Popen] = []

    def start(name: str, argv: list[str], **kw) -> tuple[subprocess.Popen, Path]:
        log = work / f"{name}.log"
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                             start_new_session=True, **kw)
        procs.append(p)
        return p, log

    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
        env["NO_COLOR"] = "1"
        up_port, gw_port, admin_port, cb_port = free_port(), free_port(), free_port(), free_port()
        key = os.urandom(12).hex()
        up, up_log = start("demo-upstream", [args.bin, "demo-upstream", "--listen", f"127.0.0.1:{up_port}", "--api-key", key], env=env)
        wait_port(up_port, up, "demo-upstream", up_log)
        issuer = f"http://127.0.0.1:{gw_port}"
        cfg = work / "portcullis.toml"
        cfg.write_text(f"""
[server]
listen = "127.0.0.1:{gw_port}"
admin_listen = "127.0.0.1:{admin_port}"
public_url = "{issuer}"

[store]
path = "{work / 'portcullis.db'}"

[oauth]
enabled = true

[[workspaces]]
slug = "conf"
[[workspaces.servers]]
name = "demo"
url = "http://127.0.0.1:{up_port}/mcp"
headers = {{ Authorization = "Bearer {key}" }}
""", encoding="utf-8")
        res = subprocess.run([args.bin, "admin", "token", "create", "--config", str(cfg), "--json", "--name", "conformance-as"],
                             env=env, capture_output=True, text=True, check=True)
        admin = {"authorization": "Bearer " + json.loads(res.stdout)["token"]}
        gw, gw_log = start("gateway", [args.bin, "serve", "--config", str(cfg)], env={**env, "PORTCULLIS_LOG": "info"}, cwd=work)
        wait_port(gw_port, gw, "gateway", gw_log)
        wait_port(admin_port, gw, "gateway", gw_log)

        r = httpx.post(f"http://127.0.0.1:{admin_port}/v1/workspaces/conf/members/invite",
                       json={"email": "conformance@example.com"}, headers=admin)
        r.raise_for_status()
        link = r.json()["url"]
        redirect_uri = f"http://127.0.0.1:{cb_port}/callback"
        r = httpx.post(f"{issuer}/oauth/register", json={
            "client_name": "MCP conformance suite", "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "token_endpoint_auth_method": "none"})
        r.raise_for_status()
        client_id = r.json()["client_id"]

        argv = [args.node, args.suite, "authorization", "--url", issuer, "--client-id", client_id,
                "--resource", f"{issuer}/ws/conf", "--port", str(cb_port), "-o", str(out)]
        print("$ " + " ".join(a if a != client_id else "<client_id>" for a in argv[1:]), file=sys.stderr)
        suite = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 cwd=work, start_new_session=True)
        procs.append(suite)
        lines: list[str] = []
        auth_urls: list[str] = []
        got_url = threading.Event()

        def read() -> None:
            assert suite.stdout is not None
            for raw in suite.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                lines.append(line)
                if line.startswith(f"{issuer}/oauth/authorize?"):
                    auth_urls.append(line)
                    got_url.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        browser_notes: dict[str, str] = {}
        if got_url.wait(60):
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                page = browser.new_page()
                resp = page.goto(auth_urls[0])
                browser_notes["signin_status"] = str(resp.status if resp else None)
                page.goto(link)
                page.get_by_test_id("signin-link-continue").click()
                page.wait_for_url(f"{issuer}/oauth/authorize?**")
                browser_notes["consent_client"] = page.get_by_test_id("consent-client").inner_text()
                page.get_by_test_id("consent-deny" if args.deny else "consent-allow").click()
                page.wait_for_url(f"{redirect_uri}?**")
                browser_notes["redirect"] = re.sub(r"code=[^&]+", "code=<code>", page.url)
                browser.close()
        try:
            suite.wait(timeout=120)
        except subprocess.TimeoutExpired:
            suite.kill()
        reader.join(5)
        (out / "suite.log").write_text("\n".join(lines) + "\n", encoding="utf-8")

        results: dict[str, list[dict]] = {}
        for f in sorted(out.glob("*/checks.json")):
            scen = re.sub(r"-\d{4}-\d\d-\d\dT[\d-]+Z$", "", f.parent.name).removeprefix("authorization-server-")
            results[scen] = json.loads(f.read_text())
        rows = []
        for scen in ("authorization-server-metadata-endpoint", "authorization-code-grant"):
            checks = results.get(scen, [])
            n = {s: sum(1 for c in checks if c["status"] == s) for s in ("SUCCESS", "FAILURE", "WARNING", "SKIPPED")}
            verdict = "-" if not checks else ("FAIL" if n["FAILURE"] or n["SKIPPED"] else "pass")
            notes = "; ".join(f"{c['id']}: {c.get('errorMessage') or c['description']}" for c in checks if c["status"] != "SUCCESS")
            rows.append((scen, verdict, f"{n['SUCCESS']}/{len(checks)}", n["WARNING"], notes))
        summary = [f"MCP conformance {json.loads((Path(args.suite).parent.parent / 'package.json').read_text())['version']}"
                   f" authorization-server scenarios against {issuer} ({'Deny' if args.deny else 'Allow'} clicked)"]
        for scen, verdict, ratio, warn, notes in rows:
            summary.append(f"  {scen:42} {verdict:4} {ratio}{f' ({warn}w)' if warn else ''}{'  ' + notes if notes else ''}")
        summary.append(f"  browser: {json.dumps(browser_notes)}")
        text = "\n".join(summary)
        print(text)
        (out / "summary.txt").write_text(text + "\n", encoding="utf-8")
        shutil.copy(gw_log, out / "gateway.log")

        verdicts = {r[0]: r[1] for r in rows}
        if args.deny:
            denied = any("access_denied" in r[4] for r in rows if r[0] == "authorization-code-grant")
            ok = verdicts["authorization-server-metadata-endpoint"] == "pass" and verdicts["authorization-code-grant"] == "FAIL" and denied
        else:
            ok = all(v == "pass" for v in verdicts.values())
        return 0 if ok else 3
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
