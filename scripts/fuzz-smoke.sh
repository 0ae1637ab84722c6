#!/usr/bin/env bash
# Short coverage-guided fuzz run of every target in fuzz/ (docs/fuzzing.md),
# for the test command: SECS seconds of AFL++ each, starting from the
# committed corpus, failing when any target crashes or hangs.
#
# Installs what it needs, idempotently and without a nightly toolchain:
#   - cargo-afl, pinned (CARGO_AFL_VERSION), into $FUZZ_TOOLS/bin with
#     `cargo install --locked` (crates.io), only when missing or another version;
#   - AFL++ itself, built from the source cargo-afl ships (`cargo afl config
#     --build`: make and a C compiler, no download), into
#     $FUZZ_TOOLS/share, only when not built for this rustc yet.
# Both live under target/ by default, so CI's cache of target/ keeps them.
#
# Environment: SECS=8 (per target)  TARGETS="fast_head h1_response sse
#   jsonrpc token session"  FUZZ_TOOLS=target/fuzz-tools  OUT=target/fuzz-out
#   JOBS (cargo build jobs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARGO_AFL_VERSION=0.18.2
SECS=${SECS:-8}
TARGETS=${TARGETS:-fast_head h1_response sse jsonrpc token session}
FUZZ_TOOLS=${FUZZ_TOOLS:-$ROOT/target/fuzz-tools}
OUT=${OUT:-$ROOT/target/fuzz-out}
export PATH="$FUZZ_TOOLS/bin:$PATH"
# cargo-afl keeps AFL++ under $XDG_DATA_HOME/afl.rs/rustc-<version>/.
export XDG_DATA_HOME="$FUZZ_TOOLS/share"
export CARGO_TARGET_DIR="$ROOT/target/afl"

say() { printf '[fuzz-smoke] %s\n' "$*"; }
die() { printf '[fuzz-smoke] error: %s\n' "$*" >&2; exit 1; }

command -v make >/dev/null 2>&1 && command -v cc >/dev/null 2>&1 || {
    command -v apt-get >/dev/null 2>&1 || die "AFL++ needs make and a C compiler"
    say "apt: installing make gcc"
    apt-get update -qq </dev/null >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends make gcc </dev/null >/dev/null
}

if [ "$(cargo-afl afl --version 2>/dev/null | awk '{print $2}')" != "$CARGO_AFL_VERSION" ]; then
    say "cargo install cargo-afl $CARGO_AFL_VERSION into $FUZZ_TOOLS"
    cargo install --quiet --locked cargo-afl --version "=$CARGO_AFL_VERSION" --root "$FUZZ_TOOLS" </dev/null
fi
if ! compgen -G "$XDG_DATA_HOME/afl.rs/rustc-*/afl.rs-$CARGO_AFL_VERSION/afl/bin/afl-fuzz" >/dev/null \
    || ! ls "$XDG_DATA_HOME"/afl.rs/rustc-"$(rustc --version | awk '{print $2}')"-*/afl.rs-"$CARGO_AFL_VERSION"/afl/bin/afl-fuzz >/dev/null 2>&1; then
    say "building AFL++ (cargo afl config --build)"
    cargo afl config --build </dev/null >/dev/null
fi

say "building the fuzz targets (fuzz/, instrumented release build)"
(cd "$ROOT/fuzz" && cargo afl build --release --quiet ${JOBS:+--jobs "$JOBS"} --bins) </dev/null

# AFL++'s checks that concern a dedicated fuzzing machine, not a test run:
# no CPU pinning on a shared machine, a core_pattern it does not own, no UI.
export AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_QUIET=1 AFL_NO_STARTUP_CALIBRATION=1

failed=()
printf '%-12s %10s %8s %8s %8s %8s\n' target execs paths edges crashes hangs
for t in $TARGETS; do
    rm -rf "${OUT:?}/$t"
    mkdir -p "$OUT/$t"
    # -V: stop after SECS; -t: a single input taking 1 s is a hang here.
    dict=()
    case $t in
        fast_head | h1_response) dict=(-x "$ROOT/fuzz/dict/http.dict") ;;
        jsonrpc | session) dict=(-x "$ROOT/fuzz/dict/json.dict") ;;
    esac
    cargo afl fuzz -V "$SECS" -t 1000 "${dict[@]}" -i "$ROOT/fuzz/corpus/$t" -o "$OUT/$t" "$CARGO_TARGET_DIR/release/$t" \
        </dev/null >"$OUT/$t/afl.log" 2>&1 || { failed+=("$t: afl-fuzz failed (see $OUT/$t/afl.log)"); tail -5 "$OUT/$t/afl.log" >&2; continue; }
    stats="$OUT/$t/default/fuzzer_stats"
    [ -f "$stats" ] || { failed+=("$t: no fuzzer_stats"); continue; }
    get() { awk -F': *' -v k="$1" '$1 ~ "^"k" *$" {print $2}' "$stats"; }
    crashes=$(find "$OUT/$t/default/crashes" -type f ! -name README.txt 2>/dev/null | wc -l)
    hangs=$(find "$OUT/$t/default/hangs" -type f 2>/dev/null | wc -l)
    printf '%-12s %10s %8s %8s %8s %8s\n' "$t" "$(get execs_done)" "$(get corpus_count)" "$(get edges_found)" "$crashes" "$hangs"
    if [ "$crashes" -gt 0 ] || [ "$hangs" -gt 0 ]; then
        failed+=("$t: $crashes crashes, $hangs hangs")
        for f in $(find "$OUT/$t/default/crashes" "$OUT/$t/default/hangs" -type f ! -name README.txt | head -3); do
            say "$t input $f:"
            python3 -c 'import sys; print(repr(open(sys.argv[1], "rb").read()[:600]))' "$f" >&2
            "$CARGO_TARGET_DIR/release/$t" <"$f" 2>&1 | grep -m1 -A1 "panicked" >&2 || true
        done
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    say "FAILED:"
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
say "all targets ran ${SECS} s without a crash"
