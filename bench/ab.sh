#!/usr/bin/env bash
# A/B: two builds of the Fanfare broker on the same scenarios, alternating runs, one generator.
#
#   bench/ab.sh OLD_BIN NEW_BIN            # e.g. a build of the previous commit and this one
#   REPS=5 ONLY='1->1' bench/ab.sh A B
#
# Each run starts a fresh broker pinned to BROKER_CPUS (default 0) with one shard, runs the
# generator (NEW_BIN's `fanfare bench`, or GEN_BIN) on the other CPUs, and records delivered
# messages per broker CPU-second (broker utime + stime from /proc at the measured window's
# edges, when the generator supports `--broker-pid`; around the run otherwise). Runs
# alternate A, B, A, B, ... so drift on a shared machine hits both. Prints the median per build
# and the ratio B/A per scenario; raw JSON lines go to $RESULTS (default /tmp/fanfare-ab.jsonl).
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bench/ab.sh OLD_BIN NEW_BIN" >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2"); GEN_BIN=${GEN_BIN:-$B}
REPS=${REPS:-3}; DURATION=${DURATION:-5}; WARMUP=${WARMUP:-1}; ONLY=${ONLY:-.}
BROKER_CPUS=${BROKER_CPUS:-0}
GEN_CPUS=${GEN_CPUS:-$(seq 0 $(($(nproc) - 1)) | grep -vx "$BROKER_CPUS" | paste -sd, || true)}
[ -n "$GEN_CPUS" ] || GEN_CPUS=$BROKER_CPUS
results=${RESULTS:-/tmp/fanfare-ab.jsonl}
: > "$results"
source bench/lib.sh
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true' EXIT

scenarios=(
  "1->1|--publishers 1 --subscribers 1 --topics 1 --payload 128 --rate 0 --window 256"
  "1->100|--publishers 1 --subscribers 100 --topics 1 --payload 128 --rate 0 --window 256"
  "1->1000|--publishers 1 --subscribers 1000 --topics 1 --payload 128 --rate 0 --window 256"
  "many topics|--publishers 100 --subscribers 10000 --topics 1000 --payload 128 --rate 0 --window 16"
  "h2 1->1000|--transport h2 --publishers 1 --subscribers 1000 --topics 1 --payload 128 --rate 0 --window 256"
)

one() {
  local bin=$1 label=$2 name=$3; shift 3
  free_port
  taskset -c "$BROKER_CPUS" "$bin" serve --no-pin --shards 1 --listen 127.0.0.1:$port \
    >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
  local c0 c1 out
  c0=$(awk '{print $14 + $15}' /proc/$pid/stat)
  out=$(taskset -c "$GEN_CPUS" "$GEN_BIN" bench --url ws://127.0.0.1:$port/v1/ws --json \
          --duration "$DURATION" --warmup "$WARMUP" --broker-pid "$pid" "$@" 2>/dev/null || echo '{}')
  c1=$(awk '{print $14 + $15}' /proc/$pid/stat)
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  # Broker CPU inside the measured window (read by the generator), else around the run.
  python3 -c 'import json,sys; r=json.loads(sys.argv[1] or "{}"); w=r.get("broker_cpu_seconds_window"); r.update(build=sys.argv[2], scenario=sys.argv[3], broker_cpu_s=w if w is not None else (float(sys.argv[5])-float(sys.argv[4]))/100); print(json.dumps(r))' \
    "$out" "$label" "$name" "$c0" "$c1" >> "$results"
}

for s in "${scenarios[@]}"; do
  name=${s%%|*}; args=${s#*|}
  [[ "$name" =~ $ONLY ]] || continue
  for _ in $(seq "$REPS"); do
    # shellcheck disable=SC2086
    one "$A" A "$name" $args
    # shellcheck disable=SC2086
    one "$B" B "$name" $args
  done
  echo "  $name done" >&2
done

python3 bench/report.py ab "$results"
