#!/usr/bin/env bash
# benches/load.sh: throughput and latency of one MCP `tools/call` (the demo
# upstream's `echo`, which answers at once) on one machine, in one run:
#
#   direct      the demo upstream itself (`portcullis demo-upstream`)
#   nginx       nginx-light as a plain reverse proxy: keep-alive to the
#               upstream, proxy_buffering off, worker_processes = THREADS
#   mcp-proxy   mcp-proxy 0.6.0 from crates.io, bearer-token auth on, one HTTP
#               backend (installed into target/bench-tools; skipped with a
#               message if it cannot be built or started)
#   portcullis  `cargo build --release`, SQLite store, a workspace token made
#               through the admin API (CLI) with a per-token limit far above
#               the load, so authentication and the limiter run on every request
#   portcullis-nousage  the same with usage analytics off (`[usage] enabled =
#               false`), its own ports and store: the cost of counting every
#               request (the row "portcullis/portcullis-nousage")
#   portcullis-noaudit  the same with the audit trail's tool_call events off
#               (`[audit] tool_calls = false`; not in the default list): the
#               cost of a row per tool call (every request here is one)
#
# Every client first sends `initialize` (and `notifications/initialized`),
# then wrk posts the JSON-RPC `tools/call` with Content-Type, Accept,
# MCP-Protocol-Version and Mcp-Session-Id, as a real client does. Targets are
# interleaved, each round starting with the next one (A B C D, B C D A,
# ...), for ROUNDS rounds at each concurrency; the
# table reports, per target, the medians over rounds of requests/s, p50 and
# p99, the proxy's CPU time per request (user + system, of the proxy process
# and its children, e.g. nginx's workers; the most stable figure on a shared
# machine, since it does not depend on how much CPU was left to the proxy),
# and the ratios Portcullis/nginx and Portcullis/mcp-proxy.
# Before and after every round the target must answer the same call with the
# tool's result; a round where it does not is discarded (column
# "discarded"), so a proxy that answers fast with errors is not measured. A
# target that fails the check before a round is restarted first (column
# "restarts"): mcp-proxy 0.6.0 does not recover once a backend connection
# fails, e.g. when the upstream closes idle keep-alive connections.
# Per-request logging is off everywhere (nginx access_log off,
# PORTCULLIS_LOG=warn, mcp-proxy log_level=warn).
#
# Usage: benches/load.sh [--help]
# Environment:
#   ROUNDS=5            rounds per concurrency
#   DURATION=10s        wrk duration per measurement
#   CONNS="1 32"        concurrencies
#   TARGETS="direct nginx mcp-proxy portcullis portcullis-nousage"
#   BASE_BIN=path       also measure this Portcullis binary as target
#                       `portcullis-base` (same config, its own ports and
#                       store), interleaved with the others: before/after
#                       comparisons within one run
#   THREADS=$(nproc)    Portcullis runtime threads = nginx workers = mcp-proxy's
#   JSON=path           also write the summary (and every sample) as JSON
#   WORK=target/bench-load   scratch directory (configs, logs, store)
#   PERF=1              record `perf record -g` of the gateway during the last
#                       portcullis c=32 run into $WORK/perf.data
# Needs: curl, wrk, nginx (nginx-light), python3 (for the table); installs
# wrk and nginx-light with apt-get and mcp-proxy with cargo install when missing.
# Output: the Markdown table on stdout; progress on stderr.

set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-1 32}
TARGETS=${TARGETS:-direct nginx mcp-proxy portcullis portcullis-nousage${BASE_BIN:+ portcullis-base}}
THREADS=${THREADS:-$(nproc)}
WORK=${WORK:-$ROOT/target/bench-load}
TOOLS=$ROOT/target/bench-tools
MCP_PROXY_VERSION=0.6.0

