#!/usr/bin/env bash
# make run on the virtual board: builds the board assets (cached), then
# opens a jmp shell on the config whose tftp server already holds the
# flasher kernel and initramfs.
# Usage: lab/host/run-qemu.sh JMP CONFIG
set -euo pipefail
jmp=$1 cfg=$2
bash lab/board/build.sh build/board
rc=$(mktemp)
trap 'rm -f "$rc"' EXIT
cat >"$rc" <<'RC'
[ -f ~/.bashrc ] && . ~/.bashrc
j tftp put build/board/Image Image >/dev/null
j tftp put build/board/initramfs.cpio.gz initramfs.cpio.gz >/dev/null
prefix=$(j tftp url | sed 's|^tftp://[^/]*/||')
cat <<EOT
Virtual board ready (board 10.0.2.15; TFTP server 127.0.0.1 as the board sees it).
  j board power on; j board console console    (Ctrl-B three times leaves)
  at the U-Boot prompt:
    setenv autoload no; dhcp; setenv serverip 127.0.0.1
    tftpboot 0x40400000 ${prefix}Image; tftpboot 0x48000000 ${prefix}initramfs.cpio.gz
    setenv bootargs console=ttyAMA0 rdinit=/init
    booti 0x40400000 0x48000000:\${filesize} \${fdtcontroladdr}
  j board storage write build/board/demo-os.img   (powered off) boots the demo OS
  j storage flash build/board/demo-os.img          flashes it through U-Boot, TFTP, busybox and HTTP
EOT
RC
exec "$jmp" shell --exporter-config "$cfg" -- bash --rcfile "$rc" -i
