#!/usr/bin/env bash
# Builds the virtual board's assets from Debian's arm64 packages:
#   Image              arm64 kernel (uncompressed Image, as Debian ships it)
#   initramfs.cpio.gz  flasher initramfs: busybox, virtio modules, DHCP on eth0, shell on ttyAMA0
#   demo-os.img        small disk: MBR + bootable FAT partition with extlinux.conf, the kernel
#                      and a demo initramfs that prints "pogo demo OS version <DEMO_VERSION>"
#   demo-os.version    DEMO_VERSION
#   inputs.txt         package names and versions the assets were built from
#   SHA256SUMS         sha256 of all of the above
#
# Usage: lab/board/build.sh [OUTDIR]      (default: <repo>/build/board)
# Environment: DEMO_VERSION (default 1.0.0), SOURCE_DATE_EPOCH (default 1704067200).
# Builds are reproducible and cached: a stamp of the inputs skips work when nothing changed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/build/board}
case $out in /*) ;; *) out=$PWD/$out ;; esac

demo_version=${DEMO_VERSION:-1.0.0}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200}
export TZ=UTC LC_ALL=C

# Disk layout of demo-os.img (MiB): FAT boot partition [1, 48), free space [48, 64).
readonly disk_mib=64 boot_start_mib=1 boot_end_mib=48
readonly disk_id=0x706f676f fat_serial=706f676f fat_label=POGOBOOT
# Modules the board needs, in load order (dependencies are checked and added).
readonly want_modules=(failover net_failover virtio_mmio virtio_net virtio_blk)
readonly uboot_bin=/usr/lib/u-boot/qemu_arm64/u-boot.bin
readonly outputs=(Image initramfs.cpio.gz demo-os.img demo-os.version inputs.txt SHA256SUMS)

log() { printf 'board: %s\n' "$*" >&2; }
die() { printf 'board: error: %s\n' "$*" >&2; exit 1; }

[[ $demo_version =~ ^[A-Za-z0-9][A-Za-z0-9._+~-]*$ ]] || die "DEMO_VERSION '$demo_version': use letters, digits and . _ + ~ -"
[[ $SOURCE_DATE_EPOCH =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be a number of seconds"

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo -n "$@"
	else
		die "needs root for: $*"
	fi
}

apt_updated=
apt_update() {
	[ -n "$apt_updated" ] && return 0
	log "apt-get update"
	as_root apt-get -o DPkg::Lock::Timeout=300 update -qq
	apt_updated=1
}

# ---- host tools (installed only when missing) -------------------------------------------------
# lab/host/packages.txt is the one list of the host's packages; deps.sh
# installs what is missing from it.
ensure_host_tools() {
	bash "$repo/lab/host/deps.sh"
}

arm64_lists() { compgen -G '/var/lib/apt/lists/*_binary-arm64_Packages*' || true; }

ensure_arm64() {
	if ! dpkg --print-foreign-architectures | grep -qx arm64; then
		log "adding dpkg architecture arm64"
		as_root dpkg --add-architecture arm64
		apt_update
	elif [ -z "$(arm64_lists)" ]; then
		apt_update
	fi
}

# ---- input hashing ----------------------------------------------------------------------------
# The script and the initramfs files shape the output (README and check.sh do not).
source_digest() {
	(cd "$here" && find build.sh rootfs -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

outputs_present() {
	local f
	for f in "${outputs[@]}"; do [ -s "$out/$f" ] || return 1; done
}

# ---- package resolution and download ----------------------------------------------------------
kernel_from_meta() {
	apt-cache depends linux-image-arm64:arm64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ :]*-arm64\)\(:arm64\)\{0,1\}$/\1/p' | head -n1
}

# Sets kernel_pkg, and for the kernel and busybox-static the candidate version and .deb sha256.
resolve_packages() {
	kernel_pkg=$(kernel_from_meta)
	if [ -z "$kernel_pkg" ]; then
		apt_update
		kernel_pkg=$(kernel_from_meta)
	fi
	[ -n "$kernel_pkg" ] || die "cannot resolve the arm64 kernel package (apt-cache depends linux-image-arm64:arm64)"
	local line pkg=
	kernel_ver='' kernel_sha='' busybox_ver='' busybox_sha=''
	while read -r line; do
		case $pkg:$line in
		*:Package:*) pkg=${line#Package: } ;;
		"$kernel_pkg":Version:*) kernel_ver=${line#Version: } ;;
		"$kernel_pkg":SHA256:*) kernel_sha=${line#SHA256: } ;;
		busybox-static:Version:*) busybox_ver=${line#Version: } ;;
		busybox-static:SHA256:*) busybox_sha=${line#SHA256: } ;;
		esac
	done < <(apt-cache show --no-all-versions "$kernel_pkg:arm64" busybox-static:arm64 2>/dev/null)
	[ -n "$kernel_ver" ] && [ -n "$kernel_sha" ] || die "no candidate version for $kernel_pkg:arm64"
	[ -n "$busybox_ver" ] && [ -n "$busybox_sha" ] || die "no candidate version for busybox-static:arm64"
}

# fetch_deb PKG VERSION SHA256 -> prints the path of the cached, verified .deb
fetch_deb() {
	local pkg=$1 ver=$2 sha=$3 cache=$out/cache
	local deb=$cache/${pkg}_${ver//:/%3a}_arm64.deb
	mkdir -p "$cache"
	if [ -f "$deb" ] && [ "$(sha256sum <"$deb" | cut -d' ' -f1)" = "$sha" ]; then
		printf '%s\n' "$deb"
		return 0
	fi
	rm -f "$cache/${pkg}_"*_arm64.deb
	rm -rf "$cache/.dl"
	mkdir -p "$cache/.dl"
	log "downloading $pkg:arm64=$ver"
	local -a sandbox=()
	[ "$(id -u)" -eq 0 ] && sandbox=(-o APT::Sandbox::User=root)
	(cd "$cache/.dl" && apt-get -qq "${sandbox[@]}" download "$pkg:arm64=$ver") >&2 || return 1
	local got=$cache/.dl/${deb##*/}
	[ -f "$got" ] && [ "$(sha256sum <"$got" | cut -d' ' -f1)" = "$sha" ] ||
		{ log "downloaded $pkg does not match the archive's sha256"; return 1; }
	mv -f "$got" "$deb"
	rmdir "$cache/.dl"
	printf '%s\n' "$deb"
}

