#!/usr/bin/env bash
# Runs fan-out scenarios against a release `fanfare serve` pinned to CPU 0, with the load
# generator pinned to CPU 1, and prints a markdown table (delivered messages per wall second
# and per broker CPU-second, latency percentiles, and loss counters).
#   bench/local.sh            (takes about a minute)
# Not part of CI. bench/compare.sh runs NATS and Redis side by side with Fanfare.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=target/release/fanfare
port=$((20000 + RANDOM % 20000))
taskset -c 0 "$bin" serve --no-pin --shards 1 --listen 127.0.0.1:$port > /tmp/fanfare-local.log 2>&1 &
srv=$!
trap 'kill -INT $srv 2>/dev/null; wait $srv 2>/dev/null || true' EXIT
sleep 1
cpu() { awk '{print $14 + $15}' /proc/$srv/stat; }
echo "| scenario | delivered/s | delivered per broker CPU-s | p50 us | p99 us | p99.9 us | max us | gaps | dups | generator CPU |"
echo "|---|---|---|---|---|---|---|---|---|---|"
run() {
  local name=$1; shift
  local c0; c0=$(cpu)
  local out; out=$(taskset -c 1 "$bin" bench --url ws://127.0.0.1:$port/v1/ws --json --threads 1 --duration 5 --warmup 1 "$@" 2>/dev/null)
  local c1; c1=$(cpu)
  python3 - "$name" "$out" "$c0" "$c1" <<'PY'
import json, sys
name, out, c0, c1 = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
broker_cpu = (c1 - c0) / 100.0
per_cpu = out["delivered"] / broker_cpu if broker_cpu > 0 else float("nan")
l = out["latency_us"]
sat = " (saturated)" if out["generator_saturated"] else ""
print(f"| {name} | {out['delivered_per_sec']:,.0f} | {per_cpu:,.0f} | {l['p50']:.0f} | {l['p99']:.0f} | {l['p999']:.0f} | {l['max']:.0f} | {out['gaps']} | {out['duplicates']} | {out['generator_cpu_share']*100:.0f}%{sat} |")
PY
}
run "1 pub -> 1 sub, 1,000 msg/s" --publishers 1 --subscribers 1 --rate 1000
run "1 pub -> 100 subs, 1,000 msg/s" --publishers 1 --subscribers 100 --rate 1000
run "1 pub -> 1,000 subs, 1,000 msg/s" --publishers 1 --subscribers 1000 --rate 1000
run "1 pub -> 100 subs, 10,000 msg/s" --publishers 1 --subscribers 100 --rate 10000
run "1 pub -> 100 subs, max rate" --publishers 1 --subscribers 100 --rate 0 --window 256
run "100 pubs, 1,000 topics x 10 subs, 10,000 msg/s" --publishers 100 --subscribers 10000 --topics 1000 --rate 10000
