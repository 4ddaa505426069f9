#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 20) on its
# checked-in corpus, with cargo-fuzz on nightly (installed when missing).
# New inputs go to a scratch copy; a crash fails the run and is kept in
# fuzz/artifacts/. RUNS (optional) stops a target after that many executions.
# With FUZZ_MERGE=1 the checked-in corpus is replaced afterwards by the
# smallest set of old and new inputs that covers every edge reached (for
# long runs); files named regression-* are always kept.
# With FUZZ_IF_CHANGED=1 (the test script) nothing is built or run when the
# code the targets cover is what the last passing run fuzzed: its digest is
# kept in fuzz/fuzzed.sha256, which a passing run rewrites (commit it).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
runs=${2:-0}
# What the targets reach: the registry's framing, parser and tokens, every
# type in proto, the data plane's snapshot install (its whole crate, which
# install compiles into a table), the targets, corpus and locked versions.
covered() {
  git ls-files -z proto control-plane/src/protocol control-plane/src/registry/auth.rs \
    data-plane/src fuzz Cargo.lock ':!fuzz/fuzzed.sha256' |
    sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}
digest=$(covered)
if [ "${FUZZ_IF_CHANGED:-0}" = 1 ] && [ "$(cat fuzz/fuzzed.sha256 2>/dev/null)" = "$digest" ]; then
  echo "fuzz: the covered code is what the last passing run fuzzed ($digest); skipped" >&2
  exit 0
fi
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# No sanitizer: the code under test is safe Rust, and this builds and runs
# several times faster. Debug assertions stay on.
cargo +nightly fuzz build -s none
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in line_protocol json_payloads snapshot duration; do
  mkdir -p "fuzz/corpus/$target" "$scratch/$target"
  extra=()
  [ -f "fuzz/dict/$target.dict" ] && extra+=("-dict=fuzz/dict/$target.dict")
  [ "$runs" -gt 0 ] && extra+=("-runs=$runs")
  echo "fuzz: $target for ${seconds}s" >&2
  cargo +nightly fuzz run -s none "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 "${extra[@]}"
  if [ "${FUZZ_MERGE:-0}" = 1 ]; then
    min="$scratch/min-$target"
    mkdir -p "$min"
    cargo +nightly fuzz run -s none "$target" "$min" "fuzz/corpus/$target" "$scratch/$target" -- \
      -set_cover_merge=1 -use_counters=0
    find "fuzz/corpus/$target" -type f ! -name 'regression-*' -delete
    cp -n "$min"/* "fuzz/corpus/$target/"
  fi
done
echo "$digest" > fuzz/fuzzed.sha256
