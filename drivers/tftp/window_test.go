package tftp

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// burst asks for name at blksize (0: none asked) without acknowledging
// anything and counts the distinct data blocks the server sends within d:
// 1 for a lock-step transfer, the window for an anticipating one. It
// aborts the transfer.
func burst(t *testing.T, addr *net.UDPAddr, name string, blksize int) int {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadBuffer(4 << 20)
	rrq := append([]byte{0, 1}, []byte(name+"\x00octet\x00")...)
	if blksize > 0 {
		rrq = append(rrq, []byte("blksize\x00"+strconv.Itoa(blksize)+"\x00")...)
	}
	if _, err := c.WriteToUDP(rrq, addr); err != nil {
		t.Fatal(err)
	}
	blocks := map[uint16]bool{}
	var from *net.UDPAddr
	deadline := time.Now().Add(300 * time.Millisecond)
	buf := make([]byte, 65536)
	for {
		_ = c.SetReadDeadline(deadline)
		n, a, err := c.ReadFromUDP(buf)
		if err != nil {
			break
		}
		switch op := binary.BigEndian.Uint16(buf); {
		case n >= 4 && op == 3:
			blocks[binary.BigEndian.Uint16(buf[2:])] = true
			from = a
		case op == 6 && from == nil:
			// The OACK: acknowledge it (block 0) to start the data.
			from = a
			_, _ = c.WriteToUDP([]byte{0, 4, 0, 0}, a)
		case n >= 4 && op == 5:
			t.Fatalf("server error: %q", buf[4:n])
		}
	}
	if from != nil {
		_, _ = c.WriteToUDP([]byte("\x00\x05\x00\x00probe done\x00"), from)
	}
	return len(blocks)
}

// TestWindow sends ahead for a windowed board and lock-step for another
// sharing the port (registered by another endpoint, as another exporter
// process would), caps the window by the block size, and delivers intact
// data either way.
func TestWindow(t *testing.T) {
	t.Parallel()
	hd, listen := t.TempDir(), freePort(t)
	data := random(256<<10 + 7)
	rootA, rootB := t.TempDir(), t.TempDir()
	for _, r := range []string{rootA, rootB} {
		if err := os.WriteFile(filepath.Join(r, "f"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a, err := Start(Config{Root: rootA, Listen: listen, Subdir: "a", HostDir: hd, Window: 8}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Start(Config{Root: rootB, Listen: listen, Subdir: "b", HostDir: hd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Serving() {
		t.Fatal("the second endpoint serves the port; want it shared")
	}
	addr := a.Addr()
	for _, tc := range []struct {
		name          string
		blksize, want int
	}{
		{"a/f", 0, 8},
		{"a/f", 1468, 8},
		{"a/f", 16384, 3}, // 64 KiB / 16388
		{"a/f", 65464, 1},
		{"b/f", 0, 1},
		{"b/f", 1468, 1},
		{"a/f", 1468, 8}, // b's request left nothing behind
	} {
		if n := burst(t, addr, tc.name, tc.blksize); n != tc.want {
			t.Errorf("%s at blksize %d: %d blocks sent before the first ack, want %d", tc.name, tc.blksize, n, tc.want)
		}
	}
	for _, name := range []string{"a/f", "b/f"} {
		for _, bs := range []int{0, 1468, 65464} {
			if got, err := fetch(addr.String(), name, bs); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s at blksize %d: %d bytes, %v", name, bs, len(got), err)
			}
		}
		if got, msg, err := hpaGet(t, addr, name); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("tftp-hpa %s: %d bytes %v (%s)", name, len(got), err, msg)
		}
	}

	// The holder goes away and comes back: whichever endpoint serves the
	// port now still sends b lock-step and a ahead, from the registry.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a, err = Start(Config{Root: rootA, Listen: listen, Subdir: "a", HostDir: hd, Window: 8}, nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	defer a.Close()
	for !a.Serving() && !b.Serving() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !a.Serving() && !b.Serving() {
		t.Fatal("nobody serves the port after its holder left")
	}
	if n := burst(t, addr, "a/f", 1468); n != 8 {
		t.Errorf("after the takeover: a/f sent %d blocks ahead, want 8", n)
	}
	if n := burst(t, addr, "b/f", 1468); n != 1 {
		t.Errorf("after the takeover: b/f sent %d blocks ahead, want 1", n)
	}
}

func TestParseRRQ(t *testing.T) {
	for _, tc := range []struct {
		pkt     string
		name    string
		blksize int
		ok      bool
	}{
		{"\x00\x01a/f\x00octet\x00", "a/f", 512, true},
		{"\x00\x01a/f\x00octet\x00blksize\x001468\x00tsize\x000\x00", "a/f", 1468, true},
		{"\x00\x01a/f\x00octet\x00BLKSIZE\x0065464\x00", "a/f", 65464, true},
		{"\x00\x01a/f\x00octet\x00blksize\x0099999\x00", "a/f", 512, true},
		{"\x00\x01a/f\x00octet\x00blksize\x00", "a/f", 512, true},
		{"\x00\x01a/f\x00octet", "", 0, false},
		{"\x00\x02a/f\x00octet\x00", "", 0, false},
		{"\x00\x04\x00\x01", "", 0, false},
		{"\x00", "", 0, false},
	} {
		name, bs, ok := parseRRQ([]byte(tc.pkt))
		if name != tc.name || bs != tc.blksize || ok != tc.ok {
			t.Errorf("parseRRQ(%q) = %q, %d, %v; want %q, %d, %v", tc.pkt, name, bs, ok, tc.name, tc.blksize, tc.ok)
		}
	}
}

func FuzzParseRRQ(f *testing.F) {
	f.Add([]byte("\x00\x01a/f\x00octet\x00blksize\x001468\x00"))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		name, bs, ok := parseRRQ(pkt)
		if ok && (bs < 8 || bs > 65464 || len(name) > len(pkt)) {
			t.Fatalf("parseRRQ(%q) = %q, %d", pkt, name, bs)
		}
	})
}
