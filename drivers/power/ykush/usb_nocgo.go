//go:build !cgo

package ykush

// openBus has no USB without cgo: gousb binds libusb through cgo.
func openBus() (bus, error) { return nil, errNoUSB }

// USB reports the libusb this binary is linked against; without cgo there
// is none.
func USB() (string, error) { return "", errNoUSB }
