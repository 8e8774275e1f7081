#!/usr/bin/env bash
# Fanfare side by side with NATS and Redis on this machine, with one tool and one method.
#
#   bench/compare.sh                 # all scenarios, ~10 minutes; markdown on stdout
#   RESULTS=bench/results/NAME.jsonl bench/compare.sh   # then name it in a table marker of
#                                                       # docs/benchmarks.md: report.py page
#
# Each broker runs pinned to BROKER_CPUS (default 0), alone; `fanfare bench` runs pinned to
# GEN_CPUS (default: every other CPU). Every scenario runs REPS times (default 3), each on a
# fresh broker, the brokers taking turns run by run; the generator reads the broker's CPU time (utime + stime from /proc) at the
# two edges of the measured window (`--broker-pid`), the same window its deliveries are
# counted in (and how much of it was kernel time), and its own CPU in that window (a run above
# 90% of its cores is flagged generator-bound). The tables (bench/report.py) give the median with min-max. Every broker
# gets the same in-flight window per publisher and the same rule: a publisher sends while
# fewer than `--window` of its publishes are unacknowledged. Installs redis-server,
# nats-server and iperf3 with apt-get when missing. Not part of CI.
#
# MODE=whole: the whole machine instead: every broker at its own defaults on all CPUs (Fanfare:
# one pinned shard per CPU; NATS: GOMAXPROCS = CPUs; Redis: its one thread), the generator
# unpinned beside it with a thread per CPU. Broker CPU is still read from /proc (all threads).
#
# Environment: MODE, BROKER_CPUS, GEN_CPUS, DURATION (s, default 5), WARMUP (s, default 1),
# REPS (default 3), ONLY (a regex over scenario names), LARGE_N (the largest footprint run's
# connections, default: what the open-files limit allows), BROKERS (default "fanfare nats redis"),
# RESULTS (the raw JSON lines, default /tmp/fanfare-compare.jsonl; keep the ones
# docs/benchmarks.md quotes in bench/results/).
set -euo pipefail
cd "$(dirname "$0")/.."

ncpu=$(nproc)
BROKER_CPUS=${BROKER_CPUS:-0}
if [ -z "${GEN_CPUS:-}" ]; then
  GEN_CPUS=$(seq -s, 0 $((ncpu - 1)) | tr ',' '\n' | grep -vx "$BROKER_CPUS" | paste -sd, || true)
  [ -n "$GEN_CPUS" ] || GEN_CPUS=$BROKER_CPUS
fi
DURATION=${DURATION:-5}
REPS=${REPS:-3}
WARMUP=${WARMUP:-1}
ONLY=${ONLY:-.}
BROKERS=${BROKERS:-"fanfare nats redis"}
gen_threads=$(echo "$GEN_CPUS" | tr ',' '\n' | wc -l)
broker_threads=$(echo "$BROKER_CPUS" | tr ',' '\n' | wc -l)
MODE=${MODE:-pinned}
# How brokers and the generator are placed: pinned apart, or (MODE=whole) each at its defaults.
broker_pin=(taskset -c "$BROKER_CPUS") gen_pin=(taskset -c "$GEN_CPUS") fanfare_placement=(--no-pin --shards "$broker_threads")
if [ "$MODE" = whole ]; then
  broker_pin=() gen_pin=() fanfare_placement=() gen_threads=$ncpu BROKER_CPUS=all GEN_CPUS=all
fi

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v nats-server >/dev/null || need+=(nats-server)
command -v iperf3 >/dev/null || need+=(iperf3)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  service redis-server stop >/dev/null 2>&1 || true
fi
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -q
bin=$PWD/target/release/fanfare
# BROKER_BIN: another build of the Fanfare broker to measure (the generator stays this build).
broker_bin=${BROKER_BIN:-$bin}
work=$(mktemp -d)
# Raw results (one JSON object per run) are kept for inspection.
results=${RESULTS:-/tmp/fanfare-compare.jsonl}
: > "$results"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

