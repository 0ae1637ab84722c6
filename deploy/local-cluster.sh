#!/usr/bin/env bash
# local-cluster.sh: a Portcullis cluster on loopback, for integration tests and
# for trying cluster mode by hand: Redis (AOF on; one server, a Redis Cluster
# or a Sentinel-watched primary with replicas), N `portcullis serve` instances
# and a round-robin load balancer (HAProxy, or nginx) in front.
#
# Everything lives under --dir: configs, logs, pidfiles, the Redis AOF. Only
# processes whose pidfile is in --dir (and whose command line matches) are ever
# signalled; a Redis or gateway the script did not start is never touched.
#
# Progress goes to stderr. `up`, `status` and the fault-injection subcommands
# print one line of JSON on stdout describing the cluster. Run with --help.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

usage() {
    cat <<'EOF'
Usage: deploy/local-cluster.sh COMMAND --dir DIR [options]

Commands:
  up --dir DIR --instances N [options]
        Start Redis, N gateway instances and a load balancer, wait until every
        instance's /readyz answers 200, then print one line of JSON:
        {"dir":…, "redis_port":…, "redis_url":…, "lb_url":"http://127.0.0.1:PORT",
         "redis":{"mode":…, "url":…, "nodes":[{"index":1,"port":…,"pid":…,"role":…}, …],
                  "sentinels":[…], "master_name":…, "wait_replicas":…},
         "instances":[{"index":1,"data":…,"admin":…,"pid":…,"config":…,"log":…}, …], …}
      --instances N        number of gateway instances (default 2)
      --redis KIND         "single" (default): one redis-server;
                           "cluster": a Redis Cluster of 6 nodes (3 masters + 3
                           replicas), store.url = redis+cluster://…;
                           "sentinel": 1 primary + 2 replicas and 3 Sentinels
                           (quorum 2), store.url = redis+sentinel://…/portcullis.
                           Every node has AOF with appendfsync always.
      --wait-replicas N    store.wait_replicas: replicas that must have a
                           revocation before it is acknowledged (default 1 with
                           --redis cluster|sentinel, unset with single)
      --redis-port P       Redis port, --redis single only (default: a free one;
                           never an occupied one)
      --scope S            limits.scope: "instance" (default) or "cluster"
      --bin PATH           portcullis binary (default: $PORTCULLIS_BIN, else
                           target/debug/portcullis in the repository)
      --lb KIND            "haproxy" (default; installed with apt-get if missing,
                           and a hard error if that fails), "nginx", or "auto"
                           (haproxy if it can be had, else nginx with a warning;
                           the JSON's "lb" says which)
      --lb-check KIND      how the LB checks instances: "tcp" (default: the data
                           port, so fault-injection tests see each instance's own
                           answers during a Redis outage), "readyz" (GET /readyz
                           on the admin port, as Kubernetes would) or "none"
      --upstream URL       the `demo` workspace's upstream
                           (default http://127.0.0.1:8765/mcp)
      --grace-ms MS        server.shutdown_grace_ms (default 5000)
      --rpm N              limits.requests_per_minute (default 120)
      --revocation-grace-ms MS
                           store.revocation_grace_ms (redis only; default: unset,
                           the binary's default of 0 = fail closed)
      --timeout S          seconds to wait for readiness (default 60)
      --store KIND         "redis" (default) or "sqlite": each instance gets its
                           own SQLite file instead of the shared Redis (for testing
                           this script against a binary without the Redis
                           backend; tokens are then NOT shared between instances).
                           Redis is started either way so that the fault-injection
                           commands can be exercised (with --redis cluster|sentinel:
                           the topology without gateways that use it).
  down --dir DIR
        Stop the LB, the instances (SIGTERM, wait for the graceful drain,
        SIGKILL only after grace + 10 s) and Redis. Idempotent.
  status --dir DIR
        Print the JSON line again (pids are current; dead ones are null).
  restart-instance --dir DIR --index K [--kill]
        Stop instance K (SIGTERM, or SIGKILL with --kill), start it again with
        the same config and ports, wait for /readyz; prints the JSON line.
  stop-instance --dir DIR --index K [--kill]
  start-instance --dir DIR --index K
  stop-redis --dir DIR [--node K | --sentinel K] [--kill]
        Stop Redis node K (numbered as in the JSON's redis.nodes), Sentinel K,
        or without either every data node (a whole-store outage; Sentinels
        keep running). SIGTERM, or SIGKILL with --kill to simulate a crash;
        with appendfsync always nothing acknowledged is lost either way.
  start-redis --dir DIR [--node K | --sentinel K]
        Start that process again (without either: every stopped one) on the
        same ports and directories, and wait until the topology is healthy.
  wait-redis --dir DIR
        Wait until the topology is healthy again (after a failover: every slot
        served by a running master / the Sentinels agree on a running primary,
        running replicas in sync); prints the JSON line.
  failover-redis --dir DIR [--node K]
        A planned failover. Cluster: replica K (default: the first running
        replica) takes over from its master (CLUSTER FAILOVER). Sentinel:
        SENTINEL FAILOVER; the Sentinels pick the new primary.

Health (up, start-redis, wait-redis): Cluster: every running node says
cluster_state:ok, every slot's master is running, running replicas are in
sync. Sentinel: every running Sentinel names the same running primary and has
its quorum, running replicas follow it.

Files in DIR: cluster.env, instance-K.toml, instance-K.log, instance-K.pid,
redis/ (--redis single: AOF, redis.log, redis.pid), redis-cluster/node-K/ and
redis-sentinel/{node-K,sentinel-K}/ (config, AOF, log, pidfile; ports.env keeps
their ports for the next `up` in DIR), lb/ (LB config, log, pidfile),
data/instance-K.db (--store sqlite only).

An admin token for a running cluster (Redis store: valid on every instance):
  portcullis admin token create --name ops --config DIR/instance-1.toml --json
EOF
}

log() { printf 'local-cluster: %s\n' "$*" >&2; }
die() {
    printf 'local-cluster: error: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# Prints N distinct free loopback ports (bound together, so no duplicates).
free_ports() {
    python3 -c 'import socket,sys
s=[socket.socket() for _ in range(int(sys.argv[1]))]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))' "$1"
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
    python3 -c 'import socket,sys
s=socket.socket(); s.settimeout(0.5)
sys.exit(0 if s.connect_ex(("127.0.0.1",int(sys.argv[1])))==0 else 1)' "$1"
}

# TOML basic string.
toml_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# HTTP status of GET $1 ("000" when unreachable).
http_status() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" 2>/dev/null || true
}

# True if pid $1 is alive and its command line contains every further argument
# (an argument cwd=PATH checks its working directory instead).
pid_matches() {
    local pid=$1
    shift
    [[ -n "$pid" && "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    local cmd
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    # A zombie has an empty command line: not running.
    [[ -n "$cmd" ]] || return 1
    local want
    for want in "$@"; do
        if [[ "$want" == cwd=* ]]; then
            # Redis rewrites its command line; its working directory (--dir)
            # tells ours from any other Redis on the machine.
            [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "${want#cwd=}" ]] || return 1
        else
            [[ "$cmd" == *"$want"* ]] || return 1
        fi
    done
}

read_pid() {
    if [[ -f "$1" ]]; then tr -dc '0-9' <"$1"; fi
}

# wait_gone PID SECONDS: true once PID has exited.
wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        # Reap-free check: a zombie child of ours counts as gone.
        [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]] && return 0
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# stop_pid NAME PIDFILE GRACE_S SIGNAL MATCH...: signal, wait, escalate to KILL.
stop_pid() {
    local name=$1 pidfile=$2 grace=$3 sig=$4
    shift 4
    local pid
    pid=$(read_pid "$pidfile")
    if [[ -z "$pid" ]]; then
        rm -f "$pidfile"
        return 0
    fi
    if ! pid_matches "$pid" "$@"; then
        log "$name: pid $pid from $pidfile is not running (or is not ours); nothing to stop"
        rm -f "$pidfile"
        return 0
    fi
    log "$name: sending SIG$sig to pid $pid"
    kill -s "$sig" "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$grace"; then
        log "$name: pid $pid still running after ${grace}s; sending SIGKILL"
        kill -s KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || die "$name: pid $pid does not exit even after SIGKILL"
    fi
    rm -f "$pidfile"
}

tail_log() {
    local f=$1
    if [[ -f "$f" ]]; then
        printf -- '--- last lines of %s ---\n' "$f" >&2
        tail -n 25 "$f" >&2
        printf -- '---\n' >&2
    fi
}

# ---------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------

load_state() {
    [[ -n "${DIR:-}" ]] || die "--dir is required"
    [[ -f "$DIR/cluster.env" ]] || die "$DIR/cluster.env not found: no cluster was started in $DIR (run \`$0 up --dir $DIR\`)"
    # shellcheck disable=SC1091
    source "$DIR/cluster.env"
    # A cluster.env from before --redis existed describes a single Redis.
    REDIS_MODE=${REDIS_MODE:-single}
    set_topology
    if [[ "$REDIS_MODE" != single ]]; then
        [[ -f "$(ha_dir)/ports.env" ]] || die "$(ha_dir)/ports.env not found"
        # shellcheck disable=SC1091
        source "$(ha_dir)/ports.env"
    fi
}

save_state() {
    {
        printf '# written by local-cluster.sh up; read by its other commands\n'
        local v
        for v in BIN STORE SCOPE LB LB_CHECK LB_PORT REDIS_MODE REDIS_PORT INSTANCES GRACE_MS UPSTREAM RPM REVOCATION_GRACE_MS WAIT_REPLICAS; do
            printf '%s=%q\n' "$v" "${!v}"
        done
        local k
        for ((k = 1; k <= INSTANCES; k++)); do
            printf 'DATA_PORT_%d=%q\nADMIN_PORT_%d=%q\n' "$k" "${DATA_PORTS[k]}" "$k" "${ADMIN_PORTS[k]}"
        done
    } >"$DIR/cluster.env"
}

data_port() { local v="DATA_PORT_$1"; printf '%s' "${!v}"; }
admin_port() { local v="ADMIN_PORT_$1"; printf '%s' "${!v}"; }

# The JSON line describing the cluster (live pids, null for dead ones; live
# Redis roles, which change with failovers).
print_json() {
    local args=() k pid
    for ((k = 1; k <= INSTANCES; k++)); do
        pid=$(read_pid "$DIR/instance-$k.pid")
        pid_matches "$pid" "$DIR/instance-$k.toml" || pid=""
        args+=("$(data_port "$k")" "$(admin_port "$k")" "$pid")
    done
    local lpid
    lpid=$(read_pid "$DIR/lb/$LB.pid")
    pid_matches "$lpid" "$DIR/lb/" || lpid=""
    # Redis processes, one argument each: kind:index:port:pid:role.
    local redis=() role
    for ((k = 1; k <= REDIS_NODES; k++)); do
        pid=$(node_pid "$k")
        role=""
        [[ -n "$pid" ]] && role=$(redis_role "$(node_port "$k")")
        redis+=("node:$k:$(node_port "$k"):$pid:$role")
    done
    for ((k = 1; k <= SENTINELS; k++)); do
        redis+=("sentinel:$k:$(sentinel_port "$k"):$(sentinel_pid "$k"):")
    done
    python3 - "$DIR" "$LB_PORT" "$LB" "$STORE" "$SCOPE" "$lpid" "$BIN" \
        "$REDIS_MODE" "$(store_url)" "$MASTER_NAME" "$(node_dir 1)" "$(ha_dir)" "${WAIT_REPLICAS:-0}" "$INSTANCES" \
        "${args[@]}" "${redis[@]}" <<'PY'
import json, sys
d, lb_port, lb, store, scope, lpid, bin_, mode, url, master_name, node1_dir, ha_dir, wait, n = sys.argv[1:15]
n = int(n)
rest = sys.argv[15:15 + 3 * n]
inst = []
for i in range(0, len(rest), 3):
    k = i // 3 + 1
    inst.append({
        "index": k,
        "data": f"http://127.0.0.1:{rest[i]}",
        "admin": f"http://127.0.0.1:{rest[i+1]}",
        "pid": int(rest[i+2]) if rest[i+2] else None,
        "config": f"{d}/instance-{k}.toml",
        "log": f"{d}/instance-{k}.log",
    })
nodes, sentinels = [], []
for spec in sys.argv[15 + 3 * n:]:
    kind, k, port, pid, role = spec.split(":")
    entry = {"index": int(k), "port": int(port), "pid": int(pid) if pid else None}
    if kind == "node":
        entry["role"] = {"slave": "replica"}.get(role, role) or None
        entry["dir"] = node1_dir if mode == "single" else f"{ha_dir}/node-{k}"
        entry["log"] = f"{entry['dir']}/redis.log"
        nodes.append(entry)
    else:
        entry["dir"] = f"{ha_dir}/sentinel-{k}"
        entry["log"] = f"{entry['dir']}/sentinel.log"
        sentinels.append(entry)
print(json.dumps({
    "dir": d,
    # Node 1 in the cluster and sentinel topologies; redis.nodes has them all.
    "redis_port": nodes[0]["port"],
    "redis_url": url,
    "redis_pid": nodes[0]["pid"],
    "redis": {
        "mode": mode,
        "url": url,
        "master_name": master_name or None,
        "wait_replicas": int(wait),
        "nodes": nodes,
        "sentinels": sentinels,
    },
    "lb_url": f"http://127.0.0.1:{lb_port}",
    "lb": lb,
    "lb_pid": int(lpid) if lpid else None,
    "store": store,
    "scope": scope,
    "bin": bin_,
    "instances": inst,
}))
PY
}

# ---------------------------------------------------------------------------
# Redis: one server (single), a Redis Cluster of 3 masters + 3 replicas
# (cluster), or 1 primary + 2 replicas watched by 3 Sentinels (sentinel).
# ---------------------------------------------------------------------------

# Sentinel's name for the primary, the last segment of the redis+sentinel URL.
MASTER_NAME_DEFAULT=portcullis

# The HA topologies live in their own directory, so switching --redis in the
# same --dir never starts a node on another topology's data. Their ports are
# kept there (ports.env) and reused by the next `up`: cluster nodes and
# Sentinels record each other's addresses, so a restart must keep them.
ha_dir() {
    case "$REDIS_MODE" in
        cluster) printf '%s' "$DIR/redis-cluster" ;;
        sentinel) printf '%s' "$DIR/redis-sentinel" ;;
        *) printf '%s' "" ;;
    esac
}