# ---- initramfs --------------------------------------------------------------------------------
# One newc entry written by hand: device nodes cannot be created without root, and the kernel
# accepts concatenated archives, so /dev/console comes from this tiny archive.
newc_entry() { # name mode(octal) rdevmajor rdevminor
	local name=$1 mode=$2 maj=$3 min=$4 namesize=$((${#1} + 1))
	printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0' \
		0 $((8#$mode)) 0 0 1 "$SOURCE_DATE_EPOCH" 0 0 0 "$maj" "$min" "$namesize" 0 "$name"
	local pad=$(((4 - (110 + namesize) % 4) % 4))
	head -c "$pad" /dev/zero
}

console_archive() {
	newc_entry dev 040755 0 0
	newc_entry dev/console 020600 5 1
	newc_entry TRAILER!!! 0 0 0
}

# make_initramfs ROLE STAGEDIR OUTFILE
make_initramfs() {
	local role=$1 stage=$2 dest=$3 m
	rm -rf "$stage"
	mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,usr/share/udhcpc,etc/pogo,lib/modules,proc,sys,dev,tmp,run,root}
	install -m 0755 "$bbdir/bin/busybox" "$stage/bin/busybox"
	ln -s busybox "$stage/bin/sh"
	install -m 0755 "$here/rootfs/init" "$stage/init"
	install -m 0755 "$here/rootfs/usr/share/udhcpc/default.script" "$stage/usr/share/udhcpc/default.script"
	printf '%s\n' "$role" >"$stage/etc/pogo/role"
	case $role in
	demo) printf '%s\n' "$demo_version" >"$stage/etc/pogo/version" ;;
	flasher) printf '%s\n' "$kver" >"$stage/etc/pogo/version" ;;
	esac
	printf '%s\n' "${load_order[@]}" >"$stage/etc/pogo/modules"
	for m in "${load_order[@]}"; do
		cp "$modtmp/$m.ko" "$stage/lib/modules/$m.ko"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
	printf 'root:x:0:\n' >"$stage/etc/group"
	find "$stage" -type d -exec chmod 0755 {} +
	find "$stage" -type f ! -perm -u+x -exec chmod 0644 {} +
	chmod 0700 "$stage/root"
	chmod 1777 "$stage/tmp"
	find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	{
		console_archive
		(cd "$stage" && find . -mindepth 1 -printf '%P\n' | sort |
			cpio --quiet -o -H newc -R 0:0 --reproducible)
	} | gzip -n -9 >"$dest"
}

