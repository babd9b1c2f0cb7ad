//go:build cgo

package ykush

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/gousb"
)

// exchangeTimeout bounds one command when the caller's context has no
// earlier deadline: a hub answers in a few milliseconds or not at all.
const exchangeTimeout = 2 * time.Second

// usbBus is the hubs on this host's USB, through libusb.
type usbBus struct {
	mu  sync.Mutex
	ctx *gousb.Context
}

func openBus() (b bus, err error) {
	// gousb panics when libusb cannot initialise (no usbfs, say).
	defer func() {
		if r := recover(); r != nil {
			b, err = nil, fmt.Errorf("ykush: init libusb: %v", r)
		}
	}()
	return &usbBus{ctx: gousb.NewContext()}, nil
}

func (u *usbBus) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ctx == nil {
		return nil
	}
	err := u.ctx.Close()
	u.ctx = nil
	return err
}

// open opens every attached hub; the caller closes them.
func (u *usbBus) open() ([]*gousb.Device, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ctx == nil {
		return nil, errors.New("usb context closed")
	}
	devs, err := u.ctx.OpenDevices(func(d *gousb.DeviceDesc) bool {
		return d.Vendor == VendorID && knownProduct(uint16(d.Product))
	})
	// An error with devices means some other hub could not be opened
	// (permissions, usually); work with the ones that could.
	if err != nil && len(devs) == 0 {
		return nil, fmt.Errorf("open USB devices (udev rule or permissions for %04x?): %w", VendorID, err)
	}
	return devs, nil
}

func (u *usbBus) Hubs(ctx context.Context) ([]hubInfo, error) {
	devs, err := u.open()
	if err != nil {
		return nil, err
	}
	var hubs []hubInfo
	for _, d := range devs {
		serial, err := d.SerialNumber()
		if err != nil {
			serial = "?" + d.String()
		}
		hubs = append(hubs, hubInfo{Serial: serial, Product: uint16(d.Desc.Product)})
		d.Close()
	}
	return hubs, nil
}

func (u *usbBus) Open(ctx context.Context, serial string) (hid, error) {
	devs, err := u.open()
	if err != nil {
		return nil, err
	}
	var dev *gousb.Device
	for _, d := range devs {
		if s, err := d.SerialNumber(); err == nil && s == serial && dev == nil {
			dev = d
			continue
		}
		d.Close()
	}
	if dev == nil {
		return nil, fmt.Errorf("hub %s is not attached", serial)
	}
	h, err := claim(dev)
	if err != nil {
		dev.Close()
		return nil, err
	}
	return h, nil
}

// usbHID is a claimed hub interface: interrupt IN for replies, interrupt
// OUT (or SET_REPORT when the hub has none) for commands.
type usbHID struct {
	dev  *gousb.Device
	intf *gousb.Interface
	done func()
	in   *gousb.InEndpoint
	out  *gousb.OutEndpoint
}

func claim(dev *gousb.Device) (*usbHID, error) {
	// The kernel's usbhid driver owns the interface; take it for the
	// exchange and give it back on close.
	if err := dev.SetAutoDetach(true); err != nil {
		return nil, fmt.Errorf("detach kernel driver: %w", err)
	}
	intf, done, err := dev.DefaultInterface()
	if err != nil {
		return nil, fmt.Errorf("claim HID interface: %w", err)
	}
	h := &usbHID{dev: dev, intf: intf, done: done}
	for _, ep := range intf.Setting.Endpoints {
		if ep.TransferType != gousb.TransferTypeInterrupt {
			continue
		}
		switch {
		case ep.Direction == gousb.EndpointDirectionIn && h.in == nil:
			h.in, err = intf.InEndpoint(ep.Number)
		case ep.Direction == gousb.EndpointDirectionOut && h.out == nil:
			h.out, err = intf.OutEndpoint(ep.Number)
		}
		if err != nil {
			done()
			return nil, fmt.Errorf("open endpoint %s: %w", ep.Address, err)
		}
	}
	if h.in == nil {
		done()
		return nil, errors.New("hub has no interrupt IN endpoint")
	}
	return h, nil
}

func (h *usbHID) Exchange(ctx context.Context, report []byte) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, exchangeTimeout)
		defer cancel()
	}
	if h.out != nil {
		if _, err := h.out.WriteContext(ctx, report); err != nil {
			return nil, fmt.Errorf("write report: %w", err)
		}
	} else {
		// HID class SET_REPORT, output report 0.
		const reqType, setReport, output = 0x21, 0x09, 0x0200
		if _, err := h.dev.Control(reqType, setReport, output, uint16(h.intf.Setting.Number), report); err != nil {
			return nil, fmt.Errorf("set report: %w", err)
		}
	}
	buf := make([]byte, max(len(report), h.in.Desc.MaxPacketSize))
	n, err := h.in.ReadContext(ctx, buf)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	return buf[:n], nil
}

func (h *usbHID) Close() error {
	h.done()
	return h.dev.Close()
}
