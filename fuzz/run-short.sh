#!/usr/bin/env bash
# The short fuzz run CI can afford: builds the targets, then runs each in turn for
# FUZZ_SECONDS (default 25) from its seed corpus and dictionary, and fails on the first
# finding (a panic, a broken assertion, a timeout, running out of memory). Installs cargo-fuzz
# when it is missing. Arguments name targets to run instead of all. See docs/fuzzing.md.
#
# Only a stable toolchain is at hand: RUSTC_BOOTSTRAP=1 lets it take the `-Z` flags cargo-fuzz
# passes (the sanitizer, the coverage instrumentation).
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-25}"
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(schedule_parse job_validation api_request)
fi
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz --version 0.13.2
fi

echo "== fuzz build"
cargo fuzz build

for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds} s"
  # New inputs go to work/ (not kept in git); corpus/ holds the seeds and is only read.
  mkdir -p "work/$target"
  cargo fuzz run "$target" "work/$target" "corpus/$target" -- \
    -dict="dictionaries/$target.dict" \
    -max_total_time="$seconds" \
    -timeout=10 \
    -rss_limit_mb=2048 \
    -print_final_stats=1
done
