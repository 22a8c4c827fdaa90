#!/bin/sh
# Installs and builds everything msb needs from a fresh clone, showing progress; safe to run again
# (each step skips what is already done). Output goes to stderr so `./msb run` keeps stdout clean.
set -eu
exec 3>&1 1>&2

root=$(cd "$(dirname "$0")/.." && pwd)
# --test: also what the test suite needs (registry, skopeo, network tools, the Debian fixture).
testing=false
[ "${1:-}" = "--test" ] && testing=true
cd "$root"
step() { printf '==> %s\n' "$*"; }

# Debian packages: what running msb needs, and what building and testing it needs.
# e2fsprogs: mkfs.ext4 makes a named sandbox's writable layer.
APT_RUN="qemu-system-x86 e2fsprogs"
APT_BUILD="linux-source-6.1 build-essential bc flex bison libelf-dev libssl-dev xz-utils cpio busybox-static"
APT_TEST="golang-go openssl erofs-utils iproute2 iputils-ping curl iperf3 python3 procps docker-registry skopeo debootstrap"
wanted="$APT_RUN $APT_BUILD"
$testing && wanted="$wanted $APT_TEST"
missing=""
for pkg in $wanted; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  step "installing Debian packages:$missing"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
    echo "setup: need root (or sudo) to install:$missing" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  # shellcheck disable=SC2086
  $sudo apt-get install -y -q --no-install-recommends $missing
fi

if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "setup: a Rust toolchain (cargo) is needed: https://rustup.rs or apt-get install cargo" >&2; exit 1; }

if [ ! -x node_modules/.bin/bun ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "installing npm dependencies (bun, citty, zod, @peculiar/x509)"
  npm ci --no-audit --no-fund
fi
bun="$root/node_modules/.bin/bun"

mkdir -p build/guest

step "guest kernel"
bash guest/kernel/build.sh "$root/build/guest/vmlinux"

step "guest agent (static Rust binary)"
(cd guest/agent && cargo build --release --quiet)
cp guest/agent/target/x86_64-unknown-linux-gnu/release/msb-agent build/guest/msb-agent 2>/dev/null ||
  cp guest/agent/target/release/msb-agent build/guest/msb-agent

step "native VMM (libmsbvmm.so)"
(cd native && cargo build --release --quiet)

step "initramfs (agent + default busybox root)"
"$bun" guest/initramfs/build.ts --agent build/guest/msb-agent --out build/guest/initramfs.cpio.gz

step "single binary dist/msb"
"$bun" scripts/build.ts

if $testing; then
  step "test fixture: Debian bookworm with python3, curl and nodejs as an OCI image (cached; first time ~3 min)"
  "$bun" bench/image-fixture-debian.ts
fi

step "ready: dist/msb"