# ---- kernel modules ---------------------------------------------------------------------------
# Resolve want_modules plus their dependencies (from each module's own "depends" field,
# Debian's package carries no modules.dep) into load_order, deps first.
resolve_modules() {
	local moddir=$kroot/lib/modules/$kver
	local -A path=() builtin=()
	local f n
	while IFS= read -r f; do
		n=${f##*/}; n=${n%%.ko*}; n=${n//-/_}
		path[$n]=$f
	done < <(find "$moddir/kernel" -name '*.ko*')
	if [ -f "$moddir/modules.builtin" ]; then
		while IFS= read -r f; do
			n=${f##*/}; n=${n%%.ko*}; builtin[${n//-/_}]=1
		done <"$moddir/modules.builtin"
	fi
	load_order=()
	local -A seen=()
	visit() {
		local m=${1//-/_} d deps
		[ -n "${seen[$m]:-}" ] && return 0
		seen[$m]=1
		[ -n "${builtin[$m]:-}" ] && return 0
		[ -n "${path[$m]:-}" ] || die "kernel module $m not found in $kernel_pkg"
		deps=$(modinfo -F depends "${path[$m]}")
		for d in ${deps//,/ }; do visit "$d"; done
		load_order+=("$m")
		case ${path[$m]} in
		*.ko) cp "${path[$m]}" "$modtmp/$m.ko" ;;
		*.ko.xz) xz -dc "${path[$m]}" >"$modtmp/$m.ko" ;;
		*) die "unsupported module compression: ${path[$m]}" ;;
		esac
	}
	mkdir -p "$modtmp"
	for n in "${want_modules[@]}"; do visit "$n"; done
}

# ---- demo disk --------------------------------------------------------------------------------
make_demo_disk() {
	local img=$1 kernel=$2 initrd=$3 sect=$((1024 * 1024 / 512))
	local start=$((boot_start_mib * sect)) size=$(((boot_end_mib - boot_start_mib) * sect))
	rm -f "$img"
	truncate -s "${disk_mib}M" "$img"
	sfdisk -q --no-reread --no-tell-kernel "$img" <<-EOF
		label: dos
		label-id: $disk_id
		unit: sectors
		start=$start, size=$size, type=e, bootable
	EOF
	local fat=$img@@${boot_start_mib}M
	mformat -i "$fat" -T "$size" -H "$start" -N "$fat_serial" -v "$fat_label" ::
	mmd -i "$fat" ::/extlinux
	mcopy -m -i "$fat" "$kernel" ::/Image
	mcopy -m -i "$fat" "$initrd" ::/initramfs.cpio.gz
	mcopy -m -i "$fat" "$work/extlinux.conf" ::/extlinux/extlinux.conf
	mcopy -m -i "$fat" "$work/demo-os.version" ::/version
}

# ---- main -------------------------------------------------------------------------------------
# Quick key: sources + settings + the arm64 package lists (names, sizes, mtimes). apt-cache takes
# about a second per call here, so package versions are resolved only when this key changes.
quick_key() {
	{
		printf 'src=%s demo=%s sde=%s\n' "$src" "$demo_version" "$SOURCE_DATE_EPOCH"
		arm64_lists | xargs -r stat -c '%n %s %Y'
	} | sha256sum | cut -d' ' -f1
}

# Full key: sources + settings + the concrete package versions (also sets $inputs).
set_inputs() {
	inputs=$(printf 'kernel_package=%s\nkernel_version=%s\nbusybox_package=busybox-static\nbusybox_version=%s\ndemo_version=%s\nsource_date_epoch=%s\n' \
		"$kernel_pkg" "$kernel_ver" "$busybox_ver" "$demo_version" "$SOURCE_DATE_EPOCH")
	key=$(printf 'src=%s\n%s\n' "$src" "$inputs" | sha256sum | cut -d' ' -f1)
}

ensure_host_tools
ensure_arm64

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

src=$(source_digest)
if outputs_present && [ "$(cat "$out/.stamp-quick" 2>/dev/null)" = "$(quick_key)" ]; then
	log "up to date: $out"
	exit 0
fi

resolve_packages
set_inputs
if outputs_present && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$key" ]; then
	quick_key >"$out/.stamp-quick"
	log "up to date: $out"
	exit 0
fi

rm -f "$out/.stamp" "$out/.stamp-quick"
rm -rf "$out"/.work.*
if ! { kdeb=$(fetch_deb "$kernel_pkg" "$kernel_ver" "$kernel_sha") && bdeb=$(fetch_deb busybox-static "$busybox_ver" "$busybox_sha"); }; then
	# Stale package lists name versions the archive no longer has (e.g. after a security update).
	log "download failed; refreshing package lists and retrying"
	apt_update
	resolve_packages
	set_inputs
	kdeb=$(fetch_deb "$kernel_pkg" "$kernel_ver" "$kernel_sha") || die "cannot download $kernel_pkg:arm64=$kernel_ver"
	bdeb=$(fetch_deb busybox-static "$busybox_ver" "$busybox_sha") || die "cannot download busybox-static:arm64=$busybox_ver"
fi
log "building into $out ($kernel_pkg $kernel_ver, busybox-static $busybox_ver, demo $demo_version)"

work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
kroot=$work/kernel bbdir=$work/busybox modtmp=$work/modules
dpkg -x "$kdeb" "$kroot"
dpkg -x "$bdeb" "$bbdir"
[ -x "$bbdir/bin/busybox" ] || die "busybox-static package has no /bin/busybox"

kvers=("$kroot"/lib/modules/*)
[ ${#kvers[@]} -eq 1 ] && [ -d "${kvers[0]}" ] || die "expected one module tree in $kernel_pkg"
kver=${kvers[0]##*/}
kimage=$kroot/boot/vmlinuz-$kver
[ -f "$kimage" ] || die "no /boot/vmlinuz-$kver in $kernel_pkg"
# arm64 Image header: magic "ARM\x64" at offset 0x38 (an uncompressed Image, bootable by booti).
[ "$(od -A n -t x1 -j 56 -N 4 "$kimage" | tr -d ' ')" = 41524d64 ] || die "$kimage is not an arm64 Image"

resolve_modules
log "kernel $kver, modules: ${load_order[*]}"

install -m 0644 "$kimage" "$work/Image"
touch -d "@$SOURCE_DATE_EPOCH" "$work/Image"
make_initramfs flasher "$work/stage-flasher" "$work/initramfs.cpio.gz"
make_initramfs demo "$work/stage-demo" "$work/demo-initramfs.cpio.gz"

printf '%s\n' "$demo_version" >"$work/demo-os.version"
cat >"$work/extlinux.conf" <<EOF
# pogo demo OS $demo_version
default pogo-demo
timeout 1

label pogo-demo
	kernel /Image
	initrd /initramfs.cpio.gz
	append console=ttyAMA0 rdinit=/init
EOF
touch -d "@$SOURCE_DATE_EPOCH" "$work/extlinux.conf" "$work/demo-os.version" "$work/demo-initramfs.cpio.gz"
make_demo_disk "$work/demo-os.img" "$work/Image" "$work/demo-initramfs.cpio.gz"

printf '%s\nkernel_release=%s\nmodules=%s\n' "$inputs" "$kver" "${load_order[*]}" >"$work/inputs.txt"
(cd "$work" && sha256sum Image initramfs.cpio.gz demo-os.img demo-os.version inputs.txt >SHA256SUMS)

for f in "${outputs[@]}"; do
	chmod 0644 "$work/$f"
	mv -f "$work/$f" "$out/$f"
done
printf '%s\n' "$key" >"$out/.stamp"
quick_key >"$out/.stamp-quick"
log "done:"
sed 's/^/board:   /' "$out/SHA256SUMS" >&2