# Sets the topology's shape from REDIS_MODE.
set_topology() {
    case "$REDIS_MODE" in
        single) REDIS_NODES=1 SENTINELS=0 MASTER_NAME="" ;;
        cluster) REDIS_NODES=6 SENTINELS=0 MASTER_NAME="" ;;
        sentinel) REDIS_NODES=3 SENTINELS=3 MASTER_NAME=$MASTER_NAME_DEFAULT ;;
    esac
}

node_dir() {
    if [[ "$REDIS_MODE" == single ]]; then printf '%s' "$DIR/redis"; else printf '%s/node-%s' "$(ha_dir)" "$1"; fi
}
node_port() {
    if [[ "$REDIS_MODE" == single ]]; then
        printf '%s' "$REDIS_PORT"
    else
        local v="REDIS_NODE_PORT_$1"
        printf '%s' "${!v:-}"
    fi
}
bus_port() { local v="REDIS_BUS_PORT_$1"; printf '%s' "${!v:-}"; }
sentinel_dir() { printf '%s/sentinel-%s' "$(ha_dir)" "$1"; }
sentinel_port() { local v="SENTINEL_PORT_$1"; printf '%s' "${!v:-}"; }

# The URL every gateway's store.url gets.
store_url() {
    local k sep="" hosts=""
    case "$REDIS_MODE" in
        single) printf 'redis://127.0.0.1:%s/0' "$REDIS_PORT" ;;
        cluster)
            # Every node is a seed: the client finds the cluster through any
            # node that is up and follows its slot map.
            for ((k = 1; k <= REDIS_NODES; k++)); do
                hosts+="${sep}127.0.0.1:$(node_port "$k")"
                sep=,
            done
            printf 'redis+cluster://%s' "$hosts"
            ;;
        sentinel)
            for ((k = 1; k <= SENTINELS; k++)); do
                hosts+="${sep}127.0.0.1:$(sentinel_port "$k")"
                sep=,
            done
            printf 'redis+sentinel://%s/%s' "$hosts" "$MASTER_NAME"
            ;;
    esac
}

