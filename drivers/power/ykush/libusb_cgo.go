//go:build cgo

package ykush

// #cgo pkg-config: libusb-1.0
// #include <libusb.h>
import "C"

import "fmt"

// USB reports the libusb this binary is linked against, as `jmp version -v`
// shows it: a build without cgo cannot drive a YKUSH hub.
func USB() (string, error) {
	v := C.libusb_get_version()
	return fmt.Sprintf("libusb %d.%d.%d", v.major, v.minor, v.micro), nil
}
