#!/usr/bin/env bash
# Installs the Debian packages pogo's tests and the virtual board need,
# only those missing, as root or through sudo. Safe to run again.
set -euo pipefail

pkgs=(
  protobuf-compiler   # make generate / the staleness check
  socat               # pty pairs for serial tests and make run
  qemu-system-arm     # the virtual board
  u-boot-qemu         # its firmware
  cpio mtools fdisk xz-utils zstd bzip2  # board assets and image formats
  tftp-hpa tftpd-hpa  # TFTP interop and baseline
  snmpd snmp          # SNMP PDU tests
  ipmitool            # BMC interop
  etcd-server         # external etcd for controller HA tests
  docker-registry     # OCI bundle push/pull tests
  bmap-tools          # bmap fixtures
  libusb-1.0-0-dev    # gousb (YKUSH)
)
if [ -n "${POGO_DEPS_EXTRA:-}" ]; then
  read -r -a extra <<<"$POGO_DEPS_EXTRA"
  pkgs+=("${extra[@]}")
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "deps: installing ${missing[*]}" >&2
# Packages with daemons (tftpd-hpa, snmpd, etcd) must not start them: tests
# start their own on loopback, and port 69 belongs to pogo's TFTP driver.
policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  created_policy=1
fi
trap '[ -n "$created_policy" ] && $sudo rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