trap cleanup EXIT
rm -rf "$WORK" && mkdir -p "$WORK"
need curl curl
need wrk wrk
need nginx nginx-light
need python3 python3
build_release
UP_PORT=$(free_port) NGINX_PORT=$(free_port) MCPP_PORT=$(free_port) PC_PORT=$(free_port) PC_ADMIN=$(free_port)
PB_PORT=$(free_port) PB_ADMIN=$(free_port) PN_PORT=$(free_port) PN_ADMIN=$(free_port)
PA_PORT=$(free_port) PA_ADMIN=$(free_port)

# --- upstream -------------------------------------------------------------
"$BIN" demo-upstream --listen "127.0.0.1:$UP_PORT" 2>"$WORK/upstream.log" &
PIDS+=($!)
wait_port "127.0.0.1:$UP_PORT" || die "demo upstream did not start"
UP_URL="http://127.0.0.1:$UP_PORT/mcp"

declare -A URL HDRS TOOL
URL[direct]=$UP_URL
TOOL[direct]=echo

# --- nginx ----------------------------------------------------------------
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes $THREADS;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream mcp { server 127.0.0.1:$UP_PORT; keepalive 256; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        keepalive_requests 100000;
        location = /mcp {
            proxy_pass http://mcp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
EOF
URL[nginx]="http://127.0.0.1:$NGINX_PORT/mcp"
TOOL[nginx]=echo

# --- mcp-proxy ------------------------------------------------------------
MCPP_BIN=$TOOLS/bin/mcp-proxy
MCPP_TOKEN=bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
if [[ " $TARGETS " == *" mcp-proxy "* ]] && [ ! -x "$MCPP_BIN" ]; then
    log "cargo install mcp-proxy --version $MCP_PROXY_VERSION --locked (once; several minutes)"
    mkdir -p "$TOOLS"
    cargo install mcp-proxy --version "$MCP_PROXY_VERSION" --locked --root "$TOOLS" >"$TOOLS/install.log" 2>&1 ||
        log "mcp-proxy could not be built (see $TOOLS/install.log); it will be skipped"
fi
cat >"$WORK/mcp-proxy.toml" <<EOF
[proxy]
name = "bench"
[proxy.listen]
host = "127.0.0.1"
port = $MCPP_PORT
[auth]
type = "bearer"
tokens = ["$MCPP_TOKEN"]
[[backends]]
name = "demo"
transport = "http"
url = "$UP_URL"
[observability]
log_level = "warn"
EOF
URL[mcp-proxy]="http://127.0.0.1:$MCPP_PORT/"
HDRS[mcp-proxy]="Bearer $MCPP_TOKEN"
TOOL[mcp-proxy]=demo/echo

# --- portcullis -----------------------------------------------------------
gateway_config "$WORK/portcullis.toml" $PC_PORT $PC_ADMIN "$WORK/portcullis.db" "$UP_URL"
URL[portcullis]="http://127.0.0.1:$PC_PORT/ws/bench"
TOOL[portcullis]=echo
gateway_config "$WORK/portcullis-nousage.toml" $PN_PORT $PN_ADMIN "$WORK/portcullis-nousage.db" "$UP_URL"
printf '\n[usage]\nenabled = false\n' >>"$WORK/portcullis-nousage.toml"
URL[portcullis-nousage]="http://127.0.0.1:$PN_PORT/ws/bench"
TOOL[portcullis-nousage]=echo
gateway_config "$WORK/portcullis-noaudit.toml" $PA_PORT $PA_ADMIN "$WORK/portcullis-noaudit.db" "$UP_URL"
printf '\n[audit]\ntool_calls = false\n' >>"$WORK/portcullis-noaudit.toml"
URL[portcullis-noaudit]="http://127.0.0.1:$PA_PORT/ws/bench"
TOOL[portcullis-noaudit]=echo
if [ -n "${BASE_BIN:-}" ]; then
    gateway_config "$WORK/portcullis-base.toml" $PB_PORT $PB_ADMIN "$WORK/portcullis-base.db" "$UP_URL"
    URL[portcullis-base]="http://127.0.0.1:$PB_PORT/ws/bench"
    TOOL[portcullis-base]=echo
fi

# start_portcullis TARGET BINARY DATA_PORT ADMIN_PORT
start_portcullis() {
    local t=$1 bin=$2 port=$3 admin_port=$4 admin tok
    admin=$("$bin" admin token create --name bench-admin --config "$WORK/$t.toml" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    PORTCULLIS_LOG=${PORTCULLIS_LOG:-warn} TOKIO_WORKER_THREADS=$THREADS "$bin" serve --config "$WORK/$t.toml" 2>"$WORK/$t.log" &
    PIDS+=($!)
    TPID=$!
    wait_port "127.0.0.1:$port" || die "$t did not start"
    tok=$(PORTCULLIS_ADMIN_URL="http://127.0.0.1:$admin_port" PORTCULLIS_ADMIN_TOKEN=$admin \
        "$bin" workspace token create bench --name load --requests-per-minute 4000000000 --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    HDRS[$t]="Bearer $tok"
}

start_target() {
    case $1 in
    direct) ;;
    nginx)
        nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' 2>>"$WORK/nginx/logs/stderr.log" &
        PIDS+=($!)
        TPID=$!
        wait_port "127.0.0.1:$NGINX_PORT" || die "nginx did not start"
        ;;
    mcp-proxy)
        [ -x "$MCPP_BIN" ] || return 1
        TOKIO_WORKER_THREADS=$THREADS "$MCPP_BIN" --config "$WORK/mcp-proxy.toml" >"$WORK/mcp-proxy.log" 2>&1 &
        PIDS+=($!)
        TPID=$!
        wait_port "127.0.0.1:$MCPP_PORT" 60 || {
            log "mcp-proxy did not start (see $WORK/mcp-proxy.log); skipping it"
            return 1
        }
        ;;
    portcullis) start_portcullis portcullis "$BIN" "$PC_PORT" "$PC_ADMIN" ;;
    portcullis-base) start_portcullis portcullis-base "$BASE_BIN" "$PB_PORT" "$PB_ADMIN" ;;
    portcullis-nousage) start_portcullis portcullis-nousage "$BIN" "$PN_PORT" "$PN_ADMIN" ;;
    portcullis-noaudit) start_portcullis portcullis-noaudit "$BIN" "$PA_PORT" "$PA_ADMIN" ;;
    esac
    return 0
}

