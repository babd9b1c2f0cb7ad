#!/usr/bin/env bash
# Quick host checks before make test, run and bench: one line saying what
# to do when something the tests or the virtual board need is missing,
# instead of a failed spec minutes later. Exits 1 on the first problem.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
fail() { echo "preflight: $*" >&2; exit 1; }
note() { echo "preflight: note: $*" >&2; }

# Debian packages from the one list.
if command -v dpkg-query >/dev/null; then
	mapfile -t pkgs < <(bash "$here/deps.sh" --list)
	mapfile -t installed < <(dpkg-query -W -f='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null | awk '/ install ok installed$/ {print $1}')
	missing=()
	for p in "${pkgs[@]}"; do
		[[ " ${installed[*]} " == *" $p "* ]] || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] || fail "missing packages: ${missing[*]}: run make deps (lab/host/deps.sh) as root or with sudo"
fi

# Tools the tests run, by name (also on a host that is not Debian).
for t in protoc gcc pkg-config socat qemu-system-aarch64 mformat mcopy cpio sfdisk xz zstd \
	tftp in.tftpd snmpd snmpget ipmitool etcd docker-registry bmaptool ss; do
	command -v "$t" >/dev/null || fail "$t not found: run make deps (lab/host/deps.sh)"
done
[ -f /usr/lib/u-boot/qemu_arm64/u-boot.bin ] || fail "no U-Boot for the virtual board (/usr/lib/u-boot/qemu_arm64/u-boot.bin): run make deps"
# protoc's well-known types (libprotobuf-dev), which the api's protos import.
inc=$(dirname "$(dirname "$(command -v protoc)")")/include
[ -f "$inc/google/protobuf/duration.proto" ] || [ -f /usr/include/google/protobuf/duration.proto ] ||
	fail "google/protobuf/duration.proto not found (protoc's well-known types): run make deps (libprotobuf-dev)"
pkg-config --exists libusb-1.0 || fail "libusb-1.0 not found by pkg-config (jmp's YKUSH support): run make deps (libusb-1.0-0-dev)"

# Go, at least the version go.mod asks for.
command -v go >/dev/null || fail "go not found: install Go $(sed -n 's/^go //p' "$repo/go.mod") or newer from go.dev/dl and put it on PATH"
want=$(sed -n 's/^go //p' "$repo/go.mod")
have=$(go version | awk '{print $3}' | sed 's/^go//')
[ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" = "$want" ] ||
	fail "go $have is older than go.mod's $want: install Go $want or newer from go.dev/dl"

# Port 69: pogo's TFTP driver shares it between pogo processes; any other
# TFTP server (tftpd-hpa as a service, dnsmasq) keeps boards from reaching it.
if holders=$(ss -Hulnp 'sport = :69' 2>/dev/null) && [ -n "$holders" ]; then
	names=$(grep -o '(("[^"]*"' <<<"$holders" | sed 's/(("//; s/"$//' | sort -u | tr '\n' ' ')
	for n in $names; do
		case $n in
		jmp | j | *.test) ;;
		*) fail "UDP port 69 is taken by $n: stop it (e.g. systemctl disable --now tftpd-hpa) so the virtual board's TFTP can serve" ;;
		esac
	done
fi

[ -e /dev/kvm ] || note "no /dev/kvm: the virtual board runs under TCG (slower, still correct)"
exit 0
