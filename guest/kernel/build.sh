#!/usr/bin/env bash
# Builds the msb guest kernel (an uncompressed vmlinux with a PVH entry note) from Debian's
# linux-source-6.1 and msb.fragment, cached by (source version, fragment, this script).
#
#   guest/kernel/build.sh [OUT]     OUT defaults to <repo>/build/guest/vmlinux
#
# Also writes OUT.config (the final kernel config). Cache:
# ${MSB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/msb}/kernel/<hash>/{vmlinux,config}, the same
# root as src/paths.ts. A cache entry only appears once complete (built in a temp dir, then
# renamed), so a killed build leaves nothing half-made behind. MSB_KERNEL_JOBS overrides the
# make -j count (default: nproc).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
fragment=$here/msb.fragment
out=${1:-$root/build/guest/vmlinux}
tarball=/usr/src/linux-source-6.1.tar.xz
cache_root=${MSB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/msb}/kernel
jobs=${MSB_KERNEL_JOBS:-$(nproc)}
started=$SECONDS

say() { printf 'kernel: %s\n' "$*"; }
die() { printf 'kernel: error: %s\n' "$*" >&2; exit 1; }
elapsed() { local s=$((SECONDS - started)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# --- Preconditions: name the Debian package for whatever is missing -------------------------
version=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null) ||
  die "linux-source-6.1 is not installed; run: apt-get install linux-source-6.1"
[ -f "$tarball" ] || die "$tarball is missing although linux-source-6.1 $version is installed; reinstall it"
[ -f "$fragment" ] || die "config fragment $fragment is missing"
missing=()
for tool in make:make gcc:gcc bc:bc flex:flex bison:bison xz:xz-utils strip:binutils \
  readelf:binutils sha256sum:coreutils perl:perl flock:util-linux; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
[ -f /usr/include/libelf.h ] || missing+=(libelf-dev)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
[ ${#missing[@]} -eq 0 ] ||
  die "missing build tools; run: apt-get install $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')"

# --- Cache key -------------------------------------------------------------------------------
hash=$({ printf 'linux-source-6.1 %s\n' "$version"; cat "$fragment" "${BASH_SOURCE[0]}"; } |
  sha256sum | cut -c1-16)
entry=$cache_root/$hash

publish() {
  mkdir -p "$(dirname "$out")"
  if ! [ "$out" -ef "$entry/vmlinux" ]; then
    # Hard link when the cache is on the same filesystem, copy otherwise; then rename into
    # place so a reader never sees a partial file.
    local tmp_out
    tmp_out=$(mktemp "$(dirname "$out")/.vmlinux.XXXXXX")
    rm -f "$tmp_out"
    ln "$entry/vmlinux" "$tmp_out" 2>/dev/null || cp "$entry/vmlinux" "$tmp_out"
    mv -f "$tmp_out" "$out"
  fi
  cp "$entry/config" "$out.config.tmp.$$" && mv -f "$out.config.tmp.$$" "$out.config"
}

cached() { [ -f "$entry/vmlinux" ] && [ -f "$entry/config" ]; }
if cached; then
  publish
  say "cached: $entry (linux-source-6.1 $version) -> $out"
  exit 0
fi

# One build per key at a time: a second caller (CI next to ./msb, two terminals) waits for the
# first and then uses its result instead of spending another ten minutes.
mkdir -p "$cache_root"
exec 9>"$cache_root/.lock-$hash"
if ! flock -n 9; then
  say "another build of this kernel (key $hash) is running; waiting for it"
  flock 9
fi
if cached; then
  publish
  say "cached: built meanwhile by the other run; $entry -> $out"
  exit 0
fi

say "building linux-source-6.1 $version with $(basename "$fragment") (key $hash, make -j$jobs)"
# Build trees of runs that died (their pid is gone) are removed in the background: deleting a
# 1.5 GB tree of small files takes minutes on slow disks and nobody should wait for it.
for stale in "$cache_root"/.tmp-*.pid*; do
  [ -d "$stale" ] || continue
  kill -0 "${stale##*.pid}" 2>/dev/null || (rm -rf "$stale" >/dev/null 2>&1 &)
done
work=$cache_root/.tmp-$hash.pid$$
rm -rf "$work"
mkdir "$work"
make_pid=
cleanup() {
  [ -n "$make_pid" ] && kill "$make_pid" 2>/dev/null || true
  # Rename first so the name is gone at once, then delete in the background.
  if [ -d "$work" ]; then
    mv "$work" "$work.done" 2>/dev/null && (rm -rf "$work.done" >/dev/null 2>&1 &) || rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log=$work/build.log

fail_with_log() {
  local keep=$cache_root/last-failed-build.log
  cp "$log" "$keep" 2>/dev/null || true
  tail -n 40 "$log" >&2 || true
  die "$1 (full log: $keep)"
}

say "[1/6] extracting $tarball ($(elapsed))"
tar -xf "$tarball" -C "$work"
src=$work/linux-source-6.1
[ -d "$src" ] || die "unexpected tarball layout: no linux-source-6.1/ in $tarball"

# Reproducible metadata in the kernel's version string.
export KBUILD_BUILD_TIMESTAMP='1970-01-01 00:00:00 UTC' KBUILD_BUILD_USER=msb KBUILD_BUILD_HOST=msb

say "[2/6] configuring: tinyconfig + fragment + olddefconfig ($(elapsed))"
{
  make -C "$src" tinyconfig &&
    (cd "$src" && scripts/kconfig/merge_config.sh -m .config "$fragment") &&
    make -C "$src" olddefconfig
} >"$log" 2>&1 || fail_with_log "configuration failed"

# olddefconfig silently drops options whose dependencies are unmet; refuse such a config.
say "[3/6] verifying every fragment option survived olddefconfig ($(elapsed))"
dropped=()
while IFS= read -r line; do
  case $line in
  CONFIG_*=*)
    opt=${line%%=*} want=${line#*=}
    got=$(grep -E "^$opt=" "$src/.config" | head -n1 || true)
    got=${got#*=}
    [ "$got" = "$want" ] || dropped+=("$opt: fragment says $want, final config has ${got:-it unset}")
    ;;
  "# CONFIG_"*" is not set")
    opt=${line#\# } opt=${opt%% *}
    if got=$(grep -E "^$opt=" "$src/.config"); then
      dropped+=("$opt: fragment says unset, final config has ${got#*=}")
    fi
    ;;
  esac
done <"$fragment"
if [ ${#dropped[@]} -ne 0 ]; then
  printf '  %s\n' "${dropped[@]}" >&2
  die "${#dropped[@]} fragment option(s) did not take (unmet dependency or renamed symbol); add the dependency to $fragment"
fi

say "[4/6] compiling vmlinux with make -j$jobs (about 10 minutes on 2 cores) ($(elapsed))"
make -C "$src" -j"$jobs" vmlinux >>"$log" 2>&1 &
make_pid=$!
while kill -0 "$make_pid" 2>/dev/null; do
  sleep 15
  kill -0 "$make_pid" 2>/dev/null || break
  compiled=$(grep -c '^  CC ' "$log" || true)
  last=$(grep -E '^  [A-Z]+' "$log" | tail -n1 | sed 's/^ *//;s/  */ /g' || true)
  say "  ... $(elapsed): $compiled files compiled, now: ${last:-starting}"
done
status=0
wait "$make_pid" || status=$?
make_pid=
[ "$status" -eq 0 ] || fail_with_log "make vmlinux failed with status $status"

say "[5/6] stripping vmlinux and checking its PVH entry note ($(elapsed))"
result=$work/result
mkdir "$result"
strip -o "$result/vmlinux" "$src/vmlinux"
cp "$src/.config" "$result/config"
# XEN_ELFNOTE_PHYS32_ENTRY (type 18) is what lets a VMM enter the kernel through PVH.
readelf -n "$result/vmlinux" | grep -Eq 'Xen[[:space:]]+0x[0-9a-f]+[[:space:]]+.*(0x00000012|PHYS32)' ||
  die "stripped vmlinux has no Xen PHYS32_ENTRY (PVH) note; is CONFIG_PVH set?"
printf 'linux-source-6.1 %s\nfragment sha256 %s\n' "$version" "$(sha256sum <"$fragment" | cut -d' ' -f1)" \
  >"$result/source"

say "[6/6] installing into the cache ($(elapsed))"
if ! mv -T "$result" "$entry" 2>/dev/null; then
  # Another build of the same key finished first; its result is equivalent.
  [ -f "$entry/vmlinux" ] || die "could not move the build into $entry"
fi
publish
say "done in $(elapsed): $out ($(du -h "$entry/vmlinux" | cut -f1) stripped), cache $entry"
