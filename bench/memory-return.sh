#!/usr/bin/env bash
# Does a storm's memory come back? RSS of a fresh broker at idle, then a few seconds after a
# storm of N subscriber connections came and went (twice), per run; issue 15's figure is the
# RSS after the storm relative to the idle RSS before it (target: within 20%).
#
#   bench/memory-return.sh                         # 5 runs of 10,000 connections
#   RUNS=10 N=10000 BROKER_BIN=/tmp/old bench/memory-return.sh
#
# Each run starts a fresh broker (one shard, pinned to BROKER_CPUS, default 0), waits
# SETTLE seconds (default 3) and reads VmRSS, RssAnon and RssFile from /proc; runs
# `fanfare bench` (one publisher at 10 msg/s, N subscribers connecting 256 at a time, 2 s)
# on GEN_CPUS; waits AFTER seconds (default 4) once it exited and reads them again; twice.
# Raw JSON lines go to RESULTS (default /tmp/fanfare-memory-return.jsonl), the table
# (bench/report.py memory) to stdout. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}; N=${N:-10000}; SETTLE=${SETTLE:-3}; AFTER=${AFTER:-4}
BROKER_CPUS=${BROKER_CPUS:-0}
GEN_CPUS=${GEN_CPUS:-$(seq 0 $(($(nproc) - 1)) | grep -vx "$BROKER_CPUS" | paste -sd, || true)}
[ -n "$GEN_CPUS" ] || GEN_CPUS=$BROKER_CPUS
results=${RESULTS:-/tmp/fanfare-memory-return.jsonl}
: > "$results"
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -q
bin=$PWD/target/release/fanfare
broker_bin=${BROKER_BIN:-$bin}
source bench/lib.sh
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true' EXIT

mem() { awk '/^(VmRSS|RssAnon|RssFile):/ {printf "\"%s\": %s, ", $1, $2}' /proc/"$pid"/status | sed 's/:"/"/g; s/, $//'; }

for run in $(seq "$RUNS"); do
  free_port
  taskset -c "$BROKER_CPUS" "$broker_bin" serve --no-pin --shards 1 --listen 127.0.0.1:$port \
    >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
  sleep "$SETTLE"
  idle=$(mem)
  after=()
  for storm in 1 2; do
    taskset -c "$GEN_CPUS" "$bin" bench --url ws://127.0.0.1:$port/v1/ws --threads 1 \
      --duration 2 --warmup 0 --publishers 1 --subscribers "$N" --topics 1 --payload 128 \
      --rate 10 --connect-concurrency 256 >/dev/null 2>&1 || echo "storm $storm failed" >&2
    sleep "$AFTER"
    after+=("$(mem)")
  done
  echo "{\"run\": $run, \"connections\": $N, \"idle\": {$idle}, \"after\": [{${after[0]}}, {${after[1]}}]}" >> "$results"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  echo "  run $run done" >&2
done
python3 bench/report.py memory "$results"
