#!/usr/bin/env bash
# benches/soak.sh: a long run of mixed traffic against the release gateway
# while its upstream is killed and restarted (issue 11, "Soak"); not in CI.
#
# The gateway (SQLite store, workspace `soak` -> the demo upstream, and
# workspace `tight`, limited to 1 request per minute) gets, for DURATION
# seconds, WORKERS concurrent clients of each kind (benches/soak.py): JSON
# calls, SSE calls, token-less and malformed-token calls (401), calls over
# the limit (429), malformed bodies and request lines (400), and clients
# that abort mid-body or before the answer. Every KILL_EVERY_S seconds the
# upstream is killed (SIGKILL) and restarted DOWN_S seconds later; a
# 502/503/504 counts as right only for a call that overlapped that window.
# Every SAMPLE_S seconds it samples the gateway's RSS, open file
# descriptors and established connections to the upstream.
#
# It prints the samples and the answer counts as Markdown and exits non-zero
# when an answer was wrong, or when the gateway is not flat: descriptors at
# the end more than FD_SLACK above the first sample, RSS in the last
# quarter of the run more than RSS_SLACK_MB above the second quarter (the
# first is warm-up), or more upstream connections left than
# UPSTREAM_CONNS_MAX.
#
# Usage: benches/soak.sh [--help]
# Environment: DURATION=1800 (s)  SAMPLE_S=10  KILL_EVERY_S=60  DOWN_S=2
#              WORKERS=2  FD_SLACK=20  RSS_SLACK_MB=32  UPSTREAM_CONNS_MAX=32
#              SMOKE=1 (DURATION=30, SAMPLE_S=2, KILL_EVERY_S=8)
#              WORK=target/bench-soak
# Needs curl, python3 and the release build (built here).

set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${SMOKE:-0}" = 1 ]; then
    export DURATION=${DURATION:-30} SAMPLE_S=${SAMPLE_S:-2} KILL_EVERY_S=${KILL_EVERY_S:-8}
fi
export DURATION=${DURATION:-1800} SAMPLE_S=${SAMPLE_S:-10} KILL_EVERY_S=${KILL_EVERY_S:-60}
export DOWN_S=${DOWN_S:-2} WORKERS=${WORKERS:-2}
FD_SLACK=${FD_SLACK:-20}
RSS_SLACK_MB=${RSS_SLACK_MB:-32}
UPSTREAM_CONNS_MAX=${UPSTREAM_CONNS_MAX:-32}
WORK=${WORK:-$ROOT/target/bench-soak}
SEED=$ROOT/target/$PROFILE/examples/seed_tokens

trap cleanup EXIT
rm -rf "$WORK" && mkdir -p "$WORK"
need curl curl
need python3 python3
build_release
(cd "$ROOT" && cargo build $PROFILE_FLAG --quiet --example seed_tokens) || die "cannot build examples/seed_tokens"
UP_PORT=$(free_port) PC_PORT=$(free_port) PC_ADMIN=$(free_port)
UP_URL="http://127.0.0.1:$UP_PORT/mcp"

db=$WORK/soak.db
"$SEED" "$db" 1 soak "$db.tokens" 2>/dev/null
"$SEED" "$db" 1 tight "$db.tight" 2>/dev/null
gateway_config "$WORK/gw.toml" "$PC_PORT" "$PC_ADMIN" "$db" "$UP_URL"
sed -i -e 's/^slug = "bench"/slug = "soak"/' -e 's/^requests_per_minute = 120/requests_per_minute = 4000000000/' "$WORK/gw.toml"
add_tight_workspace "$WORK/gw.toml" "$UP_URL"
PORTCULLIS_LOG=warn "$BIN" serve --config "$WORK/gw.toml" 2>"$WORK/gateway.log" &
GW=$!
PIDS+=("$GW")
wait_port "127.0.0.1:$PC_PORT" || die "gateway did not start"

log "soak: ${DURATION} s, upstream killed every ${KILL_EVERY_S} s for ${DOWN_S} s, samples every ${SAMPLE_S} s"
rc=0
out=$(TOKEN=$(cat "$db.tokens") TIGHT=$(cat "$db.tight") python3 "$ROOT/benches/soak.py" "$PC_PORT" "$GW" "$UP_PORT" \
    -- "$BIN" demo-upstream --listen "127.0.0.1:$UP_PORT") || rc=$?
[ -n "$out" ] || die "soak driver failed (exit $rc)"
kill -0 "$GW" 2>/dev/null || die "the gateway died during the soak"
echo "$out" >"$WORK/soak.json"

FD_SLACK=$FD_SLACK RSS_SLACK_MB=$RSS_SLACK_MB UPSTREAM_CONNS_MAX=$UPSTREAM_CONNS_MAX python3 - "$out" <<'PY'
import json, os, statistics, sys
r = json.loads(sys.argv[1])
s = r["samples"]
print(f"### Soak: {r['duration_s']:.0f} s, upstream restarted {r['upstream_restarts']} times\n")
print("| t s | RSS MiB | open fds | upstream conns |\n|---:|---:|---:|---:|")
step = max(1, len(s) // 40)
for x in s[::step] + ([s[-1]] if (len(s) - 1) % step else []):
    print(f"| {x['t']} | {x['rss_kb'] / 1024:.1f} | {x['fds']} | {x['upstream_conns']} |")
print("\n| kind:outcome | count |\n|---|---:|")
for k in sorted(r["counts"]):
    print(f"| {k} | {r['counts'][k]} |")
failures = []
if r["wrong"]:
    failures.append(f"{r['wrong']} wrong answers, first: " + "; ".join(r["wrong_samples"][:5]))
if not any(k.startswith("json:ok") for k in r["counts"]) or not any(k.startswith("sse:ok") for k in r["counts"]):
    failures.append("no json or no sse call succeeded")
if s[-1]["fds"] > s[0]["fds"] + int(os.environ["FD_SLACK"]):
    failures.append(f"open fds {s[0]['fds']} -> {s[-1]['fds']} (slack {os.environ['FD_SLACK']})")
q = max(1, len(s) // 4)
second = statistics.median(x["rss_kb"] for x in s[q:2 * q] or s[:1]) / 1024
last = statistics.median(x["rss_kb"] for x in s[-q:]) / 1024
if last > second + float(os.environ["RSS_SLACK_MB"]):
    failures.append(f"RSS median {second:.1f} MiB (second quarter) -> {last:.1f} MiB (last quarter)")
if s[-1]["upstream_conns"] > int(os.environ["UPSTREAM_CONNS_MAX"]):
    failures.append(f"{s[-1]['upstream_conns']} upstream connections left open")
print(f"\nRSS median second quarter {second:.1f} MiB, last quarter {last:.1f} MiB; "
      f"fds first {s[0]['fds']}, last {s[-1]['fds']}; upstream conns last {s[-1]['upstream_conns']}.")
if failures:
    print("\nFAILED:\n" + "\n".join(f"- {f}" for f in failures))
    sys.exit(1)
print("\nNo wrong answers; descriptors, memory and upstream connections flat.")
PY
