#!/bin/sh
# The whole test suite: set-up (as ./msb does, plus test tools and fixtures), then bun test, then
# the Rust crates' own tests (agent, native VMM). Fails if any part fails; runs every part.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sh scripts/setup.sh --test || exit $?
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

status=0
echo "==> tsc --noEmit --noUnusedLocals (types)"
node_modules/.bin/tsc -p . --noEmit --noUnusedLocals || status=1
node_modules/.bin/bun test --timeout 120000 "$@" || status=1
for crate in guest/agent native; do
  echo "==> cargo test --release in $crate"
  (cd "$crate" && cargo test --release 2>&1) || status=1
done

# The SDKs of other languages, each against the real runtime (dist/msb, qemu backend).
echo "==> python3 -m unittest (sdk/python)"
python3 -m unittest discover -s sdk/python/tests -v 2>&1 || status=1
if [ -d sdk/go ]; then
  echo "==> go test (sdk/go)"
  (cd sdk/go && MSB_BIN="$root/dist/msb" go test -v -count=1 -timeout 20m ./... 2>&1) || status=1
fi
if [ -d sdk/rust ]; then
  echo "==> cargo test (sdk/rust)"
  (cd sdk/rust && MSB_E2E_REQUIRED=1 MSB_BIN="$root/dist/msb" cargo test --release -- --test-threads=1 2>&1) || status=1
fi
exit $status