source bench/lib.sh
# Brokers listen on 127.0.0.1, or on every address for the largest footprint run, whose
# connections go to 127.0.0.1..4 (one source address has ~28,000 ports per destination).
listen=127.0.0.1 spread=1 tls=0
# The largest audience the open-files limit allows the generator and the broker (each needs a
# descriptor per connection): the hard limit less a thousand, in thousands.
LARGE_N=${LARGE_N:-$(( ($(ulimit -n) - 1000) / 1000 * 1000 ))}
start_broker() {
  local b=$1
  free_port
  case $b in
    fanfare) local tls_args=() scheme=ws
             if [ "$tls" = 1 ]; then
               [ -f "$work/key.pem" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
                 -nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
                 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
               tls_args=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem"); scheme=wss
             fi
             "${broker_pin[@]}" "$broker_bin" serve "${fanfare_placement[@]}" \
               --listen $listen:$port "${tls_args[@]}" >"$work/$b.log" 2>&1 &
             url=$scheme://127.0.0.1:$port/v1/ws ;;
    nats)    echo "max_connections: 1000000" > "$work/nats.conf"
             "${broker_pin[@]}" nats-server -c "$work/nats.conf" -a $listen -p $port \
               >"$work/$b.log" 2>&1 &
             url=nats://127.0.0.1:$port ;;
    redis)   "${broker_pin[@]}" redis-server --port $port --bind $listen --save '' \
               --appendonly no --maxclients 1000000 \
               --client-output-buffer-limit 'pubsub 256mb 64mb 60' >"$work/$b.log" 2>&1 &
             url=redis://127.0.0.1:$port ;;
  esac
  pid=$!
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && return 0; sleep 0.05; done
  echo "$b did not start: $(tail -3 "$work/$b.log")" >&2
  kill "$pid" 2>/dev/null || true; pid=""
  return 1
}
stop_broker() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; }
cpu_ticks() { awk '{print $14 + $15}' /proc/"$pid"/stat; }
rss_kib() { awk '/VmRSS/ {print $2}' /proc/"$pid"/status; }

# A scenario on every broker of the list $2, REPS times, the brokers taking turns (A B C A B
# C ...), each run on a fresh broker: drift of the machine over minutes (it is large on a
# shared virtual machine) then hits every broker alike instead of the one measured last.
run() {
  local name=$1 brokers=$2; shift 2
  local rep broker
  for rep in $(seq "$REPS"); do
    for broker in $brokers; do
      start_broker "$broker" || continue
      run_once "$name" "$broker" "$rep" "$@"
      stop_broker
    done
  done
}

# One run: a JSON line with the generator's report (broker CPU inside the measured window
# included) plus the broker's CPU around the whole run and its peak RSS.
run_once() {
  local name=$1 broker=$2 rep=$3; shift 3
  local c0 r0; c0=$(cpu_ticks); r0=$(rss_kib)
  ( peak=$r0; while kill -0 "$pid" 2>/dev/null; do r=$(rss_kib 2>/dev/null || echo 0); [ "$r" -gt "$peak" ] && peak=$r; echo "$peak" > "$work/peak.tmp" && mv "$work/peak.tmp" "$work/peak"; sleep 0.1; done ) &
  local sampler=$!
  local out err
  # Subscribers go round-robin over the URLs: 127.0.0.1..$spread.
  local urls=$url i
  for i in $(seq 2 "$spread"); do urls+=",${url/127.0.0.1/127.0.0.$i}"; done
  if out=$("${gen_pin[@]}" "$bin" bench --url "$urls" --json --threads "$gen_threads" \
             --duration "$DURATION" --warmup "$WARMUP" --broker-pid "$pid" "$@" 2>"$work/err"); then err=""; else err=$(tail -c 300 "$work/err" | tr -d '\r' | tail -1); out="{}"; fi
  kill $sampler 2>/dev/null; wait $sampler 2>/dev/null || true
  local c1; c1=$(cpu_ticks 2>/dev/null || echo "$c0")
  python3 - "$name" "$broker" "$out" "$c0" "$c1" "$r0" "$(cat "$work/peak" 2>/dev/null || echo "$r0")" "$err" "$rep" "$MODE" <<'PY' | tee -a "$results" >/dev/null
import json, sys
name, broker, out, c0, c1, r0, peak, err, rep, mode = sys.argv[1:11]
r = json.loads(out)
num = lambda x: int(x) if x.strip().isdigit() else 0
whole = (float(c1) - float(c0)) / 100.0
# The measured window's broker CPU when the generator read it; the whole run's otherwise.
window = r.get("broker_cpu_seconds_window")
r.update(scenario=name, broker=broker, rep=int(rep), mode=mode,
         broker_cpu_s=window if window is not None else whole, broker_cpu_run_s=whole,
         rss0_kib=num(r0), rss_peak_kib=max(num(peak), num(r0)), error=err)
print(json.dumps(r))
PY
  echo "  $broker: $name (run $rep) ${err:+FAILED: $err}" >&2
}

