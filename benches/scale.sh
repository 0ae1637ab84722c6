#!/usr/bin/env bash
# benches/scale.sh: scale and memory figures of the release gateway (issue 3,
# "Scale and memory"), each printed as a Markdown section on stdout:
#
#   tokens   memory per active token: RSS growth of the gateway while 100 000
#            distinct tokens (seeded straight into the SQLite store with
#            examples/seed_tokens.rs) are each used once through the data
#            plane; index entries and limiter keys from /metrics
#   cold     cold start with 1 000 000 tokens in the store: time until the
#            listeners answer, RSS before and after the first request, index
#            entries after it (the index is filled on demand, not at start)
#   conns    CONNS keep-alive connections (each pings with a tools/call every
#            PING_S s) and STREAMS open SSE streams (the demo `progress` tool)
#            held for HOLD seconds, RSS per connection, errors
#   flood    a flood of malformed tokens, then of random well-formed (valid
#            checksum) unknown tokens: store reads per second (from /metrics)
#            against server.store_miss_reads_per_second, and the latency of a
#            legitimate client (wrk c=1) without and during each flood
#
# Usage: benches/scale.sh [--help] [PART...]   (default: tokens cold conns flood)
# Environment:
#   TOKENS=100000  COLD_TOKENS=1000000
#   CONNS=10000  STREAMS=1000  HOLD=60  PING_S=5
#   FLOOD_DURATION=10s  FLOOD_CONNS=32  MISS_BUDGET=2000 (store reads/s)
#   WORK=target/bench-scale
# Needs wrk, curl, python3, and a file-descriptor limit above CONNS*2 (the
# script raises `ulimit -n`; run as root or with a high hard limit).

set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PARTS=${*:-tokens cold conns flood}
TOKENS=${TOKENS:-100000}
COLD_TOKENS=${COLD_TOKENS:-1000000}
CONNS=${CONNS:-10000}
STREAMS=${STREAMS:-1000}
HOLD=${HOLD:-60}
FLOOD_DURATION=${FLOOD_DURATION:-10s}
FLOOD_CONNS=${FLOOD_CONNS:-32}
MISS_BUDGET=${MISS_BUDGET:-2000}
WORK=${WORK:-$ROOT/target/bench-scale}
LUA=$ROOT/benches/lua
SEED=$ROOT/target/release/examples/seed_tokens

trap cleanup EXIT
mkdir -p "$WORK"
need wrk wrk
need curl curl
need python3 python3
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
build_release
UP_PORT=$(free_port) PC_PORT=$(free_port) PC_ADMIN=$(free_port)
(cd "$ROOT" && cargo build --release --quiet --example seed_tokens) || die "cannot build examples/seed_tokens"

"$BIN" demo-upstream --listen "127.0.0.1:$UP_PORT" 2>"$WORK/upstream.log" &
PIDS+=($!)
wait_port "127.0.0.1:$UP_PORT" || die "demo upstream did not start"
UP_URL="http://127.0.0.1:$UP_PORT/mcp"
URL="http://127.0.0.1:$PC_PORT/ws/bench"

# seed DB COUNT KEEP: a fresh store with COUNT tokens; raw tokens in DB.tokens.
seed() {
    rm -f "$1" "$1-wal" "$1-shm"
    local t0=$SECONDS
    "$SEED" "$1" "$2" bench "$1.tokens" "$3" 2>/dev/null
    log "seeded $2 tokens in $((SECONDS - t0)) s"
}

# start_gateway DB [server lines]: sets GW (pid) and START_MS.
start_gateway() {
    gateway_config "$WORK/gw.toml" $PC_PORT $PC_ADMIN "$1" "$UP_URL" "${2:-}"
    # One high workspace-wide limit: the limiter runs but never trips.
    sed -i 's/^requests_per_minute = 120/requests_per_minute = 4000000000/' "$WORK/gw.toml"
    local t0
    t0=$(date +%s%N)
    PORTCULLIS_LOG=warn "$BIN" serve --config "$WORK/gw.toml" 2>>"$WORK/gateway.log" &
    GW=$!
    PIDS+=("$GW")
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$PC_ADMIN/healthz" >/dev/null 2>&1 && break
        sleep 0.01
    done
    START_MS=$((($(date +%s%N) - t0) / 1000000))
    wait_port "127.0.0.1:$PC_PORT" || die "gateway did not start"
}

