#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (idempotent),
# then runs all of it: formatting, lints, Rust unit and integration tests, and
# the Python/Node tests with the official MCP SDKs.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> installing test dependencies"
scripts/test-deps.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check

echo "==> cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings

echo "==> cargo test"
cargo test --quiet

echo "==> SDK tests (Python mcp client/server, TypeScript SDK, server-everything)"
cargo build --quiet
.venv/bin/pytest tests/py -q
