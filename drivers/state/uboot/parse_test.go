package uboot

import (
	"strings"
	"testing"
)

// FuzzConsoleParsing feeds console output (outside input) to what reads
// it: no panics, and the status marker is found only as the board prints
// it.
func FuzzConsoleParsing(f *testing.F) {
	f.Add("true; echo pogo-rc=$?\r\npogo-rc=0\r\n# \x1b[6n")
	f.Add("tftpboot 0x40400000 x\r\nTFTP error: 'File not found' (1)\r\n=> ")
	f.Fuzz(func(t *testing.T, s string) {
		_ = ErrorLine(s)
		_ = LastLine(s)
		_ = lastLines(s, 3)
		if m := rcMarker.FindStringSubmatch(s); m != nil && strings.Contains(m[0], "$") {
			t.Fatalf("status marker %q matched an echoed command", m[0])
		}
	})
}

func TestErrorLine(t *testing.T) {
	out := "Using virtio-net#32 device\r\nTFTP from server 127.0.0.1; our IP address is 10.0.2.15\r\nFilename 'x/Image'.\r\nTFTP error: 'File not found' (1)\r\nNot retrying...\r\n"
	if got := ErrorLine(out); got != "TFTP error: 'File not found' (1)" {
		t.Fatalf("ErrorLine = %q", got)
	}
	if got := LastLine("a\r\nb \x1b[6n\r\n# "); got != "b" {
		t.Fatalf("LastLine = %q", got)
	}
	if got := lastLines("x\r\n\r\ny\r\nz \x1b[6n\r\n", 2); got != "y\nz" {
		t.Fatalf("lastLines = %q", got)
	}
}