stop_gateway() {
    kill "$GW" 2>/dev/null || true
    wait "$GW" 2>/dev/null || true
}

metric() {
    curl -s "http://127.0.0.1:$PC_ADMIN/metrics" | awk -v m="$1" '$1 == m {print $2}'
}

call() { # call TOKEN -> HTTP status
    curl -s -o /dev/null -w '%{http_code}' "$URL" -H "Authorization: Bearer $1" \
        -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
        -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}'
}

part_tokens() {
    local db=$WORK/tokens.db
    seed "$db" "$TOKENS" "$TOKENS"
    # Unlimited miss budget here: every token is a first use (a miss).
    start_gateway "$db" "store_miss_reads_per_second = 0"
    local first
    first=$(head -1 "$db.tokens")
    # Warm up connections, buffers and pools with one token at the same concurrency.
    TOKEN=$first wrk -t2 -c32 -d3s -s "$LUA/legit.lua" "$URL" >/dev/null
    sleep 1
    local before after entries keys out reqs non2xx errs
    before=$(rss_kb "$GW")
    # wrk runs until interrupted; stop it once every token is in the index.
    TOKENS_FILE="$db.tokens" WRK_THREADS=2 wrk -t2 -c32 -d600s -s "$LUA/tokens.lua" "$URL" >"$WORK/tokens-wrk.txt" 2>&1 &
    local wrk_pid=$! t0=$SECONDS
    while [ "$(metric portcullis_index_entries)" -lt "$TOKENS" ] && [ $((SECONDS - t0)) -lt 600 ]; do
        sleep 0.2
    done
    local secs=$((SECONDS - t0))
    kill -INT "$wrk_pid"
    wait "$wrk_pid" || true
    out=$(cat "$WORK/tokens-wrk.txt")
    keys=$(metric portcullis_limiter_keys)
    sleep 1
    after=$(rss_kb "$GW")
    entries=$(metric portcullis_index_entries)
    read -r _ reqs non2xx errs <<<"$(grep '^RESULT' <<<"$out")"
    stop_gateway
    echo "### Memory per active token"
    echo
    echo "| tokens used | requests | non-2xx | socket errors | seconds | RSS before | RSS after | index entries | limiter keys | bytes/token |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    echo "| $TOKENS | $reqs | $non2xx | $errs | $secs | $((before / 1024)) MiB | $((after / 1024)) MiB | $entries | $keys | $(((after - before) * 1024 / TOKENS)) |"
    echo
}

part_cold() {
    local db=$WORK/cold.db empty=$WORK/empty.db
    [ -f "$db" ] && [ "$(wc -l <"$db.tokens")" = 10 ] || seed "$db" "$COLD_TOKENS" 10
    rm -f "$empty"*
    "$SEED" "$empty" 1 bench "$empty.tokens" 2>/dev/null
    echo "### Cold start"
    echo
    echo "| tokens in store | store size | start to /healthz | RSS after start | first request | status | RSS after it | index entries |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
    local d
    for d in "$empty" "$db"; do
        start_gateway "$d"
        sleep 0.5
        local rss0 t0 st ms rss1 n
        rss0=$(rss_kb "$GW")
        t0=$(date +%s%N)
        st=$(call "$(head -1 "$d.tokens")")
        ms=$(((($(date +%s%N) - t0)) / 1000))
        rss1=$(rss_kb "$GW")
        n=$(sqlite_count "$d")
        echo "| $n | $(du -m "$d" | cut -f1) MiB | $START_MS ms | $((rss0 / 1024)) MiB | ${ms} µs | $st | $((rss1 / 1024)) MiB | $(metric portcullis_index_entries) |"
        stop_gateway
    done
    echo
}

sqlite_count() {
    if [ "$1" = "$WORK/empty.db" ]; then echo 1; else echo "$COLD_TOKENS"; fi
}

