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
#            legitimate client (wrk c=1) without and during each flood; during
#            the unknown-token flood, COLD_CALLS legitimate tokens that are in
#            the store but not yet in the index must each get 200 (issue 17)
#   preauth  pre-auth resource bounds (issue 11, benches/preauth.py):
#            PREAUTH_CONNS connections each send a head announcing a 4 MiB
#            body, then idle, while a legitimate client calls on the side:
#            without a token (401 each, at once, RSS within MAX_GROWTH_MB of
#            idle), with a valid token over its limit (429 each, the same
#            bounds), and with a valid token sending its body slowly (RSS
#            grows only with the bytes received)
#
# Every part checks its answers; the script exits non-zero, after printing
# its tables, when a bound is broken or an answer is wrong (the reasons are
# listed under "FAILED").
#
# Usage: benches/scale.sh [--help] [PART...]   (default: tokens cold conns flood preauth)
# Environment:
#   SMOKE=1  a short run (~30 s) of flood and preauth with small counts, for
#            the test suite; explicit PARTs and variables still win
#   TOKENS=100000  COLD_TOKENS=1000000
#   CONNS=10000  STREAMS=1000  HOLD=60  PING_S=5
#   FLOOD_DURATION=10s  FLOOD_CONNS=32  MISS_BUDGET=2000 (store reads/s)
#   COLD_CALLS=5
#   PREAUTH_CONNS=1000  PREAUTH_HOLD=3  ANSWER_MS=2000  MAX_GROWTH_MB=16
#   SLOW_BYTES=16384  PER_CONN_KB=16  HARD_CAP_MB=1024 (see benches/preauth.py)
#   WORK=target/bench-scale
# Needs wrk, curl, python3, and a file-descriptor limit above CONNS*2 (the
# script raises `ulimit -n`; run as root or with a high hard limit).

set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
    PARTS=${*:-flood preauth}
    FLOOD_DURATION=${FLOOD_DURATION:-3s}
    PREAUTH_CONNS=${PREAUTH_CONNS:-200}
    PREAUTH_HOLD=${PREAUTH_HOLD:-2}
else
    PARTS=${*:-tokens cold conns flood preauth}
fi
PREAUTH_CONNS=${PREAUTH_CONNS:-1000}
PREAUTH_HOLD=${PREAUTH_HOLD:-3}
COLD_CALLS=${COLD_CALLS:-5}
FAILURES=()
fail() {
    log "FAILED: $*"
    FAILURES+=("$*")
}
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
SEED=$ROOT/target/$PROFILE/examples/seed_tokens

trap cleanup EXIT
mkdir -p "$WORK"
need wrk wrk
need curl curl
need python3 python3
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
build_release
UP_PORT=$(free_port) PC_PORT=$(free_port) PC_ADMIN=$(free_port)
(cd "$ROOT" && cargo build $PROFILE_FLAG --quiet --example seed_tokens) || die "cannot build examples/seed_tokens"

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
    # Reuse a seeded store only if it holds exactly COLD_TOKENS tokens.
    [ -f "$db" ] && [ "$(sqlite_count "$db")" = "$COLD_TOKENS" ] || seed "$db" "$COLD_TOKENS" 10
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
        [ "$st" = 200 ] || fail "cold start: first request with a stored token answered $st"
        echo "| $n | $(du -m "$d" | cut -f1) MiB | $START_MS ms | $((rss0 / 1024)) MiB | ${ms} µs | $st | $((rss1 / 1024)) MiB | $(metric portcullis_index_entries) |"
        stop_gateway
    done
    echo
}

