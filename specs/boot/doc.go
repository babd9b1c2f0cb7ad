// Package boot holds the boot specs (labels qemu, boot): power on, reach
// U-Boot, boot over TFTP and from the disk, hard power cuts, bad input.
// They drive the board only through the exporter's gRPC API, so they run
// against the virtual board and a real one alike.
package boot
