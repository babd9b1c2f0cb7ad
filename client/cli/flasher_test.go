package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/pogolab/pogo/drivers/flasher"
)

// TestFlashProgressShowsVerify: the read-back reports progress the way the
// write does, and the last line gives both steps' figures.
func TestFlashProgressShowsVerify(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out)
	const total = 256 << 20
	p.event(flasher.Event{Phase: flasher.PhaseWrite, Message: "writing to /dev/vda", Total: total})
	p.event(flasher.Event{Phase: flasher.PhaseWrite, Done: 64 << 20, Total: total, Image: 64 << 20, MBps: 40})
	p.event(flasher.Event{Phase: flasher.PhaseWrite, Done: 128 << 20, Total: total, Image: 128 << 20, MBps: 41})
	p.event(flasher.Event{Phase: flasher.PhaseVerify, Message: "reading 268.4 MB of /dev/vda back", Total: total})
	p.event(flasher.Event{Phase: flasher.PhaseVerify, Done: 16 << 20, Total: total, Image: 16 << 20, MBps: 30})
	p.finish()
	text := out.String()
	for _, want := range []string{
		"write [=======                       ]  25.0%  67.1 MB written  40.0 MB/s\n",
		"verify: reading 268.4 MB of /dev/vda back\n",
		"verify [=                             ]   6.2%  16.8 MB read back  30.0 MB/s\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("progress output lacks %q:\n%s", want, text)
		}
	}
	// Within 5 s of the first, the write's second tick is not printed.
	if strings.Contains(text, "50.0%") {
		t.Errorf("a second line within 5 s:\n%s", text)
	}

	line := resultLine("os.img.xz", flasher.Result{
		SHA256: "ab12", Written: 256 << 20, Verified: 256 << 20, Target: "/dev/vda",
		Write: 5800 * time.Millisecond, Verify: 8 * time.Second, Duration: 40 * time.Second,
	})
	want := "flashed os.img.xz to /dev/vda: 268435456 bytes written in 5.8s (46.3 MB/s), 268435456 verified in 8s (33.6 MB/s); 40s in all, sha256 ab12; board powered off"
	if line != want {
		t.Errorf("result line\n got %s\nwant %s", line, want)
	}
}