# Our pid of node K / Sentinel K, or nothing. Redis rewrites its command line
# ("redis-server 127.0.0.1:PORT [cluster]"); its working directory (`dir`)
# tells ours from any other Redis on the machine.
node_pid() {
    local pid
    pid=$(read_pid "$(node_dir "$1")/redis.pid")
    pid_matches "$pid" redis-server ":$(node_port "$1")" "cwd=$(node_dir "$1")" && printf '%s' "$pid"
    return 0
}
sentinel_pid() {
    local pid
    pid=$(read_pid "$(sentinel_dir "$1")/sentinel.pid")
    pid_matches "$pid" redis-server ":$(sentinel_port "$1")" "cwd=$(sentinel_dir "$1")" && printf '%s' "$pid"
    return 0
}

rcli() {
    local port=$1
    shift
    redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null
}

# master, slave or sentinel (empty when unreachable or still loading).
redis_role() {
    local r
    r=$(rcli "$1" role | head -n 1)
    case "$r" in master | slave | sentinel) printf '%s' "$r" ;; esac
}

# Loads (or picks and saves) the HA topology's ports.
load_or_pick_ha_ports() {
    local d f k
    d=$(ha_dir)
    f="$d/ports.env"
    mkdir -p "$d"
    if [[ -f "$f" ]]; then
        # shellcheck disable=SC1090
        source "$f"
        log "redis ($REDIS_MODE): reusing the ports recorded in $f"
        return 0
    fi
    local need=$((2 * REDIS_NODES)) ports i=0
    [[ "$REDIS_MODE" == sentinel ]] && need=$((REDIS_NODES + SENTINELS))
    read -r -a ports <<<"$(free_ports "$need")"
    ((${#ports[@]} == need)) || die "could not find $need free loopback ports for Redis"
    {
        printf '# Ports of the %s topology in %s (written by local-cluster.sh up, reused by the next)\n' "$REDIS_MODE" "$d"
        for ((k = 1; k <= REDIS_NODES; k++)); do
            printf 'REDIS_NODE_PORT_%d=%s\n' "$k" "${ports[i++]}"
            # The cluster bus: by default data port + 10000, which may be
            # taken or above 65535; pick it like every other port.
            [[ "$REDIS_MODE" == cluster ]] && printf 'REDIS_BUS_PORT_%d=%s\n' "$k" "${ports[i++]}"
        done
        for ((k = 1; k <= SENTINELS; k++)); do
            printf 'SENTINEL_PORT_%d=%s\n' "$k" "${ports[i++]}"
        done
    } >"$f"
    # shellcheck disable=SC1090
    source "$f"
}

# Node K's redis.conf, written once: Sentinel rewrites it (CONFIG REWRITE) when
# it turns a primary into a replica or back, so a restarted node keeps the role
# the last failover gave it; a Cluster node keeps its role in nodes.conf.
write_node_conf() {
    local k=$1 d f
    d=$(node_dir "$k")
    f="$d/redis.conf"
    [[ -f "$f" ]] && return 0
    {
        printf '# Redis node %d of the %s topology (written by local-cluster.sh)\n' "$k" "$REDIS_MODE"
        printf 'port %s\nbind 127.0.0.1\ndir %s\n' "$(node_port "$k")" "$d"
        printf 'daemonize yes\npidfile %s/redis.pid\nlogfile %s/redis.log\n' "$d" "$d"
        # Durability (deploy/README.md): every acknowledged write is fsynced
        # to the AOF before the answer; no RDB; no eviction of token records.
        printf 'appendonly yes\nappendfsync always\nsave ""\nmaxmemory-policy noeviction\n'
        # A replica (re)joining gets its full copy at once rather than after
        # the default 5 s wait for other replicas to share the transfer.
        printf 'repl-diskless-sync-delay 0\n'
        if [[ "$REDIS_MODE" == cluster ]]; then
            printf 'cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-port %s\n' "$(bus_port "$k")"
            # Failover after 2 s without a master instead of the default 15 s.
            printf 'cluster-node-timeout 2000\n'
        elif ((k > 1)); then
            printf 'replicaof 127.0.0.1 %s\n' "$(node_port 1)"
        fi
    } >"$f"
}

write_sentinel_conf() {
    local k=$1 d f
    d=$(sentinel_dir "$k")
    f="$d/sentinel.conf"
    [[ -f "$f" ]] && return 0
    {
        printf '# Sentinel %d (written by local-cluster.sh; Sentinel rewrites it with what it learns)\n' "$k"
        printf 'port %s\nbind 127.0.0.1\ndir %s\n' "$(sentinel_port "$k")" "$d"
        printf 'daemonize yes\npidfile %s/sentinel.pid\nlogfile %s/sentinel.log\n' "$d" "$d"
        # Quorum 2 of 3; a primary silent for 2 s is failed over.
        printf 'sentinel monitor %s 127.0.0.1 %s 2\n' "$MASTER_NAME" "$(node_port 1)"
        printf 'sentinel down-after-milliseconds %s 2000\n' "$MASTER_NAME"
        printf 'sentinel failover-timeout %s 10000\n' "$MASTER_NAME"
        printf 'sentinel parallel-syncs %s 1\n' "$MASTER_NAME"
    } >"$f"
}

# wait_ping NAME PORT LOG PIDFILE: until PING answers and the pidfile exists.
wait_ping() {
    local name=$1 port=$2 logf=$3 pidf=$4 deadline=$((SECONDS + 20))
    until [[ "$(rcli "$port" ping)" == PONG ]]; do
        if ((SECONDS >= deadline)); then
            tail_log "$logf"
            die "$name on port $port did not answer PING within 20 s"
        fi
        sleep 0.1
    done
    # The pidfile is written right after daemonizing; wait for it.
    deadline=$((SECONDS + 5))
    until [[ -s "$pidf" ]] || ((SECONDS >= deadline)); do sleep 0.05; done
}

# start_node K [nowait]: with nowait, launch only (start_redis_all starts every
# node at once, then waits for each).
start_node() {
    local k=$1 nowait=${2:-} d port pid
    d=$(node_dir "$k")
    port=$(node_port "$k")
    pid=$(node_pid "$k")
    if [[ -n "$pid" ]]; then
        log "redis node $k: already running (pid $pid, port $port)"
        return 0
    fi
    command -v redis-server >/dev/null || die "redis-server not found; install it (apt-get install -y redis-server)"
    if port_in_use "$port"; then
        die "port $port is already in use by another process; pick another --redis-port or a fresh --dir (this script never uses a Redis it did not start)"
    fi
    if [[ "$REDIS_MODE" == cluster ]] && port_in_use "$(bus_port "$k")"; then
        die "cluster bus port $(bus_port "$k") of node $k is in use by another process; use a fresh --dir"
    fi
    mkdir -p "$d"
    rm -f "$d/redis.pid"
    if [[ "$REDIS_MODE" == single ]]; then
        log "redis: starting on 127.0.0.1:$port (AOF, appendfsync always) in $d"
        # Durability: every acknowledged write (a revocation) is fsynced to the
        # AOF before Redis answers. No RDB snapshots; noeviction so that a full
        # Redis refuses writes instead of silently dropping token records.
        redis-server --port "$port" --bind 127.0.0.1 --dir "$d" \
            --appendonly yes --appendfsync always --save "" \
            --maxmemory-policy noeviction \
            --daemonize yes --pidfile "$d/redis.pid" --logfile "$d/redis.log" \
            </dev/null >>"$d/redis-start.log" 2>&1 || {
            tail_log "$d/redis-start.log"
            tail_log "$d/redis.log"
            die "redis-server failed to start"
        }
    else
        write_node_conf "$k"
        log "redis node $k ($REDIS_MODE): starting on 127.0.0.1:$port in $d"
        redis-server "$d/redis.conf" </dev/null >>"$d/redis-start.log" 2>&1 || {
            tail_log "$d/redis-start.log"
            tail_log "$d/redis.log"
            die "redis node $k failed to start"
        }
    fi
    [[ -n "$nowait" ]] || wait_ping "redis node $k" "$port" "$d/redis.log" "$d/redis.pid"
}

start_sentinel() {
    local k=$1 d port pid
    d=$(sentinel_dir "$k")
    port=$(sentinel_port "$k")
    pid=$(sentinel_pid "$k")
    if [[ -n "$pid" ]]; then
        log "sentinel $k: already running (pid $pid, port $port)"
        return 0
    fi
    port_in_use "$port" && die "port $port of sentinel $k is in use by another process; use a fresh --dir"
    mkdir -p "$d"
    rm -f "$d/sentinel.pid"
    write_sentinel_conf "$k"
    log "sentinel $k: starting on 127.0.0.1:$port in $d"
    redis-server "$d/sentinel.conf" --sentinel </dev/null >>"$d/sentinel-start.log" 2>&1 || {
        tail_log "$d/sentinel-start.log"
        tail_log "$d/sentinel.log"
        die "sentinel $k failed to start"
    }
    wait_ping "sentinel $k" "$port" "$d/sentinel.log" "$d/sentinel.pid"
}

stop_node() {
    local k=$1 sig=${2:-TERM} name="redis node $1"
    [[ "$REDIS_MODE" == single ]] && name=redis
    stop_pid "$name" "$(node_dir "$k")/redis.pid" 20 "$sig" redis-server ":$(node_port "$k")" "cwd=$(node_dir "$k")"
}

stop_sentinel() {
    local k=$1 sig=${2:-TERM}
    stop_pid "sentinel $k" "$(sentinel_dir "$k")/sentinel.pid" 10 "$sig" redis-server ":$(sentinel_port "$k")" "cwd=$(sentinel_dir "$k")"
}

# Forms the cluster on first start: 3 masters, one replica each.
create_cluster_if_new() {
    local k known formed=0 fresh=0 addrs=()
    for ((k = 1; k <= REDIS_NODES; k++)); do
        known=$(rcli "$(node_port "$k")" cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')
        if [[ "$known" == 1 ]]; then
            fresh=$((fresh + 1))
        else
            formed=$((formed + 1))
        fi
        addrs+=("127.0.0.1:$(node_port "$k")")
    done
    ((formed == 0)) || {
        ((fresh == 0)) || die "the Redis Cluster in $(ha_dir) is half formed ($fresh nodes know only themselves); use a fresh --dir"
        log "redis cluster: already formed (nodes.conf in $(ha_dir)/node-*)"
        return 0
    }
    log "redis cluster: creating (3 masters, 1 replica each)"
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
        </dev/null >"$(ha_dir)/cluster-create.log" 2>&1 || {
        tail_log "$(ha_dir)/cluster-create.log"
        die "redis-cli --cluster create failed"
    }
}

# True when the running part of the topology serves: every running cluster
# node says cluster_state:ok and every running replica is in sync with its
# master; or every running Sentinel names the same running primary, agrees
# there is a quorum, and every running replica follows that primary.
redis_healthy() {
    local k port pid info
    case "$REDIS_MODE" in
        single)
            [[ "$(rcli "$REDIS_PORT" ping)" == PONG ]]
            ;;
        cluster)
            # Right after a master dies the others still say cluster_state:ok
            # until cluster-node-timeout passes: also require that every
            # master owning slots is one of our running nodes.
            local live=" " nodes_out=""
            for ((k = 1; k <= REDIS_NODES; k++)); do
                [[ -n "$(node_pid "$k")" ]] && live+="$(node_port "$k") "
            done
            for ((k = 1; k <= REDIS_NODES; k++)); do
                [[ -n "$(node_pid "$k")" ]] || continue
                port=$(node_port "$k")
                if [[ -z "$nodes_out" ]]; then
                    nodes_out=$(rcli "$port" cluster nodes) || return 1
                    # Fields: id ip:port@bus flags master ping pong epoch link slots...
                    awk '$3 ~ /master/ && NF >= 9 {split($2, a, "[:@]"); print a[2]}' <<<"$nodes_out" |
                        while read -r p; do [[ "$live" == *" $p "* ]] || exit 1; done || return 1
                fi
                rcli "$port" cluster info | grep -q '^cluster_state:ok' || return 1
                info=$(rcli "$port" info replication | tr -d '\r')
                if grep -q '^role:slave' <<<"$info"; then
                    grep -q '^master_link_status:up' <<<"$info" || return 1
                fi
            done
            ;;
        sentinel)
            local primary="" addr running=0
            for ((k = 1; k <= SENTINELS; k++)); do
                [[ -n "$(sentinel_pid "$k")" ]] || continue
                running=$((running + 1))
                port=$(sentinel_port "$k")
                addr=$(rcli "$port" sentinel get-master-addr-by-name "$MASTER_NAME" | tr '\n' ':')
                [[ -n "$addr" ]] || return 1
                [[ -z "$primary" || "$addr" == "$primary" ]] || return 1
                primary=$addr
                rcli "$port" sentinel ckquorum "$MASTER_NAME" | grep -q '^OK' || return 1
            done
            ((running > 0)) || return 1
            local pport=${primary#127.0.0.1:}
            pport=${pport%:}
            [[ "$(redis_role "$pport")" == master ]] || return 1
            for ((k = 1; k <= REDIS_NODES; k++)); do
                port=$(node_port "$k")
                [[ -n "$(node_pid "$k")" && "$port" != "$pport" ]] || continue
                info=$(rcli "$port" info replication | tr -d '\r')
                grep -q "^master_port:$pport\$" <<<"$info" || return 1
                grep -q '^master_link_status:up' <<<"$info" || return 1
            done
            ;;
    esac
}

wait_redis_healthy() {
    local deadline=$((SECONDS + ${1:-60}))
    until redis_healthy; do
        if ((SECONDS >= deadline)); then
            local k
            for ((k = 1; k <= REDIS_NODES; k++)); do tail_log "$(node_dir "$k")/redis.log"; done
            for ((k = 1; k <= SENTINELS; k++)); do tail_log "$(sentinel_dir "$k")/sentinel.log"; done
            die "redis ($REDIS_MODE) did not become healthy within ${1:-60} s"
        fi
        sleep 0.2
    done
}

start_redis_all() {
    local k
    for ((k = 1; k <= REDIS_NODES; k++)); do
        start_node "$k" nowait
    done
    for ((k = 1; k <= REDIS_NODES; k++)); do
        wait_ping "redis node $k" "$(node_port "$k")" "$(node_dir "$k")/redis.log" "$(node_dir "$k")/redis.pid"
    done
    [[ "$REDIS_MODE" == cluster ]] && create_cluster_if_new
    for ((k = 1; k <= SENTINELS; k++)); do
        start_sentinel "$k"
    done
    wait_redis_healthy "$TIMEOUT"
    [[ "$REDIS_MODE" == single ]] || log "redis ($REDIS_MODE): healthy at $(store_url)"
}

# Sentinels first (so that stopping the primary starts no failover), then the
# data nodes, replicas before masters as they were started.
stop_redis_all() {
    local k
    for ((k = SENTINELS; k >= 1; k--)); do
        stop_sentinel "$k"
    done
    for ((k = REDIS_NODES; k >= 1; k--)); do
        stop_node "$k"
    done
}

# ---------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------

write_instance_config() {
    local k=$1 f="$DIR/instance-$1.toml"
    {
        printf '# Instance %d of the local cluster in %s (written by local-cluster.sh).\n\n' "$k" "$DIR"
        printf '[server]\n'
        printf 'listen = "127.0.0.1:%s"\n' "${DATA_PORTS[k]}"
        printf 'admin_listen = "127.0.0.1:%s"\n' "${ADMIN_PORTS[k]}"
        printf 'public_url = "http://127.0.0.1:%s"\n' "$LB_PORT"
        printf 'shutdown_grace_ms = %s\n\n' "$GRACE_MS"
        printf '[store]\n'
        if [[ "$STORE" == redis ]]; then
            printf 'backend = "redis"\n'
            printf 'url = %s\n' "$(toml_str "$(store_url)")"
            if [[ -n "$REVOCATION_GRACE_MS" ]]; then
                printf 'revocation_grace_ms = %s\n' "$REVOCATION_GRACE_MS"
            fi
            if [[ -n "$WAIT_REPLICAS" ]]; then
                printf 'wait_replicas = %s\n' "$WAIT_REPLICAS"
            fi
        else
            printf 'backend = "sqlite"\n'
            printf 'path = %s\n' "$(toml_str "$DIR/data/instance-$k.db")"
        fi
        printf '\n[limits]\n'
        printf 'requests_per_minute = %s\n' "$RPM"
        if [[ "$STORE" == redis ]]; then
            printf 'scope = "%s"\n' "$SCOPE"
        fi
        printf '\n[[workspaces]]\nslug = "demo"\n\n'
        printf '[[workspaces.servers]]\nname = "demo"\nurl = %s\n' "$(toml_str "$UPSTREAM")"
    } >"$f"
}

start_instance() {
    local k=$1 cfg="$DIR/instance-$1.toml" logf="$DIR/instance-$1.log" pidf="$DIR/instance-$1.pid"
    local pid
    pid=$(read_pid "$pidf")
    if pid_matches "$pid" "$cfg"; then
        log "instance $k: already running (pid $pid)"
        return 0
    fi
    local dp ap
    dp=$(data_port "$k")
    ap=$(admin_port "$k")
    local p
    for p in "$dp" "$ap"; do
        port_in_use "$p" && die "instance $k: port $p is already in use by another process"
    done
    log "instance $k: starting (data 127.0.0.1:$dp, admin 127.0.0.1:$ap, log $logf)"
    printf '\n==== %s: local-cluster.sh starting instance %d ====\n' "$(date -u +%FT%TZ)" "$k" >>"$logf"
    # setsid: own session, so a Ctrl-C or hangup of the terminal that ran `up`
    # does not reach it. The subshell is not a process-group leader, so setsid
    # does not fork and $! is the gateway's own pid.
    # NO_COLOR: the log is a file; PORTCULLIS_LOG / PORTCULLIS_LOG_FORMAT pass through.
    (NO_COLOR=1 exec setsid "$BIN" serve --config "$cfg" </dev/null >>"$logf" 2>&1) &
    echo $! >"$pidf"
    disown $! 2>/dev/null || true
}

# wait_ready K DEADLINE_SECONDS: until /readyz is 200; fails with the log tail.
wait_ready() {
    local k=$1 deadline=$2 pid status
    local url
    url="http://127.0.0.1:$(admin_port "$k")/readyz"
    pid=$(read_pid "$DIR/instance-$k.pid")
    while :; do
        status=$(http_status "$url")
        [[ "$status" == 200 ]] && return 0
        if ! pid_matches "$pid" "$DIR/instance-$k.toml"; then
            tail_log "$DIR/instance-$k.log"
            log "instance $k (pid $pid) exited during start-up; see $DIR/instance-$k.log"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            tail_log "$DIR/instance-$k.log"
            log "instance $k: $url did not answer 200 in time (last status: $status)"
            return 1
        fi
        sleep 0.2
    done
}

stop_instance() {
    local k=$1 sig=${2:-TERM}
    # Wait for the graceful drain (shutdown_grace_ms) plus slack before SIGKILL.
    stop_pid "instance $k" "$DIR/instance-$k.pid" $((GRACE_MS / 1000 + 10)) "$sig" "$DIR/instance-$k.toml"
}

# ---------------------------------------------------------------------------
# Load balancer
# ---------------------------------------------------------------------------

ensure_haproxy() {
    # Debian installs it in /usr/sbin, which a non-root PATH may lack.
    [[ -x /usr/sbin/haproxy && ":$PATH:" != *:/usr/sbin:* ]] && PATH="$PATH:/usr/sbin"
    command -v haproxy >/dev/null && return 0
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null && sudo -n true 2>/dev/null && sudo=(sudo -n)
    fi
    if command -v apt-get >/dev/null && { [[ $(id -u) -eq 0 ]] || ((${#sudo[@]})); }; then
        log "haproxy not found; installing it with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        if ! "${sudo[@]}" apt-get install -y -q haproxy >&2; then
            if "${sudo[@]}" apt-get update -q >&2; then
                "${sudo[@]}" apt-get install -y -q haproxy >&2 || true
            fi
        fi
        # The Debian package enables and starts its own haproxy service on the
        # default config; this script never touches it.
    fi
    command -v haproxy >/dev/null
}

write_haproxy_config() {
    local f="$DIR/lb/haproxy.cfg" k check
    {
        cat <<EOF
# Written by local-cluster.sh: round-robin over the instances' data ports.
global
    maxconn 4096
    log stderr format short local0 info

defaults
    mode http
    log global
    option httplog
    option redispatch
    retries 3
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout http-request 15s
    timeout http-keep-alive 5s

frontend portcullis
    bind 127.0.0.1:$LB_PORT
    option forwardfor
    default_backend portcullis

backend portcullis
    balance roundrobin
    # A fresh server connection per request: an instance that is restarted
    # closes its idle keep-alive connections, and a request racing into one
    # would get a 502. A refused connection is retried on another instance
    # (redispatch); a GET/HEAD/DELETE that got no answer at all is retried
    # too, a POST is not (the tool call may have run).
    http-reuse never
    retry-on conn-failure empty-response
    http-request disable-l7-retry if METH_POST
EOF
        if [[ "$LB_CHECK" == readyz ]]; then
            printf '    option httpchk GET /readyz\n    http-check expect status 200\n'
        fi
        for ((k = 1; k <= INSTANCES; k++)); do
            case "$LB_CHECK" in
                readyz) check=" check port $(admin_port "$k") inter 500ms fall 2 rise 1" ;;
                tcp) check=" check inter 500ms fall 1 rise 1" ;;
                *) check="" ;;
            esac
            printf '    server instance-%d 127.0.0.1:%s%s\n' "$k" "$(data_port "$k")" "$check"
        done
    } >"$f"
}

write_nginx_config() {
    local f="$DIR/lb/nginx.conf" k
    mkdir -p "$DIR/lb/nginx-tmp"
    {
        cat <<EOF
# Written by local-cluster.sh: round-robin over the instances' data ports.
daemon on;
worker_processes 1;
pid $DIR/lb/nginx.pid;
error_log $DIR/lb/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log $DIR/lb/nginx-access.log;
    client_body_temp_path $DIR/lb/nginx-tmp/body;
    proxy_temp_path $DIR/lb/nginx-tmp/proxy;
    fastcgi_temp_path $DIR/lb/nginx-tmp/fastcgi;
    uwsgi_temp_path $DIR/lb/nginx-tmp/uwsgi;
    scgi_temp_path $DIR/lb/nginx-tmp/scgi;
    # No client keep-alive and no upstream keep-alive pool: every request is a
    # new round-robin pick, so requests really spread over the instances.
    keepalive_timeout 0;
    upstream portcullis {
EOF
        for ((k = 1; k <= INSTANCES; k++)); do
            printf '        server 127.0.0.1:%s max_fails=1 fail_timeout=2s;\n' "$(data_port "$k")"
        done
        cat <<EOF
    }
    server {
        listen 127.0.0.1:$LB_PORT;
        client_max_body_size 16m;
        location / {
            proxy_pass http://portcullis;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            # Stream SSE and large bodies instead of buffering them.
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_next_upstream error timeout;
        }
    }
}
EOF
    } >"$f"
}

start_lb() {
    local pidf="$DIR/lb/$LB.pid" pid
    mkdir -p "$DIR/lb"
    pid=$(read_pid "$pidf")
    if pid_matches "$pid" "$DIR/lb/"; then
        log "$LB: already running (pid $pid)"
        return 0
    fi
    port_in_use "$LB_PORT" && die "load balancer port $LB_PORT is already in use by another process"
    if [[ "$LB" == haproxy ]]; then
        write_haproxy_config
        haproxy -c -q -f "$DIR/lb/haproxy.cfg" >&2 || die "haproxy rejected $DIR/lb/haproxy.cfg"
        log "haproxy: starting on 127.0.0.1:$LB_PORT (log $DIR/lb/haproxy.log)"
        (exec setsid haproxy -f "$DIR/lb/haproxy.cfg" -db </dev/null >>"$DIR/lb/haproxy.log" 2>&1) &
        echo $! >"$pidf"
    else
        write_nginx_config
        nginx -t -q -e "$DIR/lb/nginx-error.log" -c "$DIR/lb/nginx.conf" >&2 || die "nginx rejected $DIR/lb/nginx.conf"
        log "nginx: starting on 127.0.0.1:$LB_PORT (logs in $DIR/lb)"
        # nginx daemonizes itself and writes $DIR/lb/nginx.pid (the master).
        nginx -e "$DIR/lb/nginx-error.log" -c "$DIR/lb/nginx.conf" </dev/null >>"$DIR/lb/nginx-start.log" 2>&1 || {
            tail_log "$DIR/lb/nginx-start.log"
            die "nginx failed to start; see $DIR/lb/nginx-error.log"
        }
    fi
    local deadline=$((SECONDS + 10))
    until port_in_use "$LB_PORT"; do
        if ((SECONDS >= deadline)); then
            tail_log "$DIR/lb/$LB.log"
            tail_log "$DIR/lb/nginx-error.log"
            die "$LB did not start listening on 127.0.0.1:$LB_PORT"
        fi
        sleep 0.1
    done
}

stop_lb() {
    local sig=TERM
    # nginx: SIGQUIT is its graceful shutdown; haproxy: SIGUSR1 is a soft stop
    # that lets open connections finish. Either escalates to SIGKILL.
    [[ "$LB" == nginx ]] && sig=QUIT
    [[ "$LB" == haproxy ]] && sig=USR1
    stop_pid "$LB" "$DIR/lb/$LB.pid" 10 "$sig" "$DIR/lb/"
}

# Waits until the LB routes to every instance again (HAProxy health checks).
wait_lb_sees_all() {
    [[ "$LB" == haproxy && "$LB_CHECK" != none ]] || return 0
    # One check interval plus slack; a check is every 500 ms.
    sleep 1.2
}

# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

cmd_up() {
    [[ -n "$DIR" ]] || die "--dir is required"
    [[ "$INSTANCES" =~ ^[1-9][0-9]*$ ]] || die "--instances must be a positive number"
    [[ "$STORE" == redis || "$STORE" == sqlite ]] || die "--store must be redis or sqlite"
    [[ "$SCOPE" == instance || "$SCOPE" == cluster ]] || die "--scope must be instance or cluster"
    [[ "$STORE" == redis || "$SCOPE" == instance ]] || die "--scope cluster needs the Redis store"
    [[ "$LB" == haproxy || "$LB" == nginx || "$LB" == auto ]] || die "--lb must be haproxy, nginx or auto"
    [[ "$LB_CHECK" == tcp || "$LB_CHECK" == readyz || "$LB_CHECK" == none ]] || die "--lb-check must be tcp, readyz or none"
    [[ "$GRACE_MS" =~ ^[0-9]+$ ]] || die "--grace-ms must be a number of milliseconds"
    [[ "$RPM" =~ ^[1-9][0-9]*$ ]] || die "--rpm must be a positive number"
    [[ -z "$REVOCATION_GRACE_MS" || "$REVOCATION_GRACE_MS" =~ ^[0-9]+$ ]] || die "--revocation-grace-ms must be a number"
    [[ -z "$REVOCATION_GRACE_MS" || "$STORE" == redis ]] || die "--revocation-grace-ms needs the Redis store"
    [[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive number of seconds"
    [[ "$REDIS_MODE" == single || "$REDIS_MODE" == cluster || "$REDIS_MODE" == sentinel ]] ||
        die "--redis must be single, cluster or sentinel"
    [[ "$REDIS_MODE" == single || -z "$REDIS_PORT" ]] || die "--redis-port is for --redis single only (the other topologies pick free ports)"
    [[ -z "$WAIT_REPLICAS" || "$WAIT_REPLICAS" =~ ^[0-9]+$ ]] || die "--wait-replicas must be a number"
    [[ -z "$WAIT_REPLICAS" || "$STORE" == redis ]] || die "--wait-replicas needs the Redis store"
    # With replicas, a revocation is acknowledged only once one of them has
    # it: losing the primary then cannot bring a revoked token back.
    if [[ -z "$WAIT_REPLICAS" && "$REDIS_MODE" != single && "$STORE" == redis ]]; then
        WAIT_REPLICAS=1
    fi
    set_topology
    command -v python3 >/dev/null || die "python3 is needed (free ports, JSON)"
    command -v curl >/dev/null || die "curl is needed (readiness checks)"

    if [[ -z "$BIN" ]]; then
        BIN=${PORTCULLIS_BIN:-$REPO_ROOT/target/debug/portcullis}
    fi
    if [[ ! -x "$BIN" ]]; then
        local hint="build it with \`cargo build\` in $REPO_ROOT, or pass --bin PATH"
        [[ -n "${CARGO_TARGET_DIR:-}" ]] && hint="$hint (CARGO_TARGET_DIR is set: try --bin $CARGO_TARGET_DIR/debug/portcullis)"
        die "portcullis binary not found or not executable: $BIN; $hint"
    fi
    BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

    mkdir -p "$DIR"
    DIR="$(cd "$DIR" && pwd -P)"
    if [[ -f "$DIR/cluster.env" ]]; then
        (
            # shellcheck disable=SC1091
            source "$DIR/cluster.env"
            for ((k = 1; k <= INSTANCES; k++)); do
                pid_matches "$(read_pid "$DIR/instance-$k.pid")" "$DIR/instance-$k.toml" && exit 1
            done
            exit 0
        ) || die "a cluster is already running in $DIR; run \`$0 down --dir $DIR\` first"
    fi

    # HAProxy was asked for (the default): no silent substitute, since the
    # integration tests that use this script are about HAProxy in front.
    # Only --lb auto may fall back to nginx, and it says so on stderr and in
    # the JSON ("lb").
    if [[ "$LB" == haproxy ]] && ! ensure_haproxy; then
        die "haproxy is not available and could not be installed (scripts/test-deps.sh installs it); install it, or pass --lb nginx or --lb auto"
    fi
    if [[ "$LB" == auto ]]; then
        if ensure_haproxy; then
            LB=haproxy
        elif command -v nginx >/dev/null; then
            log "WARNING: --lb auto: haproxy is not available and could not be installed; USING NGINX INSTEAD"
            LB=nginx
        else
            die "--lb auto: neither haproxy nor nginx is available"
        fi
    fi
    [[ "$LB" == nginx ]] && ! command -v nginx >/dev/null && die "nginx not found; apt-get install -y nginx, or use --lb haproxy"

    # Ports: 2 per instance, the LB, and a single Redis unless given (the
    # other topologies have their own, below).
    local need=$((2 * INSTANCES + 1)) ports
    [[ "$REDIS_MODE" == single && -z "$REDIS_PORT" ]] && need=$((need + 1))
    read -r -a ports <<<"$(free_ports "$need")"
    ((${#ports[@]} == need)) || die "could not find $need free loopback ports"
    local i=0 k
    DATA_PORTS=() ADMIN_PORTS=()
    for ((k = 1; k <= INSTANCES; k++)); do
        DATA_PORTS[k]=${ports[i++]}
        ADMIN_PORTS[k]=${ports[i++]}
    done
    LB_PORT=${ports[i++]}
    if [[ "$REDIS_MODE" == single ]]; then
        [[ -z "$REDIS_PORT" ]] && REDIS_PORT=${ports[i++]}
        [[ "$REDIS_PORT" =~ ^[0-9]+$ ]] || die "--redis-port must be a port number"
        mkdir -p "$DIR/redis"
    else
        load_or_pick_ha_ports
        # For the JSON's redis_port and older readers: node 1.
        REDIS_PORT=$(node_port 1)
    fi

    mkdir -p "$DIR/lb"
    [[ "$STORE" == sqlite ]] && mkdir -p "$DIR/data"
    save_state
    # shellcheck disable=SC1091
    source "$DIR/cluster.env"
    # shellcheck disable=SC1091
    [[ "$REDIS_MODE" == single ]] || source "$(ha_dir)/ports.env"

    # From here on, a failure tears down whatever was started (logs stay).
    trap 'rc=$?; if ((rc != 0)); then log "start-up failed; stopping what was started (logs kept in $DIR)"; teardown; fi' EXIT

    local out
    for ((k = 1; k <= INSTANCES; k++)); do
        write_instance_config "$k"
        if ! out=$("$BIN" check-config --config "$DIR/instance-$k.toml" 2>&1); then
            printf '%s\n' "$out" >&2
            if [[ "$STORE" == redis ]] && grep -qiE 'redis|scope|revocation_grace' <<<"$out"; then
                if [[ "$REDIS_MODE" == single ]]; then
                    log "hint: this binary does not seem to have the Redis backend yet; --store sqlite tests the script without it"
                else
                    log "hint: this binary does not seem to accept $REDIS_MODE URLs ($(store_url)); --store sqlite starts the topology without using it"
                fi
            fi
            die "$BIN rejects the generated $DIR/instance-$k.toml (see above)"
        fi
    done
    start_redis_all
    for ((k = 1; k <= INSTANCES; k++)); do
        start_instance "$k"
    done
    local deadline=$((SECONDS + TIMEOUT))
    for ((k = 1; k <= INSTANCES; k++)); do
        wait_ready "$k" "$deadline" || die "instance $k failed to start (its log: $DIR/instance-$k.log)"
    done
    log "all $INSTANCES instances are ready"
    start_lb
    # The LB answers through an instance: the OAuth probe path is a quick 404.
    local st
    deadline=$((SECONDS + 10))
    until [[ "$(http_status "http://127.0.0.1:$LB_PORT/.well-known/oauth-protected-resource")" == 404 ]]; do
        if ((SECONDS >= deadline)); then
            st=$(http_status "http://127.0.0.1:$LB_PORT/.well-known/oauth-protected-resource")
            tail_log "$DIR/lb/$LB.log"
            die "the load balancer on 127.0.0.1:$LB_PORT does not reach the instances (status $st)"
        fi
        sleep 0.2
    done
    wait_lb_sees_all
    trap - EXIT
    log "cluster is up: load balancer http://127.0.0.1:$LB_PORT"
    print_json
}

teardown() {
    [[ -n "${LB:-}" ]] && stop_lb
    local k
    for ((k = 1; k <= ${INSTANCES:-0}; k++)); do
        stop_instance "$k"
    done
    [[ -n "${REDIS_MODE:-}" ]] && stop_redis_all
    return 0
}

cmd_down() {
    [[ -n "$DIR" ]] || die "--dir is required"
    if [[ ! -f "$DIR/cluster.env" ]]; then
        log "nothing to stop in $DIR"
        return 0
    fi
    DIR="$(cd "$DIR" && pwd -P)"
    load_state
    teardown
    log "cluster in $DIR stopped"
}

need_index() {
    if ! [[ "$INDEX" =~ ^[0-9]+$ ]] || ((INDEX < 1 || INDEX > INSTANCES)); then
        die "--index must be between 1 and $INSTANCES"
    fi
}

cmd_restart_instance() {
    load_state
    need_index
    stop_instance "$INDEX" "$SIGNAL"
    start_instance "$INDEX"
    wait_ready "$INDEX" $((SECONDS + TIMEOUT)) || die "instance $INDEX failed to start (its log: $DIR/instance-$INDEX.log)"
    wait_lb_sees_all
    log "instance $INDEX restarted"
    print_json
}

cmd_stop_instance() {
    load_state
    need_index
    stop_instance "$INDEX" "$SIGNAL"
    print_json
}

cmd_start_instance() {
    load_state
    need_index
    start_instance "$INDEX"
    wait_ready "$INDEX" $((SECONDS + TIMEOUT)) || die "instance $INDEX failed to start (its log: $DIR/instance-$INDEX.log)"
    wait_lb_sees_all
    print_json
}

# --node K / --sentinel K: in range for this topology.
need_redis_target() {
    if [[ -n "$NODE" ]]; then
        if ! [[ "$NODE" =~ ^[0-9]+$ ]] || ((NODE < 1 || NODE > REDIS_NODES)); then
            die "--node must be between 1 and $REDIS_NODES (--redis $REDIS_MODE)"
        fi
    fi
    if [[ -n "$SENTINEL" ]]; then
        ((SENTINELS > 0)) || die "--sentinel: this cluster has no Sentinels (--redis $REDIS_MODE)"
        if ! [[ "$SENTINEL" =~ ^[0-9]+$ ]] || ((SENTINEL < 1 || SENTINEL > SENTINELS)); then
            die "--sentinel must be between 1 and $SENTINELS"
        fi
    fi
    [[ -z "$NODE" || -z "$SENTINEL" ]] || die "give --node or --sentinel, not both"
}

cmd_stop_redis() {
    load_state
    need_redis_target
    local k
    if [[ -n "$NODE" ]]; then
        stop_node "$NODE" "$SIGNAL"
        log "redis node $NODE (port $(node_port "$NODE")) stopped"
    elif [[ -n "$SENTINEL" ]]; then
        stop_sentinel "$SENTINEL" "$SIGNAL"
        log "sentinel $SENTINEL (port $(sentinel_port "$SENTINEL")) stopped"
    else
        # Every data node: a whole-store outage. Sentinels keep running.
        for ((k = REDIS_NODES; k >= 1; k--)); do
            stop_node "$k" "$SIGNAL"
        done
        log "redis ($REDIS_MODE): every data node stopped"
    fi
    print_json
}

cmd_start_redis() {
    load_state
    need_redis_target
    if [[ -n "$NODE" ]]; then
        start_node "$NODE"
    elif [[ -n "$SENTINEL" ]]; then
        start_sentinel "$SENTINEL"
    else
        start_redis_all
    fi
    wait_redis_healthy "$TIMEOUT"
    log "redis ($REDIS_MODE) is healthy"
    print_json
}

cmd_wait_redis() {
    load_state
    wait_redis_healthy "$TIMEOUT"
    print_json
}

# A planned failover: a replica takes over from its master, which becomes a
# replica (no write is lost).
cmd_failover_redis() {
    load_state
    need_redis_target
    local k port before deadline=$((SECONDS + TIMEOUT))
    case "$REDIS_MODE" in
        single) die "failover-redis needs --redis cluster or sentinel" ;;
        cluster)
            k=$NODE
            if [[ -z "$k" ]]; then
                for ((k = 1; k <= REDIS_NODES; k++)); do
                    [[ -n "$(node_pid "$k")" && "$(redis_role "$(node_port "$k")")" == slave ]] && break
                done
                ((k <= REDIS_NODES)) || die "no running replica to promote"
            fi
            port=$(node_port "$k")
            [[ "$(redis_role "$port")" == slave ]] || die "redis node $k is not a running replica"
            log "redis cluster: CLUSTER FAILOVER on node $k (port $port)"
            [[ "$(rcli "$port" cluster failover)" == OK ]] || die "CLUSTER FAILOVER refused by node $k"
            until [[ "$(redis_role "$port")" == master ]]; do
                ((SECONDS < deadline)) || die "node $k did not become a master within $TIMEOUT s"
                sleep 0.2
            done
            ;;
        sentinel)
            [[ -z "$NODE" ]] || die "with Sentinel the Sentinels pick the new primary; failover-redis takes no --node"
            for ((k = 1; k <= SENTINELS; k++)); do
                [[ -n "$(sentinel_pid "$k")" ]] && break
            done
            ((k <= SENTINELS)) || die "no Sentinel is running"
            port=$(sentinel_port "$k")
            before=$(rcli "$port" sentinel get-master-addr-by-name "$MASTER_NAME" | tr '\n' ':')
            log "sentinel: SENTINEL FAILOVER $MASTER_NAME through sentinel $k (primary was ${before%:})"
            [[ "$(rcli "$port" sentinel failover "$MASTER_NAME")" == OK ]] || die "SENTINEL FAILOVER refused"
            until [[ "$(rcli "$port" sentinel get-master-addr-by-name "$MASTER_NAME" | tr '\n' ':')" != "$before" ]]; do
                ((SECONDS < deadline)) || die "the Sentinels did not switch primaries within $TIMEOUT s"
                sleep 0.2
            done
            ;;
    esac
    wait_redis_healthy $((deadline - SECONDS > 0 ? deadline - SECONDS : 1))
    log "redis ($REDIS_MODE): failover done"
    print_json
}

cmd_status() {
    load_state
    print_json
}

# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------

COMMAND=${1:-}
[[ -n "$COMMAND" ]] || {
    usage >&2
    exit 2
}
shift
case "$COMMAND" in
    -h | --help | help)
        usage
        exit 0
        ;;
esac

DIR="" INSTANCES=2 REDIS_PORT="" SCOPE=instance BIN="" LB=haproxy LB_CHECK=tcp
UPSTREAM="http://127.0.0.1:8765/mcp" GRACE_MS=5000 RPM=120 REVOCATION_GRACE_MS="" TIMEOUT=60
STORE=redis INDEX="" SIGNAL=TERM REDIS_MODE=single NODE="" SENTINEL="" WAIT_REPLICAS=""

while (($#)); do
    opt=$1
    case "$opt" in
        -h | --help)
            usage
            exit 0
            ;;
        --kill)
            SIGNAL=KILL
            shift
            continue
            ;;
    esac
    (($# >= 2)) || {
        printf 'local-cluster: error: %s needs a value (see --help)\n' "$opt" >&2
        exit 2
    }
    val=$2
    shift 2
    case "$opt" in
        --dir) DIR=$val ;;
        --instances) INSTANCES=$val ;;
        --redis-port) REDIS_PORT=$val ;;
        --scope) SCOPE=$val ;;
        --bin) BIN=$val ;;
        --lb) LB=$val ;;
        --lb-check) LB_CHECK=$val ;;
        --upstream) UPSTREAM=$val ;;
        --grace-ms) GRACE_MS=$val ;;
        --rpm) RPM=$val ;;
        --revocation-grace-ms) REVOCATION_GRACE_MS=$val ;;
        --timeout) TIMEOUT=$val ;;
        --store) STORE=$val ;;
        --index) INDEX=$val ;;
        --redis) REDIS_MODE=$val ;;
        --wait-replicas) WAIT_REPLICAS=$val ;;
        --node) NODE=$val ;;
        --sentinel) SENTINEL=$val ;;
        *)
            printf 'local-cluster: error: unknown option %s (see --help)\n' "$opt" >&2
            exit 2
            ;;
    esac
done

if [[ "$COMMAND" != up && -n "$DIR" && -d "$DIR" ]]; then
    DIR="$(cd "$DIR" && pwd -P)"
fi

case "$COMMAND" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    restart-instance) cmd_restart_instance ;;
    stop-instance) cmd_stop_instance ;;
    start-instance) cmd_start_instance ;;
    stop-redis) cmd_stop_redis ;;
    start-redis) cmd_start_redis ;;
    wait-redis) cmd_wait_redis ;;
    failover-redis) cmd_failover_redis ;;
    *)
        printf 'local-cluster: error: unknown command %s\n\n' "$COMMAND" >&2
        usage >&2
        exit 2
        ;;
esac