# sqlite_count DB: the tokens the store really holds (read from the file, not
# assumed from the seed's arguments).
sqlite_count() {
    python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM tokens").fetchone()[0])' "$1"
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

# legit_run DURATION -> "rps p50us p99us errs non2xx" (also kept in
# $WORK/legit.txt, for a run in the background)
legit_run() {
    TOKEN=$LEGIT wrk -t1 -c1 -d"$1" -s "$LUA/legit.lua" "$URL" | awk '/^RESULT/ {print $2, $3, $4, $5, $6}' | tee "$WORK/legit.txt"
}

part_flood() {
    local db=$WORK/flood.db
    # The first token is the warm legitimate client's; the next COLD_CALLS
    # stay out of the index until they are used during the flood.
    seed "$db" 1000 $((COLD_CALLS + 1))
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
        legit_run "$FLOOD_DURATION" >/dev/null &
        local lpid=$! cold_ok=0 cold_bad=""
        if [ "$mode" = unknown ]; then
            # Cold legitimate tokens during the flood: each must be served.
            local tok st
            while read -r tok; do
                st=$(call "$tok")
                if [ "$st" = 200 ]; then cold_ok=$((cold_ok + 1)); else cold_bad+=" $st"; fi
            done < <(sed -n "2,$((COLD_CALLS + 1))p" "$db.tokens")
            [ -z "$cold_bad" ] || fail "flood $mode: cold legitimate tokens answered:$cold_bad (want 200 each)"
            COLD_RESULT="$cold_ok of $COLD_CALLS"
        fi
        wait "$lpid" || true
        lout=$(cat "$WORK/legit.txt")
        wait "$fout" || true
        secs=$(awk "BEGIN{print ($(date +%s%N) - $t0) / 1e9}")
        r1=$(metric portcullis_store_reads_total)
        b1=$(metric portcullis_store_miss_budget_exhausted_total)
        read -r rps p50 p99 e n <<<"$lout"
        [ "${e:-1}" = 0 ] && [ "${n:-1}" = 0 ] || fail "flood $mode: the warm legitimate client saw errors (socket ${e:-?}, non-2xx ${n:-?})"
        local frps
        frps=$(awk '/Requests\/sec/ {printf "%d", $2}' "$WORK/flood-$mode.txt")
        echo "| $mode | $frps | $(awk "BEGIN{printf \"%d\", ($r1 - $r0) / $secs}") | $(awk "BEGIN{printf \"%d\", ($b1 - $b0) / $secs}") | ${rps%.*} | $(awk "BEGIN{printf \"%.3f\", $p50/1000}") | $(awk "BEGIN{printf \"%.3f\", $p99/1000}") | $((e + n)) |"
    done
    echo
    echo "Cold legitimate tokens (in the store, not in the index) used during the unknown-token flood: ${COLD_RESULT:-?} answered 200."
    echo
    echo "Auth failures by reason after the floods:"
    echo
    curl -s "http://127.0.0.1:$PC_ADMIN/metrics" | grep '^portcullis_auth_failures_total' | sed 's/^/    /'
    echo
    stop_gateway
}

# The pre-auth bounds: a gateway with the default body limit (4 MiB, so a
# head announcing 4 MiB is one the fast path takes) and body timeout (30 s,
# far beyond "at once"); workspace `bench` for the legitimate client and the
# slow bodies, workspace `tight` (1 request per minute) for the 429 case.
part_preauth() {
    local db=$WORK/preauth.db
    seed "$db" 2 2
    "$SEED" "$db" 1 tight "$db.tight" 1 2>/dev/null
    gateway_config "$WORK/gw.toml" $PC_PORT $PC_ADMIN "$db" "$UP_URL"
    sed -i 's/^requests_per_minute = 120/requests_per_minute = 4000000000/' "$WORK/gw.toml"
    add_tight_workspace "$WORK/gw.toml" "$UP_URL"
    PORTCULLIS_LOG=warn "$BIN" serve --config "$WORK/gw.toml" 2>>"$WORK/gateway.log" &
    GW=$!
    PIDS+=("$GW")
    wait_port "127.0.0.1:$PC_PORT" || die "gateway did not start"
    local legit slow tight
    legit=$(sed -n 1p "$db.tokens")
    slow=$(sed -n 2p "$db.tokens")
    tight=$(cat "$db.tight")
    [ "$(call "$legit")" = 200 ] || die "gateway does not answer"
    # Use up the tight token's one request.
    local st
    st=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PC_PORT/ws/tight" -H "Authorization: Bearer $tight" \
        -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
        -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}')
    [ "$st" = 200 ] || die "the tight workspace's first call answered $st"
    # Warm up (allocator, pools) so that "idle" is a served gateway's RSS.
    TOKEN=$legit wrk -t1 -c8 -d2s -s "$LUA/legit.lua" "$URL" >/dev/null
    sleep 0.5
    echo "### Pre-auth resource bounds ($PREAUTH_CONNS connections, each announcing a 4 MiB body)"
    echo
    echo "| case | want | answered | statuses | answer p50 ms | answer max ms | body bytes sent | RSS idle | RSS peak | growth MB | bound MB | legit ok | legit errors | verdict |"
    echo "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    local mode tok path out rc
    for mode in unauth limited slowbody; do
        case $mode in
            unauth) tok="" path=/ws/bench ;;
            limited) tok=$tight path=/ws/tight ;;
            slowbody) tok=$slow path=/ws/bench ;;
        esac
        rc=0
        out=$(LEGIT_PATH=/ws/bench python3 "$ROOT/benches/preauth.py" "$mode" 127.0.0.1 "$PC_PORT" "$path" "$GW" "$PREAUTH_CONNS" "$PREAUTH_HOLD" "$legit" $tok) || rc=$?
        [ -n "$out" ] || { fail "preauth $mode: no result (exit $rc)"; continue; }
        python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
want = {"unauth": "401 at once", "limited": "429 at once", "slowbody": "no answer, RSS ~ bytes"}[r["mode"]]
st = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items())) or "none"
verdict = "ok" if not r["failures"] else "FAILED: " + "; ".join(r["failures"])
print(f"| {r['mode']} | {want} | {r['answered']} | {st} | {r['answer_p50_ms']} | {r['answer_max_ms']} | {r['bytes_sent']} | "
      f"{r['rss_idle_kb'] // 1024} MiB | {r['rss_peak_kb'] // 1024} MiB | {r['growth_mb']} | {r['bound_mb']} | {r['legit_ok']} | {r['legit_errors']} | {verdict} |")
PY
        if [ "$rc" != 0 ]; then
            fail "preauth $mode: $(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("; ".join(r["failures"] + r["errors"][:2]))' "$out")"
        fi
        if ! kill -0 "$GW" 2>/dev/null; then
            fail "preauth $mode: the gateway died"
            break
        fi
    done
    echo
    stop_gateway
}

for p in $PARTS; do
    log "part: $p"
    "part_$p"
done
if [ "${#FAILURES[@]}" -gt 0 ]; then
    echo
    echo "FAILED (${#FAILURES[@]}):"
    printf -- '- %s\n' "${FAILURES[@]}"
    exit 1
fi
