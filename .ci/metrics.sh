#!/usr/bin/env bash
# Checks the exposition and the monitoring files (packaging/monitoring/) against a live node:
#
#   bash .ci/metrics.sh
#
# Starts the debug broker on a free loopback port, scrapes /metrics, and runs
# `promtool check metrics` on it (any lint problem fails: a family without HELP, a counter
# without `_total`, ...), `promtool check rules` and `promtool test rules` on the alert
# rules, and .ci/metrics.py, which checks that the dashboard and the rules name only
# metrics the node exports. promtool comes from Debian's `prometheus` package, installed
# with apt-get when missing (its server is installed too, never started here).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=packaging/monitoring

if ! command -v promtool >/dev/null 2>&1; then
  sudo_=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_="sudo"
  echo "installing promtool (apt-get install prometheus)" >&2
  ($sudo_ apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    $sudo_ apt-get install -y -qq --no-install-recommends prometheus) >/dev/null
fi
command -v curl >/dev/null 2>&1 || { echo "install curl to run this check" >&2; exit 1; }

cargo build --quiet -p fanfare --bin fanfare
bin="${CARGO_TARGET_DIR:-target}/debug/fanfare"
work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A port free now (the kernel picks it); the node takes it a moment later.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin" serve --listen "127.0.0.1:$port" --shards 2 --no-pin >"$work/node.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -sf --max-time 2 "http://127.0.0.1:$port/metrics" >"$work/metrics" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/node.log" >&2; echo "the node exited" >&2; exit 1; }
  sleep 0.1
done
[ -s "$work/metrics" ] || { cat "$work/node.log" >&2; echo "no /metrics in 10 s" >&2; exit 1; }
echo "scraped $(grep -c '^# TYPE' "$work/metrics") families from 127.0.0.1:$port"

# promtool exits 3 on lint problems and prints them; either way, fail on any output.
problems=$(promtool check metrics <"$work/metrics" 2>&1) || true
if [ -n "$problems" ]; then
  echo "promtool check metrics:" >&2
  echo "$problems" >&2
  exit 1
fi
echo "promtool check metrics: clean"
promtool check rules "$dir/fanfare-alerts.yml"
promtool test rules "$dir/fanfare-alerts.test.yml"
python3 .ci/metrics.py "$work/metrics" "$dir/fanfare-dashboard.json" "$dir/fanfare-alerts.yml"
