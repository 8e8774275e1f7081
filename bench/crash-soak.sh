#!/usr/bin/env bash
# Crash soak: the crash test of the real binary (tests/crash.rs), built in release and run for
# many cycles: concurrent acknowledged WebSocket publishers on 4 topics over 2 shards, a live
# subscriber per topic, the broker stopped at a random moment (kill -9 only, or SIGTERM and
# kill -9 mixed) and restarted on the same data dir, every topic read back and checked after
# each restart. Prints the totals; exits non-zero when a promise broke (the test's output
# names the seed that replays the run, and keeps the data dir and the broker's log).
#
#   bench/crash-soak.sh                  # 200 cycles, kill -9 only
#   CYCLES=50 KILL=mixed bench/crash-soak.sh
#
# Environment: CYCLES (default 200), KILL (kill9 | mixed | term, default kill9), LOAD_MS
# (default 2000-4000), SEED (default: the clock), GENERATION (cycles per set of topics, default
# 10: read-backs stay short; every set is read back once more at the end), SEGMENT_BYTES
# (default 4194304), FSYNC (the broker's --fsync, default always), CRASH_DIR (default target/tmp; a real filesystem, not tmpfs), OUT (the
# test's whole output, default /tmp/fanfare-crash-soak.log). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
export CRASH_CYCLES=${CYCLES:-200}
export CRASH_KILL=${KILL:-kill9}
export CRASH_LOAD_MS=${LOAD_MS:-2000-4000}
export CRASH_GENERATION=${GENERATION:-10}
export CRASH_SEGMENT_BYTES=${SEGMENT_BYTES:-4194304}
export CRASH_SEED=${SEED:-}
export CRASH_FSYNC=${FSYNC:-always}
[ -n "${CRASH_DIR:-}" ] && export CRASH_DIR
out=${OUT:-/tmp/fanfare-crash-soak.log}

cargo test --release --test crash --no-run -q
set +e
cargo test --release --test crash -q -- --nocapture 2>&1 | tee "$out" \
  | grep -E '^(crash test seed|cycle [0-9]+:|final|crash-summary)'
status=${PIPESTATUS[0]}
set -e

summary=$(grep '^crash-summary:' "$out" || true)
if [ -z "$summary" ]; then
  echo "no summary: the test did not finish (see $out)" >&2
  exit 1
fi
field() { sed -E "s/.* $1=([0-9]+).*/\1/" <<<"$summary"; }
echo
echo "crash soak: ${CRASH_CYCLES} cycles requested, stops: ${CRASH_KILL}, load ${CRASH_LOAD_MS} ms, --fsync ${CRASH_FSYNC}, segments ${CRASH_SEGMENT_BYTES} B"
printf '%-34s %s\n' \
  "seed" "$(field seed)" \
  "cycles (restarts under load)" "$(field cycles)" \
  "of them kill -9" "$(field kills)" \
  "publishes acknowledged" "$(field acked)" \
  "unacknowledged, kept (once)" "$(field unacked_kept)" \
  "acknowledged, lost" "$(field lost)" \
  "epoch changes" "$(field epoch_changes)" \
  "discontinuities" "$(field discontinuities)" \
  "received live, then lost" "$(field delivered_lost)" \
  "duplicates" "$(field duplicates)" \
  "other failures" "$(field other)" \
  "seconds" "$(field seconds)"
echo "full output: $out"
exit "$status"
