#!/usr/bin/env bash
# Refreshes .ci/deny/advisories from a full clone of the RustSec advisory
# database: the advisories of every crate named in Cargo.lock and
# fuzz/Cargo.lock, and the snapshot's commit and date (.ci/deny/advisories/SNAPSHOT).
#   .ci/deny/refresh.sh /path/to/advisory-db
# Run it after changing dependencies, and from time to time for new advisories.
set -euo pipefail
src="${1:?usage: .ci/deny/refresh.sh /path/to/advisory-db (a git clone)}"
cd "$(dirname "$0")/../.."
out=.ci/deny/advisories
rm -rf "$out"
mkdir -p "$out/crates"
names=$(cat Cargo.lock fuzz/Cargo.lock 2>/dev/null | sed -n 's/^name = "\(.*\)"/\1/p' | sort -u)
for name in $names; do
  if [ -d "$src/crates/$name" ]; then
    cp -r "$src/crates/$name" "$out/crates/"
  elif git -C "$src" cat-file -e "HEAD:crates/$name" 2>/dev/null; then
    mkdir -p "$out/crates/$name"
    for f in $(git -C "$src" ls-tree --name-only "HEAD:crates/$name"); do
      git -C "$src" show "HEAD:crates/$name/$f" >"$out/crates/$name/$f"
    done
  fi
done
git -C "$src" log -1 --format='%H %cI' >"$out/SNAPSHOT"
echo ".ci/deny/advisories: $(find "$out/crates" -name '*.md' | wc -l) advisories of $(ls "$out/crates" | wc -l) crates, snapshot $(cat "$out/SNAPSHOT")"
