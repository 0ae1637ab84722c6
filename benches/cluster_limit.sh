#!/usr/bin/env bash
# benches/cluster_limit.sh: what `limits.scope = "cluster"` costs against
# `"instance"`, in one run (issue 15). One private redis-server (no
# persistence), the demo upstream, and two gateways on that Redis
# (`store.backend = "redis"`), identical but for `limits.scope`. One
# workspace token with a limit far above the load (4 000 000 000 a minute),
# so the limiter runs on every request and never refuses. Every client first
# sends `initialize`, then wrk posts the `tools/call` echo, as in
# benches/load.sh. Rounds alternate which scope goes first.
#
# Per scope: medians over rounds of requests/s, p50, p99; Redis script calls
# (EVALSHA + EVAL) and all Redis commands (except INFO) per request, from
# `INFO commandstats` before and after each round on the private Redis (the
# store's own traffic, e.g. audit events, heartbeats and revocation polls,
# is counted too: instance scope shows its share); the ratio cluster/instance
# (of the medians, and the median of the per-round ratios); and, from one
# more cluster round under `redis-cli MONITOR`, the limiter's own script
# calls per request (those on `portcullis:rl:` keys). Then the over-admission figures: `cargo bench --bench
# lease` (see benches/lease.rs), unless LEASE=0.
#
# Wrong answers fail the run (exit 1): a round where the gateway does not
# answer the call with the tool's result before and after, any non-2xx or
# socket error (the limit is never reached), or a cluster round without a
# single script call (the shared limit was never consulted).
#
# Usage: benches/cluster_limit.sh [--help]
# Environment:
#   ROUNDS=5 DURATION=10s CONNS=32   rounds, wrk duration, connections
#   THREADS=$(nproc)                 gateway data-plane threads
#   PROFILE=release|debug            build to run (debug: the test command's smoke)
#   SMOKE=1                          ROUNDS=1 DURATION=2s, LEASE=0
#   LEASE=1                          also run `cargo bench --bench lease`
#   WORK=target/bench-cluster-limit  scratch directory
# Needs: curl, wrk (installed with apt-get when missing), redis-server, python3.
# Output: Markdown on stdout; progress on stderr.

set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${SMOKE:-}" = 1 ]; then
    ROUNDS=${ROUNDS:-1} DURATION=${DURATION:-2s} LEASE=${LEASE:-0}
fi
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-$(nproc)}
LEASE=${LEASE:-1}
WORK=${WORK:-$ROOT/target/bench-cluster-limit}

trap cleanup EXIT
rm -rf "$WORK" && mkdir -p "$WORK/redis"
need curl curl
need wrk wrk
need python3 python3
command -v redis-server >/dev/null || die "redis-server is missing (scripts/test-deps.sh installs it)"
build_release

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK/redis" \
    >"$WORK/redis/redis.log" 2>&1 &
PIDS+=($!)
wait_port "127.0.0.1:$REDIS_PORT" || die "redis-server did not start"
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

UP_PORT=$(free_port)
"$BIN" demo-upstream --listen "127.0.0.1:$UP_PORT" 2>"$WORK/upstream.log" &
PIDS+=($!)
wait_port "127.0.0.1:$UP_PORT" || die "demo upstream did not start"
UP_URL="http://127.0.0.1:$UP_PORT/mcp"

SCOPES=(instance cluster)
declare -A URL AUTH SID
for scope in "${SCOPES[@]}"; do
    data=$(free_port) admin=$(free_port)
    cat >"$WORK/$scope.toml" <<EOF
[server]
listen = "127.0.0.1:$data"
admin_listen = "127.0.0.1:$admin"
public_url = "http://127.0.0.1:$data"

[store]
backend = "redis"
url = "redis://127.0.0.1:$REDIS_PORT/0"

[limits]
requests_per_minute = 120
scope = "$scope"

[[workspaces]]
slug = "bench"

