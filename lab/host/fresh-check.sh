#!/usr/bin/env bash
# make fresh-check: proves the README's set-up on a brand-new Debian 12 root.
#   1. a minimal bookworm root (debootstrap --variant=minbase, plus the README's
#      prerequisites git and make), cached between runs as a tarball;
#   2. the host's apt sources, a clean git clone of HEAD (nothing ignored, no
#      build/) and the host's Go toolchain copied in; /proc, /sys, /dev mounted
#      (/dev/kvm passes through when the host has it; it is not required);
#   3. inside, as root: `make test`, then `make run` fed a short script that
#      powers the board on, sees U-Boot through j, powers it off and exits 0.
# Prints each step's wall time; a failed step prints its output. Everything
# is unmounted and removed on exit (Ctrl-C included), and no process is left.
# Environment: POGO_FRESH_CACHE (default /var/cache/pogo/fresh-check),
# POGO_FRESH_MIRROR (default: the host's first Debian mirror).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${POGO_FRESH_CACHE:-/var/cache/pogo/fresh-check}
suite=bookworm
base=$cache/$suite-minbase.tar

log() { printf 'fresh-check: %s\n' "$*" >&2; }
die() { printf 'fresh-check: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot and mounts): run it as root or with sudo"
command -v debootstrap >/dev/null || die "debootstrap not found: run make deps"
command -v go >/dev/null || die "go not found on the host: its toolchain is copied into the fresh root"
git -C "$repo" rev-parse --verify HEAD >/dev/null || die "$repo is not a git checkout"
if holders=$(ss -Hulnp 'sport = :69' 2>/dev/null) && [ -n "$holders" ]; then
	die "UDP port 69 is in use on this host (the fresh root shares its network): $(grep -o '(("[^"]*",pid=[0-9]*' <<<"$holders" | sed 's/(("//; s/",pid=/ pid /' | tr '\n' ' ')— stop it first"
fi

root=""
work=$(mktemp -d /var/tmp/pogo-fresh.XXXXXX)
root=$work/root

# Kills every process whose root is the fresh root, unmounts, removes.
cleanup() {
	local rc=$? pid pass
	trap - EXIT INT TERM
	set +e
	if [ -n "$root" ] && [ -d "$root" ]; then
		for pass in TERM TERM KILL; do
			local left=0
			for pid in /proc/[0-9]*; do
				[ "$(readlink "$pid/root" 2>/dev/null)" = "$root" ] || continue
				kill -s "$pass" "${pid#/proc/}" 2>/dev/null && left=1
			done
			[ $left -eq 0 ] && break
			sleep 2
		done
		for m in $(awk -v r="$root" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/self/mounts | sort -r); do
			umount "$m" 2>/dev/null || umount -l "$m"
		done
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# step NAME CMD...: runs CMD with its output in a log, prints the wall time,
# and on failure the log's tail.
step() {
	local name=$1 t0 rc out
	shift
	out=$work/$name.log
	t0=$(date +%s.%N)
	log "$name …"
	# In the background and waited for, so that Ctrl-C or a TERM runs the
	# cleanup at once rather than after the step.
	set +e
	"$@" >"$out" 2>&1 &
	wait $!
	rc=$?
	set -e
	printf 'fresh-check: %-10s %6.1f s%s\n' "$name" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')" "$([ $rc -eq 0 ] || echo "  FAILED (exit $rc)")" >&2
	if [ $rc -ne 0 ]; then
		echo "---- $name: last 60 lines of output ----" >&2
		tail -n 60 "$out" >&2
		exit 1
	fi
}

mirror() {
	if [ -n "${POGO_FRESH_MIRROR:-}" ]; then
		echo "$POGO_FRESH_MIRROR"
		return
	fi
	local m
	m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1 == "deb" && $0 ~ /debian/ && $0 !~ /security/ {print $2; exit}')
	[ -n "$m" ] || m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && /debian/ && !/security/ {print $2; exit}')
	echo "${m:-http://deb.debian.org/debian}"
}

bootstrap() {
	mkdir -p "$cache"
	local tmp=$work/bootstrap
	debootstrap --variant=minbase --include=git,make,ca-certificates "$suite" "$tmp" "$(mirror)"
	tar -C "$tmp" -cf "$base.part" . && mv "$base.part" "$base"
	rm -rf "$tmp"
}

prepare() {
	mkdir -p "$root"
	tar -C "$root" -xf "$base"
	# The host's apt sources (and their keys and settings), and its resolver.
	rm -rf "$root/etc/apt/sources.list.d" "$root/etc/apt/sources.list"
	cp -a /etc/apt/sources.list.d "$root/etc/apt/"
	[ -f /etc/apt/sources.list ] && cp -a /etc/apt/sources.list "$root/etc/apt/"
	cp -a /etc/apt/trusted.gpg.d/. "$root/etc/apt/trusted.gpg.d/" 2>/dev/null || true
	cp -an /usr/share/keyrings/. "$root/usr/share/keyrings/" 2>/dev/null || true
	for f in /etc/apt/apt.conf.d/*; do
		case $(basename "$f") in *proxy* | *Proxy* | 99*) cp -a "$f" "$root/etc/apt/apt.conf.d/" ;; esac
	done
	cp -L /etc/resolv.conf "$root/etc/resolv.conf"
	# Certificate authorities the host's network needs (a proxy's, say):
	# part of the machine, like its apt sources, not of the project.
	if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
		cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
		chroot "$root" update-ca-certificates >/dev/null
	fi
	# The project: a clean clone of HEAD, nothing ignored, no build/.
	git clone -q --no-hardlinks "$repo" "$root/root/pogo"
	git -C "$root/root/pogo" checkout -q "$(git -C "$repo" rev-parse HEAD)"
	# Go: a stock Debian 12 has none of the version go.mod needs.
	local goroot
	goroot=$(go env GOROOT)
	mkdir -p "$root/usr/local"
	cp -a "$goroot" "$root/usr/local/go"
}

mounts() {
	mount -t proc proc "$root/proc"
	mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
	mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
	mkdir -p "$root/run" && mount -t tmpfs tmpfs "$root/run"
	[ -e /dev/kvm ] && log "/dev/kvm passes through" || log "no /dev/kvm: TCG"
}

# inside CMD: runs CMD in the fresh root as root, with a login-like
# environment: only PATH, HOME, the Go proxy settings and TERM.
inside() {
	local env=(HOME=/root PATH=/usr/local/go/bin:/root/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
		LANG=C.UTF-8 TERM=dumb)
	local v
	for v in GOPROXY GOSUMDB GONOSUMDB GOPRIVATE GOINSECURE GOFLAGS; do
		env+=("$v=$(go env "$v")")
	done
	chroot "$root" /usr/bin/env -i "${env[@]}" /bin/bash -c "cd /root/pogo && $*" </dev/null
}

# The script make run's shell is fed: the board taken to U-Boot's prompt
# through j (the state machine stops autoboot), U-Boot answering a command
# there, then the board off.
run_script() {
	cat <<'SH'
set -e
j state bootloader
printf 'version\n' | timeout 20 j board console pipe --linger 3s > /tmp/uboot.out || true
grep -q 'U-Boot 20' /tmp/uboot.out
j board power off
j state | grep -q off
exit 0
SH
}

t_all=$(date +%s.%N)
if [ -f "$base" ]; then
	log "base root: $base (cached)"
else
	step debootstrap bootstrap
fi
step prepare prepare
step mount mounts
step make-test inside make test
run_script >"$root/root/run.sh"
step make-run inside 'make run < /root/run.sh'
printf 'fresh-check: %-10s %6.1f s\n' total "$(awk -v a="$t_all" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')" >&2
log "passed: make test and make run on a brand-new Debian $suite root"
