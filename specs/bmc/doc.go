// Package bmc holds the BMC firmware-update specs (label bmc): the BMC
// simulator runs as a real `jmp bmc-sim` process speaking lanplus on
// loopback UDP, and every update goes through an exporter serving the bmc
// driver — in-process over its unix socket, or inside `jmp shell` driven
// by the `j bmc` CLI. Debian's ipmitool checks the simulator from outside.
package bmc
