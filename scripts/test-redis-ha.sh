#!/usr/bin/env bash
# The Redis high-availability failover tests (docs/redis.md): a real Redis
# Cluster (3 primaries + 3 replicas) and a real Sentinel group (1 primary,
# 2 replicas, 3 Sentinels) on free loopback ports; each test kills or freezes
# a primary under light load and prints how long requests failed with 503.
# About 35 s once built. One test at a time, so that the failover durations
# printed are not skewed by the others.
#
# Environment: PORTCULLIS_REDIS_SERVER / PORTCULLIS_REDIS_CLI pick other
# server binaries (e.g. valkey-server / valkey-cli; Valkey is not packaged in
# Debian 12 and is untested).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --quiet --test it redis_ha -- --ignored --nocapture --test-threads 1 2>&1 \
    | grep -Ev '^(running|$)'
