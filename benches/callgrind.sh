#!/usr/bin/env bash
# benches/callgrind.sh: instructions per proxied request of the release
# gateway, counted by valgrind's callgrind (stable on a noisy machine, unlike
# wall-clock time). Used for before/after comparisons of hot-path changes.
#
# Starts the demo upstream natively and the gateway under
# `valgrind --tool=callgrind --instr-atstart=no`, warms up, switches
# collection on for a fixed wrk run (tools/call `echo` with a real token,
# limiter on), switches it off, and prints instructions per request and the
# top functions (inclusive) into $WORK/callgrind.txt.
#
# Every answer is checked (benches/lua/checked.lua: 200 with the echoed
# text), and one call with curl before and after the counted run: the script
# exits non-zero, printing no figure, when any answer was wrong or any
# request failed, since the instructions of wrong answers measure nothing.
#
# TARGET=nginx counts nginx instead, configured as load.sh configures it
# but with one worker and `master_process off` (so that valgrind sees the
# process that proxies), on the same upstream with the same wrk script: the
# floor to compare with.
#
# USAGE=off runs the gateway with usage analytics off (`[usage] enabled =
# false`): the difference with a default run is what counting costs.
#
# Usage: benches/callgrind.sh [--help]
# Environment: DURATION=10s  CONNS=4  TARGET=portcullis|nginx  USAGE=on|off
#              WORK=target/bench-callgrind
# Needs valgrind (installed with apt-get when missing), wrk, python3.

set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DURATION=${DURATION:-10s}
CONNS=${CONNS:-4}
WORK=${WORK:-$ROOT/target/bench-callgrind}
trap cleanup EXIT
rm -rf "$WORK" && mkdir -p "$WORK"
need valgrind valgrind
need wrk wrk
need python3 python3
build_release
UP_PORT=$(free_port) PC_PORT=$(free_port) PC_ADMIN=$(free_port)

"$BIN" demo-upstream --listen "127.0.0.1:$UP_PORT" 2>"$WORK/upstream.log" &
PIDS+=($!)
wait_port "127.0.0.1:$UP_PORT" || die "demo upstream did not start"
if [ "${TARGET:-portcullis}" = nginx ]; then
    need nginx nginx-light
    mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
    sed -e "s#@WORK@#$WORK#g" -e "s#@UP@#$UP_PORT#g" -e "s#@PORT@#$PC_PORT#g" \
        "$ROOT/benches/nginx-callgrind.conf" >"$WORK/nginx.conf"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out" \
        nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" 2>"$WORK/gateway.log" &
    GW=$!
    PIDS+=("$GW")
    wait_port "127.0.0.1:$PC_PORT" 120 || die "nginx did not start under valgrind"
    # nginx passes the Authorization header on; the demo upstream ignores it.
    export TOKEN=unused
    URL="http://127.0.0.1:$PC_PORT/mcp"
else
    gateway_config "$WORK/gw.toml" "$PC_PORT" "$PC_ADMIN" "$WORK/gw.db" "http://127.0.0.1:$UP_PORT/mcp"
    if [ "${USAGE:-on}" = off ]; then
        printf '\n[usage]\nenabled = false\n' >>"$WORK/gw.toml"
    fi
    admin=$("$BIN" admin token create --name cg --config "$WORK/gw.toml" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    PORTCULLIS_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out" \
        "$BIN" serve --config "$WORK/gw.toml" 2>"$WORK/gateway.log" &
    GW=$!
    PIDS+=("$GW")
    wait_port "127.0.0.1:$PC_PORT" 120 || die "gateway did not start under valgrind"
    tok=$(PORTCULLIS_ADMIN_URL="http://127.0.0.1:$PC_ADMIN" PORTCULLIS_ADMIN_TOKEN=$admin \
        "$BIN" workspace token create bench --name cg --requests-per-minute 4000000000 --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    export TOKEN=$tok
    URL="http://127.0.0.1:$PC_PORT/ws/bench"
fi
# check_answer: one call must be answered with the echoed text.
check_answer() {
    local answer
    answer=$(curl -s --max-time 30 "$URL" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2025-06-18' \
        -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}') || true
    [[ "$answer" == *'"text":"x"'* ]] || die "$1: wrong answer to tools/call: ${answer:0:300}"
}
check_answer "before the run"
wrk -t1 -c"$CONNS" -d3s -s "$ROOT/benches/lua/legit.lua" "$URL" >/dev/null
callgrind_control -i on "$GW" >/dev/null
out=$(wrk -t1 -c"$CONNS" -d"$DURATION" -s "$ROOT/benches/lua/checked.lua" "$URL")
callgrind_control -i off "$GW" >/dev/null
read -r _ rps _ _ errs non2xx wrong <<<"$(grep '^RESULT' <<<"$out")"
reqs=$(grep -oE '^ +[0-9]+ requests in' <<<"$out" | awk '{print $1}')
check_answer "after the run"
[ "${reqs:-0}" -gt 0 ] || die "no request completed: $out"
if [ "$errs" != 0 ] || [ "$non2xx" != 0 ] || [ "$wrong" != 0 ]; then
    die "wrong answers during the counted run (socket errors $errs, non-2xx $non2xx, wrong answers $wrong of $reqs): no figure"
fi
kill "$GW"
wait "$GW" 2>/dev/null || true
callgrind_annotate --inclusive=yes "$WORK/callgrind.out" >"$WORK/callgrind.txt" 2>/dev/null || true
ir=$(callgrind_annotate "$WORK/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n {gsub(",", "", $1); print $1; n = 1}')
echo "requests: $reqs (errors $errs, non-2xx $non2xx); instructions: $ir; per request: $((ir / reqs))"
