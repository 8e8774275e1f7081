#!/usr/bin/env bash
# Fan-out latency while the shard does background work: two builds, alternating runs.
#
#   bench/background.sh OLD_BIN NEW_BIN
#   REPS=5 RATE=20000 bench/background.sh A B
#
# Each run starts a fresh broker with one shard and a data dir (DATA, default
# target/bench-background: a real filesystem, not tmpfs), pinned to BROKER_CPUS (default 0),
# stores ARCHIVE messages of 1 KiB in the topic bench/t1 (default 200,000: all but the last
# 1,000 are only on disk), then measures fixed-rate fan-out (`fanfare bench`: 1 publisher,
# SUBS subscribers (default 100), RATE messages/s (default 10,000), 128 B, for DURATION s,
# default 10) in two scenarios:
#
# - quiet: nothing else runs;
# - background: beside it, READERS subscribers (default 2) read the archive from its first
#   sequence, over and over (catch-up reads from the log, a page of 1,000 at a time), and waves
#   of CHURN connections (default 400) are opened and closed every second (each wave makes the
#   shard give memory back to the system, `malloc_trim`).
#
# Runs alternate A, B, A, B, ... Raw JSON lines (the generator's, plus build, scenario and the
# background readers' message count) go to $RESULTS (default /tmp/fanfare-background.jsonl);
# `python3 bench/report.py background FILE` prints the medians and B/A ratios of the delivery
# latency percentiles. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bench/background.sh OLD_BIN NEW_BIN" >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2"); GEN_BIN=${GEN_BIN:-$B}
REPS=${REPS:-3}; DURATION=${DURATION:-10}; RATE=${RATE:-10000}; SUBS=${SUBS:-100}
ARCHIVE=${ARCHIVE:-200000}; READERS=${READERS:-2}; CHURN=${CHURN:-400}
DATA=${DATA:-$PWD/target/bench-background}
results=${RESULTS:-/tmp/fanfare-background.jsonl}
: > "$results"
source bench/lib.sh
pick_cpus
mkdir -p "$DATA"
pid=""
bg=()
cleanup() {
  for p in "${bg[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  wait 2>/dev/null || true
}
trap cleanup EXIT

# Opens CHURN connections at once, holds them a moment, closes them; once a second.
churn() {
  python3 - "$1" "$CHURN" <<'EOF'
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
while True:
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        except OSError:
            break
    time.sleep(0.2)
    for s in socks:
        s.close()
    time.sleep(0.8)
EOF
}

# Reads the archive from its first sequence, over and over; counts what it read in $1.
reader() {
  local url=$1 out=$2 n=0 got
  while true; do
    got=$(taskset -c "$GEN_CPUS" "$GEN_BIN" sub bench t1 --from "$epoch-1" --count "$stored" \
            --url "$url" 2>/dev/null | wc -l || true)
    n=$((n + got))
    echo "$n" > "$out"
  done
}

one() {
  local bin=$1 label=$2 name=$3
  free_port
  local url=ws://127.0.0.1:$port/v1/ws dir=$DATA/$label
  rm -rf "$dir"; mkdir -p "$dir"
  taskset -c "$BROKER_CPUS" "$bin" serve --no-pin --shards 1 --listen 127.0.0.1:$port \
    --data-dir "$dir" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
  # The archive: ARCHIVE messages of 1 KiB in bench/t1 (and as many in bench/t0, the topic
  # measured next: its subscribers start from the latest), in 4 s.
  taskset -c "$GEN_CPUS" "$GEN_BIN" bench --url "$url" --json --publishers 4 --subscribers 0 \
    --topics 2 --payload 1024 --rate $((ARCHIVE / 2)) --window 256 --duration 4 --warmup 0 \
    >/dev/null 2>&1 || true
  local last
  last=$("$GEN_BIN" sub bench t1 --from last:1 --count 1 --url "$url" | cut -d' ' -f1)
  epoch=${last%-*} stored=${last#*-}
  bg=()
  local counts=$DATA/read-$label
  rm -f "$counts"*
  if [ "$name" = background ]; then
    for i in $(seq "$READERS"); do
      reader "$url" "$counts.$i" & bg+=($!)
    done
    churn "$port" & bg+=($!)
  fi
  local out
  out=$(taskset -c "$GEN_CPUS" "$GEN_BIN" bench --url "$url" --json --publishers 1 \
          --subscribers "$SUBS" --topics 1 --payload 128 --rate "$RATE" --window 256 \
          --duration "$DURATION" --warmup 1 --broker-pid "$pid" 2>/dev/null || echo '{}')
  local read=0 f
  for f in "$counts".*; do [ -f "$f" ] && read=$((read + $(cat "$f"))); done
  if [ ${#bg[@]} -gt 0 ]; then
    for p in "${bg[@]}"; do kill "$p" 2>/dev/null || true; pkill -P "$p" 2>/dev/null || true; done
    wait "${bg[@]}" 2>/dev/null || true
  fi
  bg=()
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  python3 -c 'import json,sys; r=json.loads(sys.argv[1] or "{}"); r.update(build=sys.argv[2], scenario=sys.argv[3], archive_read=int(sys.argv[4])); print(json.dumps(r))' \
    "$out" "$label" "$name" "$read" >> "$results"
}

for name in quiet background; do
  for _ in $(seq "$REPS"); do
    one "$A" A "$name"
    one "$B" B "$name"
  done
  echo "  $name done" >&2
done

python3 bench/report.py background "$results"
