//go:build !cgo

package ykush

// openBus has no USB without cgo: gousb binds libusb through cgo.
func openBus() (bus, error) { return nil, errNoUSB }
