#!/usr/bin/env bash
# Smoke test of the board assets under QEMU (TCG, no KVM). Needs the outputs of build.sh and
# socat (a tiny HTTP server on 127.0.0.1 stands in for the lab's http driver).
#
#   1. flasher kernel + initramfs (-kernel/-initrd): shell, DHCP 10.0.2.15, ^C, wget | sha256sum,
#      wget | dd of=/dev/vda of demo-os.img
#   2. U-Boot from power-on with the flashed disk: standard boot finds extlinux.conf by itself,
#      demo banner with the expected version
#   3. U-Boot interrupted at the prompt: dhcp, tftpboot (QEMU's built-in TFTP), booti of the flasher
#
# Usage: lab/board/check.sh [OUTDIR]      (default: <repo>/build/board)
# CHECK_LOGS=DIR keeps the serial logs of the three boots.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/build/board}
uboot=/usr/lib/u-boot/qemu_arm64/u-boot.bin

for f in Image initramfs.cpio.gz demo-os.img demo-os.version; do
	[ -s "$out/$f" ] || { echo "check: missing $out/$f (run lab/board/build.sh)" >&2; exit 1; }
done
command -v socat >/dev/null || { echo "check: needs socat" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ -n "${CHECK_LOGS:-}" ]; then mkdir -p "$CHECK_LOGS" && cp "$tmp"/*.log "$CHECK_LOGS"/ 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "check: FAIL: $*" >&2; [ -n "${log:-}" ] && tail -c 3000 "$log" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# start_qemu NAME QEMU-ARGS... : serial on stdio, input from a fifo on fd 3, output to $log
start_qemu() {
	local name=$1; shift
	log=$tmp/$name.log
	: >"$log"
	mkfifo "$tmp/$name.in"
	timeout 300 qemu-system-aarch64 -M virt -cpu cortex-a57 -m 1024 -nographic -no-reboot "$@" \
		<"$tmp/$name.in" >"$log" 2>&1 &
	qpid=$!
	pids+=("$qpid")
	exec 3>"$tmp/$name.in"
	t0=$(now)
}

stop_qemu() {
	exec 3>&-
	kill "$qpid" 2>/dev/null || true
	wait "$qpid" 2>/dev/null || true
}

# wait_for TEXT TIMEOUT : returns once TEXT is in the log; sets $elapsed (seconds since power-on)
wait_for() {
	local text=$1 limit=$2 start
	start=$(now)
	while ! grep -qF -- "$text" "$log"; do
		kill -0 "$qpid" 2>/dev/null || fail "qemu exited while waiting for '$text'"
		[ "$(since "$start" | cut -d. -f1)" -lt "$limit" ] || fail "timeout waiting for '$text'"
		sleep 0.05
	done
	elapsed=$(since "$t0")
}

send() { printf '%s' "$1" >&3; }

# run CMD TIMEOUT : runs CMD in the board's shell, waits for it and requires exit status 0
n=0
run() {
	n=$((n + 1))
	send "$1; echo \"@@do\"\"ne-$n-\$?@@\""$'\n'
	wait_for "@@done-$n-" "${2:-30}"
	grep -qF "@@done-$n-0@@" "$log" || fail "command failed: $1"
}

port=$((18000 + RANDOM % 2000))
cat >"$tmp/httpd.sh" <<'EOF'
#!/bin/bash
# One HTTP/1.0 response per connection: the file named in $1, whatever the request.
while IFS= read -r l; do [ -z "${l%$'\r'}" ] && break; done
printf 'HTTP/1.0 200 OK\r\nContent-Length: %s\r\n\r\n' "$(stat -c %s "$1")"
exec cat "$1"
EOF
socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" EXEC:"bash $tmp/httpd.sh $out/demo-os.img" &
pids+=($!)
want_sha=$(sha256sum <"$out/demo-os.img" | cut -d' ' -f1)
version=$(cat "$out/demo-os.version")
disk=$tmp/disk.img
truncate -s 256M "$disk"
net=(-netdev "user,id=n0,tftp=$out" -device "virtio-net-device,netdev=n0")
blk=(-drive "if=none,file=$disk,format=raw,id=d0" -device "virtio-blk-device,drive=d0")

echo "== 1. flasher (kernel + initramfs)"
start_qemu flasher -kernel "$out/Image" -initrd "$out/initramfs.cpio.gz" \
	-append "console=ttyAMA0 rdinit=/init" "${net[@]}" "${blk[@]}"
wait_for "pogo-flasher ready" 90
t_ready=$elapsed
grep -qF "pogo-flasher ready ip=10.0.2.15 disk=/dev/vda" "$log" || fail "flasher not on 10.0.2.15 with /dev/vda"
run "true"
t_shell=$elapsed
run "ip route | grep -q 'default via 10.0.2.2'"
run "for t in wget dd sha256sum sync gzip gunzip xz unxz xzcat; do command -v \$t >/dev/null || exit 1; done"
run "echo pogo | gzip -n | gunzip | grep -qx pogo"
# ^C must reach the foreground job: the shell owns the console as its controlling tty.
send $'sleep 60\n'
sleep 1
send $'\x03'
run "true" 5
run "wget -q -O - http://10.0.2.2:$port/demo-os.img | sha256sum | tee /tmp/sum" 120
grep -qF "$want_sha" "$log" || fail "sha256 over wget differs"
t1=$(now)
run "wget -q -O - http://10.0.2.2:$port/demo-os.img | dd of=/dev/vda bs=1M conv=fsync 2>/dev/null && sync" 120
t_flash=$(since "$t1")
stop_qemu
cmp -n "$(stat -c %s "$out/demo-os.img")" "$disk" "$out/demo-os.img" || fail "flashed disk differs"
echo "   ready line ${t_ready}s, shell ${t_shell}s after start; 64 MiB wget|dd+sync ${t_flash}s; disk matches"

echo "== 2. U-Boot standard boot of the flashed disk"
start_qemu demo -bios "$uboot" "${net[@]}" "${blk[@]}"
wait_for "U-Boot 20" 30
t_uboot=$elapsed
wait_for "Hit any key to stop autoboot" 30
t_hit=$elapsed
wait_for "pogo demo OS version $version" 90
t_banner=$elapsed
run "cat /etc/pogo/version | grep -qx '$version'"
stop_qemu
echo "   U-Boot banner ${t_uboot}s, autoboot countdown ${t_hit}s, demo banner ${t_banner}s"

echo "== 3. U-Boot prompt, dhcp + tftpboot + booti of the flasher"
start_qemu uboot -bios "$uboot" "${net[@]}" "${blk[@]}"
wait_for "Hit any key to stop autoboot" 30
send " "
wait_for "=> " 10
t_prompt=$elapsed
send $'setenv autoload no; dhcp\n'
wait_for "DHCP client bound to address 10.0.2.15" 30
t1=$(now)
send $'tftpboot 0x40400000 Image\n'
wait_for "Bytes transferred = $(stat -c %s "$out/Image")" 200
t_tftp=$(since "$t1")
send $'tftpboot 0x48000000 initramfs.cpio.gz\n'
wait_for "Bytes transferred = $(stat -c %s "$out/initramfs.cpio.gz")" 60
send $'setenv bootargs console=ttyAMA0 rdinit=/init; booti 0x40400000 0x48000000:${filesize} ${fdtcontroladdr}\n'
t1=$(now)
wait_for "pogo-flasher ready ip=10.0.2.15" 90
t_booti=$(since "$t1")
run "true"
stop_qemu
echo "   U-Boot prompt ${t_prompt}s; tftp of Image (QEMU's TFTP) ${t_tftp}s; booti -> ready ${t_booti}s"
echo "check: OK"
