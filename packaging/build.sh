#!/usr/bin/env bash
# Builds what Fanfare ships:
#
#   - the release binary, and from it the shell completions (bash, zsh, fish) and the man
#     pages (`fanfare completions SHELL`, `fanfare man --out-dir DIR`), under
#     $CARGO_TARGET_DIR/release/packaging (target/release/packaging by default);
#   - the Debian package, with cargo-deb (installed with `cargo install cargo-deb --locked`
#     when missing), into $CARGO_TARGET_DIR/debian/, then lists what it holds;
#   - the container image (Containerfile) with docker or podman, when one of them has a
#     working engine here; otherwise it says so and skips it.
#
#   packaging/build.sh                 # all of them
#   packaging/build.sh --no-container  # the binary, completions, man pages and the .deb
set -euo pipefail
cd "$(dirname "$0")/.."

container=yes
for arg in "$@"; do
  case "$arg" in
    --no-container) container=no ;;
    *) echo "usage: packaging/build.sh [--no-container]" >&2; exit 2 ;;
  esac
done

target=${CARGO_TARGET_DIR:-target}
out="$target/release/packaging"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)

echo "== release binary"
cargo build --release --locked --bin fanfare
bin="$target/release/fanfare"

echo "== completions and man pages (from the binary) into $out"
rm -rf "$out"
mkdir -p "$out/completions" "$out/man"
"$bin" completions bash >"$out/completions/fanfare.bash"
"$bin" completions zsh >"$out/completions/_fanfare"
"$bin" completions fish >"$out/completions/fanfare.fish"
"$bin" man --out-dir "$out/man"
gzip -9n "$out"/man/*.1

echo "== Debian package"
if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "installing cargo-deb (cargo install cargo-deb --locked)"
  cargo install cargo-deb --locked --quiet
fi
deb=$(cargo deb --no-build --strip --locked | tail -n 1)
echo "$deb"
dpkg-deb --info "$deb"
dpkg-deb --contents "$deb"
# The maintainer scripts as packaged (with cargo-deb's systemd parts) must still parse.
control=$(mktemp -d)
trap 'rm -rf "$control"' EXIT
dpkg-deb --control "$deb" "$control"
for script in preinst postinst prerm postrm; do
  if [ -f "$control/$script" ] && ! sh -n "$control/$script"; then
    echo "the packaged $script does not parse" >&2
    exit 1
  fi
done

if [ "$container" = no ]; then
  exit 0
fi
echo "== container image"
engine=""
for e in docker podman; do
  if command -v "$e" >/dev/null 2>&1 && "$e" info >/dev/null 2>&1; then
    engine=$e
    break
  fi
done
if [ -z "$engine" ]; then
  echo "no docker or podman engine answers here: skipped the container image" \
       "(build it where one does: docker build -f Containerfile -t fanfare:$version .)"
  exit 0
fi
"$engine" build -f Containerfile -t "fanfare:$version" -t fanfare:latest .
echo "built the image fanfare:$version with $engine"
