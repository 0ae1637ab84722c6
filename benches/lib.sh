# Shared helpers for benches/load.sh and benches/scale.sh (sourced, not run).
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# BIN may name another build of the gateway (e.g. to try a bench on a branch).
# PROFILE=debug builds and runs the debug binary: the test command's smoke
# runs, which check bounds and answers, not speed, and reuse its build.
PROFILE="${PROFILE:-release}"
case "$PROFILE" in release) PROFILE_FLAG=--release ;; debug) PROFILE_FLAG= ;; *) echo "PROFILE must be release or debug" >&2; exit 2 ;; esac
BIN="${BIN:-$ROOT/target/$PROFILE/portcullis}"
PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
}

# Installs Debian packages whose command is missing: need CMD PACKAGE.
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (for $1)"
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null || die "cannot install $2"
}

build_release() {
    log "cargo build $PROFILE_FLAG"
    (cd "$ROOT" && cargo build $PROFILE_FLAG --quiet) || die "$PROFILE build failed"
}

# wait_port HOST:PORT [seconds]
wait_port() {
    local hp=$1 t=${2:-30} i
    for ((i = 0; i < t * 10; i++)); do
        if (exec 3<>"/dev/tcp/${hp%:*}/${hp#*:}") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# An SQLite-backed gateway config for workspace `bench` -> UPSTREAM_URL.
# gateway_config FILE DATA_PORT ADMIN_PORT DB UPSTREAM_URL [extra server lines]
gateway_config() {
    cat >"$1" <<EOF
[server]
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$3"
public_url = "http://127.0.0.1:$2"
${6:-}

[store]
backend = "sqlite"
path = "$4"

[limits]
requests_per_minute = 120

[[workspaces]]
slug = "bench"

[[workspaces.servers]]
name = "demo"
url = "$5"
EOF
}

# MCP initialize against URL with extra curl args; prints the session id (may be empty).
mcp_initialize() {
    local url=$1
    shift
    local sid
    sid=$(curl -s -D - -o /dev/null "$url" "$@" \
        -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
        -d '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"portcullis-bench","version":"1"}}}' |
        tr -d '\r' | awk -F': ' 'tolower($1)=="mcp-session-id" {print $2}')
    local h=()
    [ -n "$sid" ] && h=(-H "Mcp-Session-Id: $sid")
    curl -s -o /dev/null "$url" "$@" "${h[@]}" -H 'Content-Type: application/json' \
        -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2025-06-18' \
        -d '{"jsonrpc":"2.0","method":"notifications/initialized"}' || true
    printf '%s' "$sid"
}

# Prints a TCP port that is free on 127.0.0.1 right now (other services on a
# shared machine may use fixed ports).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# add_tight_workspace CONFIG UPSTREAM_URL: appends workspace `tight`, limited
# to 1 request per minute, for the 429 cases of scale.sh and soak.sh.
add_tight_workspace() {
    cat >>"$1" <<EOF

[[workspaces]]
slug = "tight"
requests_per_minute = 1

[[workspaces.servers]]
name = "demo"
url = "$2"
EOF
}
