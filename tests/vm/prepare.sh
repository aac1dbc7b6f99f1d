#!/usr/bin/env bash
# Prepares the kernel and initramfs of the IPIP test VM and prints where they are:
#
#   KERNEL=/var/cache/margay-vm/<version>/boot/vmlinuz-<version>
#   INITRD=/var/cache/margay-vm/<version>/initrd-<hash>.cpio.gz
#
# The kernel is Debian's (the package `linux-image-amd64` depends on), fetched with
# `apt-get download` and unpacked into the cache, never installed on this machine. The initramfs
# holds static busybox, the modules the VM needs (9p over virtio for the root, ipip, veth,
# bridge; dependencies resolved with modinfo) and tests/vm/init. Both are cached: a second run
# downloads and builds nothing. Override the cache with MARGAY_VM_CACHE.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${MARGAY_VM_CACHE:-/var/cache/margay-vm}
# Modules the init loads, with their dependencies put first.
ROOT_MODULES=(virtio_pci 9pnet_virtio 9p ipip veth bridge wireguard)

die() { echo "prepare.sh: $*" >&2; exit 1; }

for tool in apt-cache apt-get dpkg-deb modinfo cpio gzip; do
  command -v "$tool" >/dev/null || die "$tool not found (run scripts/install-deps.sh)"
done
busybox=/bin/busybox
[ -x "$busybox" ] && "$busybox" --list | grep -x insmod >/dev/null ||
  die "static busybox not found at $busybox (Debian package busybox-static; run scripts/install-deps.sh)"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# The kernel package: the one the metapackage points at, or the newest already cached when apt
# cannot say (no package lists).
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
  awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }' || true)
if [ -z "$pkg" ]; then
  pkg=$(ls -d "$cache"/linux-image-*/ 2>/dev/null | sort -V | tail -n 1 | xargs -r basename || true)
  [ -n "$pkg" ] || die "cannot find the kernel package: apt-cache depends linux-image-amd64 names none (run apt-get update) and $cache holds none"
fi
kdir=$cache/$pkg
if [ ! -e "$kdir/.unpacked" ]; then
  echo "prepare.sh: fetching $pkg into $kdir" >&2
  rm -rf "$kdir" && mkdir -p "$kdir/deb"
  # apt fetches as the _apt user where it can write.
  chown _apt "$kdir/deb" 2>/dev/null || true
  (cd "$kdir/deb" && apt-get download -q "$pkg" >&2) ||
    die "apt-get download $pkg failed (network or package lists?)"
  dpkg-deb -x "$kdir"/deb/*.deb "$kdir"
  rm -rf "$kdir/deb"
  touch "$kdir/.unpacked"
fi
version=$(ls "$kdir/lib/modules" | head -n 1)
kernel=$kdir/boot/vmlinuz-$version
moddir=$kdir/lib/modules/$version
[ -f "$kernel" ] && [ -d "$moddir" ] || die "$kdir does not hold a kernel and its modules"

# Module load order: each module after the modules it depends on.
declare -A seen=()
order=()
add_module() {
  local name=$1 file dep
  [ -n "${seen[$name]:-}" ] && return
  seen[$name]=1
  file=$(find "$moddir/kernel" -name "$name.ko*" -print -quit)
  if [ -z "$file" ]; then
    # Built into the kernel, or named with '_' where the file has '-'.
    file=$(find "$moddir/kernel" -name "${name//_/-}.ko*" -print -quit)
  fi
  if [ -z "$file" ]; then
    grep -q "/${name}.ko" "$moddir/modules.builtin" 2>/dev/null && return
    die "module $name not in $moddir"
  fi
  for dep in $(modinfo -F depends "$file" | tr ',' ' '); do add_module "$dep"; done
  order+=("$file")
}
for m in "${ROOT_MODULES[@]}"; do add_module "$m"; done

hash=$( { cat "$here/init" "$0"; printf '%s\n' "$version" "${order[@]}"; } | sha256sum | cut -c1-16)
initrd=$kdir/initrd-$hash.cpio.gz
if [ ! -f "$initrd" ]; then
  echo "prepare.sh: building $initrd" >&2
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage"/{bin,modules,proc,sys,dev,host,run}
  cp "$busybox" "$stage/bin/busybox"
  ln -s busybox "$stage/bin/sh"
  cp "$here/init" "$stage/init"
  chmod 755 "$stage/init"
  for f in "${order[@]}"; do
    case "$f" in
      *.ko.xz) xz -dc "$f" > "$stage/modules/$(basename "${f%.xz}")" ;;
      *.ko.zst) zstd -qdc "$f" > "$stage/modules/$(basename "${f%.zst}")" ;;
      *.ko.gz) gzip -dc "$f" > "$stage/modules/$(basename "${f%.gz}")" ;;
      *) cp "$f" "$stage/modules/" ;;
    esac
    basename "${f%.ko*}" >> "$stage/modules/order"
  done
  (cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
  # Initramfs images of older inputs are not used again.
  find "$kdir" -maxdepth 1 -name 'initrd-*.cpio.gz' ! -path "$initrd" -delete
fi

echo "KERNEL=$kernel"
echo "INITRD=$initrd"
