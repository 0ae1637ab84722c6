#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (idempotent),
# then runs all of it: formatting, lints, Rust unit and integration tests, a
# short run of every fuzz target, smoke runs of the pre-auth, flood, soak and
# fleet benchmarks, and
# the Python/Node tests with the official MCP SDKs.
set -euo pipefail
cd "$(dirname "$0")/.."

# A clean clone gains nothing from incremental compilation, and its
# caches double the debug build's size on disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# A full run writes about 8 GB under target/ (debug build, fuzz tools,
# benchmark work files); say so up front rather than fail mid-build.
free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
if [ "${free_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
    echo "warning: only $((free_kb / 1024)) MB free on $(df -P . | awk 'NR==2 {print $6}'); the suite needs about 8 GB under target/" >&2
fi

echo "==> installing test dependencies"
scripts/test-deps.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings

echo "==> cargo test"
cargo test --quiet

echo "==> Redis failover tests (Cluster and Sentinel, docs/redis.md)"
scripts/test-redis-ha.sh

echo "==> fuzz smoke (AFL++ on the stable toolchain, a few seconds per target; docs/fuzzing.md)"
scripts/fuzz-smoke.sh

echo "==> benchmark smokes on the debug build: pre-auth bounds and token flood (benches/scale.sh), soak (benches/soak.sh), cluster limiter (benches/cluster_limit.sh, benches/lease.rs)"
PROFILE=debug SMOKE=1 benches/scale.sh
PROFILE=debug SMOKE=1 benches/soak.sh
PROFILE=debug SMOKE=1 benches/cluster_limit.sh >/dev/null
# harness = false: `cargo test` runs the bench's main on the debug build.
SMOKE=1 cargo test --quiet --bench lease

echo "==> fleet model smoke (benches/fleet.rs: 1 and 3 instances, tiny store; docs/scaling.md)"
FLEET_SMOKE=1 cargo bench --quiet --profile dev --bench fleet

echo "==> SDK tests (Python mcp client/server, TypeScript SDK, server-everything)"
cargo build --quiet
.venv/bin/pytest tests/py -q
