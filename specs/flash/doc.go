// Package flash holds the flash specs: an OS image written to the virtual
// board through its flasher (U-Boot, TFTP, the flasher initramfs, HTTP)
// by `j storage flash` inside `jmp shell`, as a user would, then checked
// on the disk and by booting it.
package flash
