#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 600 s each).
#   fuzz/run.sh [seconds-per-target]
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The stable toolchain's
# sanitizer runtimes are used through RUSTC_BOOTSTRAP, so no nightly is needed.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
for target in client_request ingest_ticks ws_frames http_request; do
  mkdir -p "artifacts/$target" "work/$target"
  echo "== $target for ${secs}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "work/$target" "corpus/$target" \
    -- -max_total_time="$secs" -max_len=8192 -print_final_stats=1 2>&1 | tail -n 25 | tee "work/$target.log"
done