part_conns() {
    local db=$WORK/conns.db
    seed "$db" 1 1
    start_gateway "$db"
    local tok
    tok=$(head -1 "$db.tokens")
    [ "$(call "$tok")" = 200 ] || die "gateway does not answer"
    local out
    out=$(PING_S=${PING_S:-5} python3 "$ROOT/benches/hold.py" 127.0.0.1 $PC_PORT /ws/bench "$tok" "$CONNS" "$STREAMS" "$HOLD" "$GW")
    stop_gateway
    echo "### Connections and streams held for ${HOLD} s"
    echo
    python3 - "$out" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
print("| keep-alive conns | SSE streams | hold s | requests ok | request errors | connect errors | streams completed | stream errors | RSS before | RSS peak | bytes/connection |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
print(f"| {r['conns']} | {r['streams']} | {r['hold_s']:.0f} | {r['requests_ok']} | {r['request_errors']} | {r['connect_errors']} | "
      f"{r['streams_ok']} | {r['stream_errors']} | {r['rss_before_kb'] // 1024} MiB | {r['rss_peak_kb'] // 1024} MiB | {r['bytes_per_connection']} |")
if r["error_samples"]:
    print("\nFirst errors: " + "; ".join(r["error_samples"]))
EOF
    echo
}

# legit_run DURATION -> "rps p50us p99us errs non2xx"
legit_run() {
    TOKEN=$LEGIT wrk -t1 -c1 -d"$1" -s "$LUA/legit.lua" "$URL" | awk '/^RESULT/ {print $2, $3, $4, $5, $6}'
}

part_flood() {
    local db=$WORK/flood.db
    seed "$db" 1000 1
    start_gateway "$db" "store_miss_reads_per_second = $MISS_BUDGET"
    LEGIT=$(head -1 "$db.tokens")
    [ "$(call "$LEGIT")" = 200 ] || die "gateway does not answer"
    echo "### Token floods (store_miss_reads_per_second = $MISS_BUDGET)"
    echo
    echo "| flood | flood req/s | store reads/s | miss budget refusals/s | legit req/s | legit p50 ms | legit p99 ms | legit errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    read -r rps p50 p99 e n <<<"$(legit_run "$FLOOD_DURATION")"
    echo "| none | 0 | 0 | 0 | ${rps%.*} | $(awk "BEGIN{printf \"%.3f\", $p50/1000}") | $(awk "BEGIN{printf \"%.3f\", $p99/1000}") | $((e + n)) |"
    local mode
    for mode in malformed unknown; do
        local r0 b0 t0 fout lout r1 b1 secs
        r0=$(metric portcullis_store_reads_total)
        b0=$(metric portcullis_store_miss_budget_exhausted_total)
        t0=$(date +%s%N)
        FLOOD=$mode wrk -t1 -c"$FLOOD_CONNS" -d"$FLOOD_DURATION" -s "$LUA/flood.lua" "$URL" >"$WORK/flood-$mode.txt" 2>&1 &
        fout=$!
        sleep 0.5
        lout=$(legit_run "$FLOOD_DURATION")
        wait "$fout" || true
        secs=$(awk "BEGIN{print ($(date +%s%N) - $t0) / 1e9}")
        r1=$(metric portcullis_store_reads_total)
        b1=$(metric portcullis_store_miss_budget_exhausted_total)
        read -r rps p50 p99 e n <<<"$lout"
        local frps
        frps=$(awk '/Requests\/sec/ {printf "%d", $2}' "$WORK/flood-$mode.txt")
        echo "| $mode | $frps | $(awk "BEGIN{printf \"%d\", ($r1 - $r0) / $secs}") | $(awk "BEGIN{printf \"%d\", ($b1 - $b0) / $secs}") | ${rps%.*} | $(awk "BEGIN{printf \"%.3f\", $p50/1000}") | $(awk "BEGIN{printf \"%.3f\", $p99/1000}") | $((e + n)) |"
    done
    echo
    echo "Auth failures by reason after the floods:"
    echo
    curl -s "http://127.0.0.1:$PC_ADMIN/metrics" | grep '^portcullis_auth_failures_total' | sed 's/^/    /'
    echo
    stop_gateway
}

for p in $PARTS; do
    log "part: $p"
    "part_$p"
done
