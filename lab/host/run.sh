#!/usr/bin/env bash
# make run: brings up what exporter.yaml needs on this host and opens a
# jmp shell on it. Without a real board, the serial port is a pty pair
# whose far end is a shell standing in for the board's console.
set -euo pipefail
jmp=$1 cfg=$2
run=build/run
mkdir -p "$run"
socat pty,link="$run/board.tty",raw,echo=0 \
  EXEC:'/bin/sh -i',pty,stderr,setsid,sigint,sane 2>"$run/socat.log" &
far=$!
trap 'kill $far 2>/dev/null; wait $far 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -e "$run/board.tty" ] && break; sleep 0.1; done
echo "jmp shell on $cfg — try: j, j power on, j serial console (Ctrl-B ×3 leaves); exit to leave" >&2
"$jmp" shell --exporter-config "$cfg"
