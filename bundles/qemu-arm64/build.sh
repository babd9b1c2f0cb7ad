#!/usr/bin/env bash
# Assembles the virtual board's flasher bundle: manifest.yaml beside this
# script plus the kernel and flasher initramfs that lab/board/build.sh makes.
#   bash bundles/qemu-arm64/build.sh [BOARD_DIR] [OUT_DIR]
# defaults: build/board, build/bundle/qemu-arm64. Every mtime is set to
# SOURCE_DATE_EPOCH (default 1704067200, as the board assets) so pushing the
# same assets always gives the same digest.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
board=${1:-build/board}
out=${2:-build/bundle/qemu-arm64}
epoch=${SOURCE_DATE_EPOCH:-1704067200}

for f in Image initramfs.cpio.gz; do
  if [ ! -f "$board/$f" ]; then
    echo "bundle: $board/$f is missing: run bash lab/board/build.sh $board" >&2
    exit 1
  fi
done

tmp="$out.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp/data"
cp "$here/manifest.yaml" "$tmp/manifest.yaml"
cp "$board/Image" "$board/initramfs.cpio.gz" "$tmp/data/"
find "$tmp" -exec touch -h -d "@$epoch" {} +
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$tmp" "$out"
echo "bundle: $out"
