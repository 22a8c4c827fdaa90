#!/bin/sh
# The whole test suite: set-up (as ./msb does, plus test tools and fixtures), then bun test, then
# the Rust crates' own tests (agent, native VMM). Fails if any part fails; runs every part.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sh scripts/setup.sh --test || exit $?
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

status=0
node_modules/.bin/bun test --timeout 120000 "$@" || status=1
for crate in guest/agent native; do
  echo "==> cargo test --release in $crate"
  (cd "$crate" && cargo test --release 2>&1) || status=1
done
exit $status