# check_answer TARGET: the target answers the benchmark's tools/call with the
# tool's result (not an error with status 200, which wrk would count as a
# success: mcp-proxy 0.6.0, once its backend connection has failed, answers
# every call that way for good).
declare -A SID
check_answer() {
    local t=$1 auth=() answer
    [ -n "${HDRS[$t]:-}" ] && auth=(-H "Authorization: ${HDRS[$t]}")
    answer=$(curl -s --max-time 5 "${URL[$t]}" "${auth[@]}" ${SID[$t]:+-H "Mcp-Session-Id: ${SID[$t]}"} \
        -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
        -H 'MCP-Protocol-Version: 2025-06-18' \
        -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"${TOOL[$t]}\",\"arguments\":{\"text\":\"hello\"}}}")
    if [[ "$answer" != *'"text":"hello"'* ]]; then
        log "$t: unexpected answer to tools/call: ${answer:0:300}"
        return 1
    fi
}

# Writes the wrk script for target $1 to $WORK/$1.lua.
wrk_script() {
    local t=$1 auth=() sid
    [ -n "${HDRS[$t]:-}" ] && auth=(-H "Authorization: ${HDRS[$t]}")
    sid=$(mcp_initialize "${URL[$t]}" "${auth[@]}")
    SID[$t]=$sid
    check_answer "$t" || return 1
    cat >"$WORK/$t.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"${TOOL[$t]}","arguments":{"text":"hello"}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
EOF
    [ -n "$sid" ] && echo "wrk.headers[\"Mcp-Session-Id\"] = \"$sid\"" >>"$WORK/$t.lua"
    [ -n "${HDRS[$t]:-}" ] && echo "wrk.headers[\"Authorization\"] = \"${HDRS[$t]}\"" >>"$WORK/$t.lua"
    cat >>"$WORK/$t.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.1f %.1f %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, summary.requests))
end
EOF
}

