#!/usr/bin/env bash
# Fuzzes the ext_authz decision path (CheckRequest bytes -> CheckResponse,
# fuzz/src/lib.rs) for SECONDS (default 60) from the committed corpus, and
# fails on any crash or broken invariant; the input is then saved under
# fuzz/artifacts/check_request/ and the command that replays it printed.
# Installs cargo-fuzz if missing. RUSTC_BOOTSTRAP=1 lets the stable
# toolchain take the `-Z` flags cargo-fuzz passes.
#
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
version=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $version" ]; then
  cargo install cargo-fuzz --version "$version" --locked
fi
# libFuzzer is C++, built by libfuzzer-sys.
if ! command -v c++ >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq g++ >/dev/null
fi
# The fuzz crate is its own workspace: its tests (each seed gets the answer
# it was written for; the committed corpus is the seeds) run here, in a
# debug build: a release one took 12 of CI's minutes for a second's tests.
cargo test --locked --manifest-path fuzz/Cargo.toml
# New inputs go to a scratch directory (libFuzzer writes to the first one),
# so that a run leaves the committed seeds as they are.
found=$(mktemp -d)
trap 'rm -rf "$found"' EXIT
export RUSTC_BOOTSTRAP=1
# No AddressSanitizer by default: countersign forbids unsafe code and the
# oracle checks panics and answers, while ASan instruments every crate of
# an 18-minute build that CI pays for one minute of fuzzing.
# `FUZZ_SANITIZER=address scripts/fuzz.sh 3600` for long runs.
cargo fuzz run --sanitizer "${FUZZ_SANITIZER:-none}" check_request "$found" fuzz/corpus/check_request -- \
  -max_total_time="$seconds" -timeout=10 -print_final_stats=1
