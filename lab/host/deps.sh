#!/usr/bin/env bash
# Installs the Debian packages pogo needs (lab/host/packages.txt, the only
# list), only those missing, as root or through sudo. Safe to run again.
#   lab/host/deps.sh          install what is missing
#   lab/host/deps.sh --list   print the list, one package a line
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mapfile -t pkgs < <(sed -e 's/#.*//' "$here/packages.txt" | tr -s ' \t' '\n' | sed '/^$/d')
if [ "${1:-}" = --list ]; then
  printf '%s\n' "${pkgs[@]}"
  exit 0
fi
if [ -n "${POGO_DEPS_EXTRA:-}" ]; then
  read -r -a extra <<<"$POGO_DEPS_EXTRA"
  pkgs+=("${extra[@]}")
fi
command -v dpkg-query >/dev/null || { echo "deps: not a Debian system (no dpkg-query): install by hand: ${pkgs[*]}" >&2; exit 1; }

# One dpkg-query for the lot: the installed ones, then the rest are missing.
mapfile -t installed < <(dpkg-query -W -f='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null | awk '/ install ok installed$/ {print $1}')
missing=()
for p in "${pkgs[@]}"; do
  [[ " ${installed[*]} " == *" $p "* ]] || missing+=("$p")
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
$sudo apt-get -o DPkg::Lock::Timeout=300 update -qq
$sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
