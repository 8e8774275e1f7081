#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 30) on the committed seeds.
#   fuzz/run.sh 30          CI smoke
#   fuzz/run.sh 600         the ten-minute runs a release wants
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -euo pipefail
secs=${1:-30}
cd "$(dirname "$0")/.."
targets=(client_msg server_msg link_msg ws_frame ws_upgrade sse_event_id framing http_request token log_recover)
cargo +nightly fuzz build -O 2>&1 | tail -n 3
for t in "${targets[@]}"; do
  work=$(mktemp -d)
  cp -r "fuzz/corpus/$t/." "$work/"
  echo "== $t for ${secs}s"
  cargo +nightly fuzz run -O "$t" "$work" -- -max_total_time="$secs" -max_len=65536 -print_final_stats=1 2>&1 \
    | grep -E "stat::number_of_executed_units|Done|ERROR|panicked|SUMMARY" || true
  # cargo fuzz exits non-zero when it finds a crash; repeat the run's verdict explicitly.
  if ls fuzz/artifacts/"$t"/crash-* >/dev/null 2>&1; then
    echo "fuzz target $t found a crash: see fuzz/artifacts/$t" >&2
    exit 1
  fi
  rm -rf "$work"
done
