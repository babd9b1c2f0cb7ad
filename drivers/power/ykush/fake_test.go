package ykush

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// fakeHub implements the YKUSH command table for one model: what a hub
// does with each report, independent of how the driver builds them.
type fakeHub struct {
	serial string
	pid    uint16

	mu   sync.Mutex
	on   map[int]bool
	sent []byte // command bytes, in order
	// stuck ports accept commands but do not switch.
	stuck map[int]bool
	// refuse makes every reply say "not ok".
	refuse bool
	// claimed is set while a session holds the interface, as libusb's
	// claim would be.
	claimed bool
}

func newFakeHub(serial string, pid uint16) *fakeHub {
	return &fakeHub{serial: serial, pid: pid, on: map[int]bool{}, stuck: map[int]bool{}}
}

// validPort reports whether the model answers port p (0xA: all).
func (f *fakeHub) validPort(p int, all bool) bool {
	switch f.pid {
	case 0xF0CD: // YKUSHXS: one port, no all command
		return p == 1
	case 0xF11B: // YKUSH3: 1..3, 4, all
		return p >= 1 && p <= 4 || all && p == 0xA
	}
	return p >= 1 && p <= 3 || all && p == 0xA
}

func (f *fakeHub) exchange(report []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	size := 64
	if f.pid == 0x0042 {
		size = 6
	}
	if len(report) != size {
		return nil, fmt.Errorf("fake %s: %d-byte report, this firmware takes %d", f.serial, len(report), size)
	}
	cmd := report[0]
	f.sent = append(f.sent, cmd)
	reply := make([]byte, size)
	op, p := cmd&0xF0, int(cmd&0x0F)
	ok := !f.refuse
	switch {
	case (op == 0x10 || op == 0x00) && f.validPort(p, true):
		ports := []int{p}
		if p == 0xA {
			ports = []int{1, 2, 3}
		}
		for _, q := range ports {
			if !f.stuck[q] {
				f.on[q] = op == 0x10
			}
		}
		reply[1] = cmd
	case op == 0x20 && f.validPort(p, false):
		reply[1] = byte(p)
		if f.on[p] {
			reply[1] |= 0x10
		}
	default:
		ok = false
	}
	if ok {
		reply[0] = 0x01
	}
	return reply, nil
}

func (f *fakeHub) commands() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]byte(nil), f.sent...)
}

func (f *fakeHub) clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = nil
}

func (f *fakeHub) isOn(p int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.on[p]
}

// fakeBus is a USB bus with fake hubs attached.
type fakeBus struct {
	mu   sync.Mutex
	hubs []*fakeHub
	// listErr fails discovery, as libusb would without usbfs.
	listErr error
}

func (b *fakeBus) Hubs(ctx context.Context) ([]hubInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.listErr != nil {
		return nil, b.listErr
	}
	var out []hubInfo
	for _, h := range b.hubs {
		out = append(out, hubInfo{Serial: h.serial, Product: h.pid})
	}
	return out, nil
}

func (b *fakeBus) Open(ctx context.Context, serial string) (hid, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, h := range b.hubs {
		if h.serial != serial {
			continue
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.claimed {
			return nil, errors.New("fake: interface busy (claimed by another session)")
		}
		h.claimed = true
		return &fakeHID{hub: h}, nil
	}
	return nil, fmt.Errorf("fake: hub %s is not attached", serial)
}

func (b *fakeBus) unplug(serial string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, h := range b.hubs {
		if h.serial == serial {
			b.hubs = append(b.hubs[:i], b.hubs[i+1:]...)
			return
		}
	}
}

type fakeHID struct {
	hub    *fakeHub
	closed bool
}

func (h *fakeHID) Exchange(ctx context.Context, report []byte) ([]byte, error) {
	if h.closed {
		return nil, errors.New("fake: exchange after close")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return h.hub.exchange(report)
}

func (h *fakeHID) Close() error {
	if h.closed {
		return errors.New("fake: closed twice")
	}
	h.closed = true
	h.hub.mu.Lock()
	h.hub.claimed = false
	h.hub.mu.Unlock()
	return nil
}
