#!/usr/bin/env bash
# A single node, a cluster (3 storage nodes + 2 routers) and the same cluster with mutual TLS
# on node links and authenticated gossip, side by side on this machine, with the same
# load-generator scenarios; markdown on stdout. Needs openssl for the TLS certificates.
#
#   bench/cluster.sh                  # ~3 minutes
#
# Every node runs one shard, unpinned (the cluster's five processes share the machine's cores
# with the generator: on a 2-core machine this measures the cost of the extra hop, not the
# scale-out). Subscribers connect to router 1, publishers to router 2, so every message
# crosses: publisher -> r2 -> owner storage node -> r1 -> subscribers. Broker CPU is the sum
# of utime + stime of every node process over the run. Not part of CI.
#
# Environment: DURATION (s, default 5), WARMUP (s, default 1), ONLY (regex over scenarios),
# RESULTS (the raw JSON lines, default /tmp/fanfare-cluster.jsonl; keep the ones
# docs/benchmarks.md quotes in bench/results/). Tables: bench/report.py cluster RESULTS.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
ONLY=${ONLY:-.}
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -q
bin=$PWD/target/release/fanfare
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

source bench/lib.sh
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# start NAME ARGS...: a node; sets $http
start() {
  local name=$1; shift
  free_port; http=$port
  "$bin" serve --no-pin --shards 1 --listen 127.0.0.1:$http "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  wait_port $http
}
cpu_all() { local t=0; for p in "${pids[@]}"; do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $t; }

run() {
  local setup=$1 name=$2 url=$3; shift 3
  local c0; c0=$(cpu_all)
  local out
  out=$("$bin" bench --url "$url" --json --threads 1 --duration "$DURATION" --warmup "$WARMUP" "$@" 2>"$work/err") || out="{}"
  local c1; c1=$(cpu_all)
  python3 - "$setup" "$name" "$out" "$c0" "$c1" <<'PY' >> "$work/results.jsonl"
import json, sys
setup, name, out, c0, c1 = sys.argv[1:6]
r = json.loads(out)
r.update(setup=setup, scenario=name, broker_cpu_s=(float(c1) - float(c0)) / 100.0)
print(json.dumps(r))
PY
  echo "  $setup: $name" >&2
}

scenarios() {
  local setup=$1 url=$2
  [[ "fan-out" =~ $ONLY ]] && run "$setup" "fan-out: 1 publisher, 1 topic, 1,000 subscribers, max rate" "$url" \
    --publishers 1 --subscribers 1000 --topics 1 --payload 128 --rate 0 --window 256
  [[ "topics" =~ $ONLY ]] && run "$setup" "100 topics x 10 subscribers, 10 publishers, 5,000 msg/s" "$url" \
    --publishers 10 --subscribers 1000 --topics 100 --payload 128 --rate 5000 --window 1024
  [[ "latency" =~ $ONLY ]] && run "$setup" "latency: 1 publisher, 1 subscriber, 1,000 msg/s" "$url" \
    --publishers 1 --subscribers 1 --topics 1 --payload 128 --rate 1000 --window 64
  return 0
}

echo "== single node" >&2
start single
scenarios single "ws://127.0.0.1:$http/v1/ws"
for p in "${pids[@]}"; do kill "$p"; done; wait 2>/dev/null || true; pids=()

# pki: a cluster CA, a certificate per node naming its id, a gossip key (docs/cluster.md).
pki() {
  local d=$work/pki; mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -keyout "$d/ca.key" -out "$d/ca.pem" -subj "/CN=bench cluster CA" 2>/dev/null
  for id in s1 s2 s3 r1 r2; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$d/$id.key" -out "$d/$id.csr" -subj "/CN=$id" 2>/dev/null
    openssl x509 -req -in "$d/$id.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 30 \
      -out "$d/$id.pem" 2>/dev/null \
      -extfile <(printf "subjectAltName=DNS:$id\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature")
  done
  openssl rand -hex 32 > "$d/gossip.key"
}

# cluster SETUP [tls]: 3 storage nodes + 2 routers, then the scenarios through both routers.
cluster() {
  local setup=$1 tls=${2:-}
  sec() {
    [ -n "$tls" ] || return 0
    local d=$work/pki
    echo --cluster-ca "$d/ca.pem" --cluster-cert "$d/$1.pem" --cluster-key "$d/$1.key" --gossip-key-file "$d/gossip.key"
  }
  echo "== $setup: 3 storage + 2 routers" >&2
  free_port; local seed=127.0.0.1:$port
  start s1 --node-id s1 --roles storage --cluster-listen $seed $(sec s1)
  for n in s2 s3; do free_port; start $n --node-id $n --roles storage --cluster-listen 127.0.0.1:$port --seed $seed $(sec $n); done
  free_port; start r1 --node-id r1 --roles router --cluster-listen 127.0.0.1:$port --seed $seed $(sec r1); local r1=$http
  free_port; start r2 --node-id r2 --roles router --cluster-listen 127.0.0.1:$port --seed $seed $(sec r2); local r2=$http
  for r in $r1 $r2; do
    for _ in $(seq 100); do
      n=$(curl -s 127.0.0.1:$r/v1/admin/cluster | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["members"]))' 2>/dev/null || echo 0)
      [ "$n" = 5 ] && break; sleep 0.1
    done
  done
  scenarios "$setup" "ws://127.0.0.1:$r1/v1/ws,ws://127.0.0.1:$r2/v1/ws"
  for p in "${pids[@]}"; do kill "$p"; done; wait 2>/dev/null || true; pids=()
}

cluster cluster
pki
cluster cluster-tls tls

results=${RESULTS:-/tmp/fanfare-cluster.jsonl}
cp "$work/results.jsonl" "$results"
echo "Results: $(wc -l < "$results") runs; raw JSON in $results"
python3 bench/report.py cluster "$results"