scenarios() {
  local b=$1 # the brokers, space-separated
  for n in 1 100 1000 10000; do
    [[ "fan-out 1->$n" =~ $ONLY ]] && run "fan-out: 1 publisher, 1 topic, $n subscribers, 128 B, max rate" "$b" \
      --publishers 1 --subscribers $n --topics 1 --payload 128 --rate 0 --window 256
  done
  [[ "many topics" =~ $ONLY ]] && run "many topics: 100 publishers, 1,000 topics x 10 subscribers, max rate" "$b" \
    --publishers 100 --subscribers 10000 --topics 1000 --payload 128 --rate 0 --window 16
  [[ "fixed rate" =~ $ONLY ]] && run "fixed rate: 10,000 msg/s to 1,000 subscribers (100 topics x 10)" "$b" \
    --publishers 10 --subscribers 1000 --topics 100 --payload 128 --rate 10000 --window 1024
  [[ "large" =~ $ONLY ]] && run "large payloads: 64 KiB to 100 subscribers, max rate" "$b" \
    --publishers 1 --subscribers 100 --topics 1 --payload 65536 --rate 0 --window 16
  # Every run is on a fresh broker, so memory held from earlier runs does not hide the
  # connections' cost.
  [[ "storm" =~ $ONLY ]] && run "connection storm: 10,000 subscribers" "$b" \
    --publishers 1 --subscribers 10000 --topics 1 --payload 128 --rate 10 --connect-concurrency 256
  # An idle audience: every connection subscribed to one of 100 topics, a trickle of 1 msg/s
  # per topic; the figures that matter are memory per connection, connect time and gaps.
  [[ "footprint" =~ $ONLY ]] && run "footprint: 10,000 subscribers of 100 topics, 1 msg/s per topic" "$b" \
    --publishers 10 --subscribers 10000 --topics 100 --payload 128 --rate 100 --connect-concurrency 256
  # The largest audience this machine's limits allow (LARGE_N, default 100,000; the
  # generator and the broker each need that many descriptors), spread over four loopback
  # destination addresses so source ports do not run out.
  # The same audience over Fanfare's other transports, and over TLS (what rustls costs per
  # connection): Fanfare only.
  if [[ " $b " == *" fanfare "* ]]; then
    local t
    for t in sse h2; do
      [[ "footprint over $t" =~ $ONLY ]] && run "footprint over $t: 10,000 subscribers of 100 topics, 1 msg/s per topic" fanfare \
        --transport $t --publishers 10 --subscribers 10000 --topics 100 --payload 128 --rate 100 --connect-concurrency 256
    done
    if [[ "footprint over wss" =~ $ONLY ]]; then
      tls=1
      run "footprint over wss: 10,000 subscribers of 100 topics, 1 msg/s per topic" fanfare \
        --insecure --publishers 10 --subscribers 10000 --topics 100 --payload 128 --rate 100 --connect-concurrency 256
      tls=0
    fi
  fi
  if [ "$LARGE_N" -gt 10000 ] && [[ "footprint at scale" =~ $ONLY ]]; then
    listen=0.0.0.0 spread=4
    run "footprint at scale: $LARGE_N subscribers of 100 topics, 1 msg/s per topic" "$b" \
      --publishers 10 --subscribers "$LARGE_N" --topics 100 --payload 128 --rate 100 \
      --connect-concurrency 256
    listen=127.0.0.1 spread=1
  fi
  return 0
}

scenarios "$BROKERS"

# Loopback ceiling for the large-payload scenario, pinned the same way.
iperf=""
if [[ "large" =~ $ONLY ]]; then
  free_port
  "${broker_pin[@]}" iperf3 -s -1 -p $port >/dev/null 2>&1 &
  sleep 0.5
  iperf=$("${gen_pin[@]}" iperf3 -c 127.0.0.1 -p $port -t 3 -J 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8)' || true)
fi

python3 bench/report.py compare "$results" "$iperf" "$BROKER_CPUS" "$GEN_CPUS" "$(nproc)"
