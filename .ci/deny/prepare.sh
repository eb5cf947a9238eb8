#!/usr/bin/env bash
# Builds the advisory database cargo-deny reads (deny.toml's db-path) from
# the vendored .ci/deny/advisories: cargo-deny wants a git checkout, dated by its
# HEAD commit, at <db-path>/advisory-db-<hash of the default URL>. With
# `cargo deny --offline` it never fetches. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/../.."
db=target/advisory-dbs/advisory-db-3157b0e258782691
read -r commit date <.ci/deny/advisories/SNAPSHOT
rm -rf "$db"
mkdir -p "$db"
cp -r .ci/deny/advisories/crates "$db/"
git -C "$db" init -q
git -C "$db" add -A
GIT_AUTHOR_DATE="$date" GIT_COMMITTER_DATE="$date" \
  git -C "$db" -c user.name=outbox -c user.email=ci@localhost \
  commit -q -m "RustSec advisory-db $commit, the crates in Cargo.lock (.ci/deny/refresh.sh)"
echo "advisory database: $db (RustSec $commit of $date)"