[[workspaces.servers]]
name = "demo"
url = "$UP_URL"
EOF
    admin_token=$("$BIN" admin token create --name "bench-$scope" --config "$WORK/$scope.toml" --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    PORTCULLIS_LOG=${PORTCULLIS_LOG:-warn} TOKIO_WORKER_THREADS=$THREADS \
        "$BIN" serve --config "$WORK/$scope.toml" 2>"$WORK/$scope.log" &
    PIDS+=($!)
    wait_port "127.0.0.1:$data" || die "$scope gateway did not start"
    wait_port "127.0.0.1:$admin" || die "$scope gateway's admin API did not start"
    tok=$(PORTCULLIS_ADMIN_URL="http://127.0.0.1:$admin" PORTCULLIS_ADMIN_TOKEN=$admin_token \
        "$BIN" workspace token create bench --name "load-$scope" --requests-per-minute 4000000000 --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    URL[$scope]="http://127.0.0.1:$data/ws/bench"
    AUTH[$scope]="Bearer $tok"
done

CALL='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}'
check_answer() {
    local s=$1 answer
    answer=$(curl -s --max-time 5 "${URL[$s]}" -H "Authorization: ${AUTH[$s]}" \
        ${SID[$s]:+-H "Mcp-Session-Id: ${SID[$s]}"} -H 'Content-Type: application/json' \
        -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2025-06-18' -d "$CALL")
    [[ "$answer" == *'"text":"hello"'* ]] || {
        log "$s: unexpected answer to tools/call: ${answer:0:300}"
        return 1
    }
}

for s in "${SCOPES[@]}"; do
    SID[$s]=$(mcp_initialize "${URL[$s]}" -H "Authorization: ${AUTH[$s]}")
    check_answer "$s" || die "$s gateway does not answer the call"
    {
        echo 'wrk.method = "POST"'
        echo "wrk.body = '$CALL'"
        echo 'wrk.headers["Content-Type"] = "application/json"'
        echo 'wrk.headers["Accept"] = "application/json, text/event-stream"'
        echo 'wrk.headers["MCP-Protocol-Version"] = "2025-06-18"'
        echo "wrk.headers[\"Authorization\"] = \"${AUTH[$s]}\""
        [ -n "${SID[$s]}" ] && echo "wrk.headers[\"Mcp-Session-Id\"] = \"${SID[$s]}\""
        cat <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.1f %.1f %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, summary.requests))
end
EOF
    } >"$WORK/$s.lua"
done

# calls INFO REGEX: sum of calls= over the commandstats lines matching REGEX.
stats() { rcli INFO commandstats | tr -d '\r'; }
calls() { awk -F'calls=' -v re="$2" '$0 ~ re { split($2, a, ","); n += a[1] } END { print n + 0 }' <<<"$1"; }
SCRIPTS='^cmdstat_eval(sha)?:'
ALL='^cmdstat_([^i]|i[^n]|in[^f])'

SAMPLES=$WORK/samples.tsv
: >"$SAMPLES"
FAIL=0
th=$((CONNS < 2 ? 1 : 2))
for ((r = 1; r <= ROUNDS; r++)); do
    order=("${SCOPES[@]}")
    [ $((r % 2)) = 0 ] && order=(cluster instance)
    for s in "${order[@]}"; do
        check_answer "$s" || { FAIL=1; continue; }
        before=$(stats)
        out=$(wrk -t"$th" -c"$CONNS" -d"$DURATION" -s "$WORK/$s.lua" "${URL[$s]}" 2>&1) || true
        after=$(stats)
        line=$(grep '^RESULT' <<<"$out" || true)
        [ -n "$line" ] || { log "$s: wrk failed: $out"; FAIL=1; continue; }
        read -r _ rps p50 p99 errs non2xx reqs <<<"$line"
        scripts=$(($(calls "$after" "$SCRIPTS") - $(calls "$before" "$SCRIPTS")))
        cmds=$(($(calls "$after" "$ALL") - $(calls "$before" "$ALL")))
        check_answer "$s" || { log "round $r $s: the gateway stopped answering correctly"; FAIL=1; continue; }
        if [ "$errs" != 0 ] || [ "$non2xx" != 0 ]; then
            log "round $r $s: $errs socket errors, $non2xx non-2xx: not a valid round"
            FAIL=1
        fi
        if [ "$s" = cluster ] && [ "$scripts" = 0 ]; then
            log "round $r cluster: no script call: the shared limit was never consulted"
            FAIL=1
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$r" "$rps" "$p50" "$p99" "$scripts" "$cmds" "$reqs" >>"$SAMPLES"
        log "round $r $s: $rps req/s p50 ${p50}us p99 ${p99}us; $scripts script calls, $cmds commands for $reqs requests"
    done
done

# The limiter's own Redis calls: INFO commandstats cannot tell its script
# from the store's (revocation polls, audit and usage writes run during the
# rounds), so one more cluster round runs with `redis-cli MONITOR` capturing
# every command with its keys; calls on `portcullis:rl:` keys are the
# limiter's. (MONITOR slows Redis; this round is not in the throughput table.)
check_answer cluster || FAIL=1
redis-cli -p "$REDIS_PORT" monitor >"$WORK/monitor.log" &
MON=$!
PIDS+=($MON)
sleep 0.5
out=$(wrk -t"$th" -c"$CONNS" -d"$DURATION" -s "$WORK/cluster.lua" "${URL[cluster]}" 2>&1) || true
sleep 0.5
kill "$MON" 2>/dev/null || true
wait "$MON" 2>/dev/null || true
read -r _ _ _ _ errs non2xx mreqs <<<"$(grep '^RESULT' <<<"$out" || echo RESULT 0 0 0 1 1 0)"
[ "$errs" = 0 ] && [ "$non2xx" = 0 ] || { log "monitored round: $errs errors, $non2xx non-2xx"; FAIL=1; }
LIMITER_CALLS=$(tr 'A-Z' 'a-z' <"$WORK/monitor.log" | grep -E '"eval(sha)?"' | grep -c 'portcullis:rl:' || true)
log "monitored cluster round: $LIMITER_CALLS limiter script calls for $mreqs requests"
[ "${LIMITER_CALLS:-0}" -gt 0 ] || { log "monitored round: the limiter never called Redis"; FAIL=1; }
# What the other commands per request are (top 5 over the monitored round).
TOP=$(awk '$3 !~ /lua/ {print tolower($4)}' "$WORK/monitor.log" | sort | uniq -c | sort -rn | head -5 |
    awk -v n="$mreqs" '{printf "%s %.4f/request; ", $2, $1 / (n > 0 ? n : 1)}')

python3 - "$SAMPLES" "$CONNS" "$DURATION" "$ROUNDS" "$LIMITER_CALLS" "$mreqs" "$TOP" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
d = {}
for s, r, rps, p50, p99, scripts, cmds, reqs in rows:
    x = d.setdefault(s, {"rps": [], "p50": [], "p99": [], "scripts": 0, "cmds": 0, "reqs": 0})
    x["rps"].append(float(rps)); x["p50"].append(float(p50) / 1000); x["p99"].append(float(p99) / 1000)
    x["scripts"] += int(scripts); x["cmds"] += int(cmds); x["reqs"] += int(reqs)
print(f"## limits.scope: instance vs cluster (wrk -c{sys.argv[2]}, {sys.argv[3]} x {sys.argv[4]} rounds, medians)\n")
print("| scope | req/s | p50 ms | p99 ms | requests | script calls per request | Redis commands per request |")
print("|---|---:|---:|---:|---:|---:|---:|")
med = {}
for s in ("instance", "cluster"):
    if s not in d:
        continue
    x = d[s]
    m = {k: statistics.median(x[k]) for k in ("rps", "p50", "p99")}
    med[s] = m
    print(f"| {s} | {m['rps']:.0f} | {m['p50']:.3f} | {m['p99']:.3f} | {x['reqs']} | {x['scripts'] / x['reqs']:.6f} | {x['cmds'] / x['reqs']:.6f} |")
if len(med) == 2:
    c, i = med["cluster"], med["instance"]
    ratios = []
    for r in sorted({int(row[1]) for row in rows}):
        pair = {row[0]: float(row[2]) for row in rows if int(row[1]) == r}
        if len(pair) == 2:
            ratios.append(pair["cluster"] / pair["instance"])
    print(f"\ncluster/instance: throughput of the medians **{c['rps'] / i['rps']:.3f}x**; "
          f"median of the per-round ratios **{statistics.median(ratios):.3f}x** "
          f"(rounds: {', '.join(f'{x:.3f}' for x in ratios)}); p99 {c['p99']:.3f} ms vs {i['p99']:.3f} ms")
calls, reqs = int(sys.argv[5] or 0), int(sys.argv[6] or 0)
if reqs:
    print(f"\nThe limiter's own Redis calls (one more cluster round under MONITOR): {calls} script calls for "
          f"{reqs} requests = **{calls / reqs:.6f} per request**. Commands per request in that round (top 5, "
          f"outside scripts): {sys.argv[7]}")
EOF

if [ "$LEASE" = 1 ]; then
    echo
    (cd "$ROOT" && cargo bench --quiet --bench lease) || FAIL=1
fi
[ "$FAIL" = 0 ] || die "wrong answers during the run: the figures above are not valid"