# cpu_ticks PID: user + system clock ticks of PID and its direct children.
cpu_ticks() {
    local p v total=0
    for p in "$1" $(pgrep -P "$1" || true); do
        # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that
        # ends the command name (which may contain spaces).
        v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
HZ=$(getconf CLK_TCK)

# restart_target TARGET: stops the target's process and starts it afresh
# (new session, new token). Not possible for `direct` (nothing to restart).
restart_target() {
    local t=$1
    [ -n "${TPIDS[$t]:-}" ] || return 1
    kill "${TPIDS[$t]}" 2>/dev/null || true
    wait "${TPIDS[$t]}" 2>/dev/null || true
    TPID=""
    start_target "$t" && wrk_script "$t" || return 1
    TPIDS[$t]=${TPID:-}
}

ACTIVE=()
declare -A TPIDS
for t in $TARGETS; do
    TPID=""
    if start_target "$t" && wrk_script "$t"; then
        ACTIVE+=("$t")
        TPIDS[$t]=${TPID:-}
    else
        log "skipping $t"
    fi
done
[ "${#ACTIVE[@]}" -gt 0 ] || die "no target could be started"
log "targets: ${ACTIVE[*]}; rounds: $ROUNDS x $DURATION at c = $CONNS"

SAMPLES=$WORK/samples.tsv
: >"$SAMPLES"
for c in $CONNS; do
    th=$((c < 2 ? 1 : 2))
    for ((r = 1; r <= ROUNDS; r++)); do
        # Each round starts with the next target (A B C, B C A, C A B...):
        # on a busy machine the first of a round fares differently, which
        # must not always favour the same target.
        k=$(((r - 1) % ${#ACTIVE[@]}))
        for t in "${ACTIVE[@]:k}" "${ACTIVE[@]:0:k}"; do
            perf_pid=""
            if [ "${PERF:-}" = 1 ] && [ "$t" = portcullis ] && [ "$r" = "$ROUNDS" ] && [ "$c" = "${CONNS##* }" ]; then
                perf record -g -o "$WORK/perf.data" -p "${TPIDS[$t]}" 2>"$WORK/perf.log" &
                perf_pid=$!
            fi
            # A round counts only if the target answers correctly just
            # before and just after it.
            if ! check_answer "$t"; then
                # Restarted (and counted), so that one failure does not
                # end the target's measurements.
                log "round $r c=$c $t: the target no longer answers correctly; restarting it"
                printf '%s\t%s\t%s\trestart\n' "$t" "$c" "$r" >>"$SAMPLES"
                if ! restart_target "$t" || ! check_answer "$t"; then
                    log "round $r c=$c $t: not measured: restart failed"
                    printf '%s\t%s\t%s\tinvalid\n' "$t" "$c" "$r" >>"$SAMPLES"
                    continue
                fi
            fi
            tpid=${TPIDS[$t]}
            ticks0=$([ -n "$tpid" ] && cpu_ticks "$tpid" || echo "")
            out=$(wrk -t"$th" -c"$c" -d"$DURATION" -s "$WORK/$t.lua" "${URL[$t]}" 2>&1) || true
            ticks1=$([ -n "$tpid" ] && cpu_ticks "$tpid" || echo "")
            [ -n "$perf_pid" ] && { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
            line=$(grep '^RESULT' <<<"$out" || true)
            [ -n "$line" ] || { log "$t c=$c: wrk failed: $out"; continue; }
            read -r _ rps p50 p99 errs non2xx reqs <<<"$line"
            # Proxy CPU microseconds per request ("-" for direct: no proxy).
            cpu=-
            [ -n "$ticks0" ] && [ "$reqs" -gt 0 ] && cpu=$(awk -v d=$((ticks1 - ticks0)) -v hz="$HZ" -v n="$reqs" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
            if ! check_answer "$t"; then
                log "round $r c=$c $t: discarded: the target stopped answering correctly during the round"
                printf '%s\t%s\t%s\tinvalid\n' "$t" "$c" "$r" >>"$SAMPLES"
                continue
            fi
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$c" "$r" "$rps" "$p50" "$p99" "$errs" "$non2xx" "$cpu" >>"$SAMPLES"
            log "round $r c=$c $t: $rps req/s p50 ${p50}us p99 ${p99}us errors $errs non-2xx $non2xx cpu ${cpu}us/req"
        done
    done
done

python3 - "$SAMPLES" "${JSON:-}" <<'EOF'
import json, statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
data = {}
invalid, restarts = {}, {}
for row in rows:
    if row[3] in ("invalid", "restart"):
        counter = invalid if row[3] == "invalid" else restarts
        counter[(row[0], int(row[1]))] = counter.get((row[0], int(row[1])), 0) + 1
        continue
    t, c, r, rps, p50, p99, errs, non2xx, cpu = row
    d = data.setdefault((t, int(c)), {"rps": [], "p50": [], "p99": [], "cpu": [], "errors": 0, "non2xx": 0})
    d["rps"].append(float(rps)); d["p50"].append(float(p50) / 1000); d["p99"].append(float(p99) / 1000)
    if cpu != "-":
        d["cpu"].append(float(cpu))
    d["errors"] += int(errs); d["non2xx"] += int(non2xx)
order = ["direct", "nginx", "mcp-proxy", "portcullis", "portcullis-nousage", "portcullis-noaudit", "portcullis-base"]
summary = []
for c in sorted({c for _, c in data}):
    print(f"\n### Concurrency {c}\n")
    print("| target | req/s | p50 ms | p99 ms | proxy CPU µs/req | errors | non-2xx | rounds | discarded | restarts |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    med = {}
    for t in order:
        d = data.get((t, c))
        if not d:
            if invalid.get((t, c)):
                print(f"| {t} | - | - | - | - | - | - | 0 | {invalid[(t, c)]} | {restarts.get((t, c), 0)} |")
            continue
        m = {k: statistics.median(d[k]) for k in ("rps", "p50", "p99")}
        m["cpu_us"] = statistics.median(d["cpu"]) if d["cpu"] else None
        med[t] = m
        bad = invalid.get((t, c), 0)
        summary.append({"target": t, "concurrency": c, "rounds": len(d["rps"]), "discarded": bad,
                        "restarts": restarts.get((t, c), 0), **m,
                        "errors": d["errors"], "non2xx": d["non2xx"], "samples_rps": d["rps"]})
        cpu = "-" if m["cpu_us"] is None else f"{m['cpu_us']:.1f}"
        print(f"| {t} | {m['rps']:.0f} | {m['p50']:.3f} | {m['p99']:.3f} | {cpu} | {d['errors']} | {d['non2xx']} | {len(d['rps'])} | {bad} | {restarts.get((t, c), 0)} |")
    print()
    for mine, peer in (("portcullis", "nginx"), ("portcullis", "mcp-proxy"),
                       ("portcullis-base", "nginx"), ("portcullis", "portcullis-base"),
                       ("portcullis", "portcullis-nousage"), ("portcullis", "portcullis-noaudit"),
                       ("portcullis-noaudit", "portcullis-base")):
        if mine in med and peer in med:
            pc, p = med[mine], med[peer]
            cpu = ""
            if pc["cpu_us"] and p["cpu_us"]:
                cpu = f", CPU per request {pc['cpu_us'] / p['cpu_us']:.2f}x"
            print(f"- {mine}/{peer}: throughput {pc['rps'] / p['rps']:.2f}x, "
                  f"p99 {pc['p99']:.3f} ms vs {p['p99']:.3f} ms ({pc['p99'] / p['p99']:.2f}x){cpu}")
if sys.argv[2]:
    json.dump(summary, open(sys.argv[2], "w"), indent=2)
EOF
