#!/usr/bin/env bash
# A/B of durable publishes: two builds of the broker, each with a fresh data dir, alternating
# A, B (REPS times, default 3) with 100 and 10 publishers that each wait for their ack
# (window 1, 128 B, 5 s). The generator is B's `fanfare bench`. Not part of CI.
#
#   bench/ab-durable.sh OLD_BIN NEW_BIN [RESULTS.jsonl]
#
# DATA (default /var/tmp/fanfare-ab-durable) must be on a filesystem with O_DIRECT.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2 out=${3:-/tmp/fanfare-ab-durable.jsonl}
REPS=${REPS:-3} DATA=${DATA:-/var/tmp/fanfare-ab-durable}
source bench/lib.sh
pick_cpus
: > "$out"
for n in 100 10; do
  for rep in $(seq "$REPS"); do
    for build in A B; do
      bin=$A; [ "$build" = B ] && bin=$B
      free_port; rm -rf "$DATA"
      taskset -c "$BROKER_CPUS" "$bin" serve --no-pin --shards 1 --listen 127.0.0.1:$port \
        --data-dir "$DATA" >/dev/null 2>&1 &
      pid=$!
      for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
      r=$(taskset -c "$GEN_CPUS" "$B" bench --url ws://127.0.0.1:$port/v1/ws --json --publishers $n \
            --subscribers 0 --rate 0 --window 1 --duration 5 --warmup 1 --broker-pid $pid 2>/dev/null || echo '{}')
      kill $pid; wait $pid 2>/dev/null || true
      python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(publishers=int(sys.argv[2]), build=sys.argv[3], rep=int(sys.argv[4])); print(json.dumps(r))' \
        "$r" $n $build $rep >> "$out"
    done
  done
done
rm -rf "$DATA"
python3 bench/report.py ab-durable "$out"
