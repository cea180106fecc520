#!/usr/bin/env bash
# Fails when pat/ is not what nbdev_export writes from nbs/, or when a notebook is not nbdev_clean.
# Works on a copy, so the working tree is left as it was.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cp -r "$top/settings.ini" "$top/nbs" "$top/pat" "$tmp/"
cd "$tmp"
cp -r pat pat.committed; cp -r nbs nbs.committed
nbdev_export
if ! diff -r -x __pycache__ pat.committed pat >"$tmp/export.diff"; then
  echo "pat/ is out of sync with nbs/: run nbdev_export and commit pat/ with the notebooks." >&2
  head -40 "$tmp/export.diff" >&2; exit 1
fi
nbdev_clean
if ! diff -r nbs.committed nbs >"$tmp/clean.diff"; then
  echo "Notebooks are not clean: run nbdev_clean and commit nbs/." >&2
  head -40 "$tmp/clean.diff" >&2; exit 1
fi
echo "sync-check: pat/ matches nbs/, notebooks are clean."
