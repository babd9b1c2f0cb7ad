package flash

import (
	"encoding/binary"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pogolab/pogo/drivers/bmc/blob"
	"github.com/pogolab/pogo/lab/bmcsim/blobs"
	"github.com/pogolab/pogo/lab/bmcsim/flashconfig"
)

// bmc drives a real manager + handler with encoded blob requests.
type bmc struct {
	t   *testing.T
	h   *Handler
	m   *blobs.Manager
	dir string
}

func newBMC(t *testing.T, verify, update string, expiry time.Duration) *bmc {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	res := flashconfig.Parse("t.json", []byte(`[{"blob": "/flash/image", "handler": {"type": "file", "path": "/img"},
	 "actions": {"preparation": {"type": "systemd", "unit": "prep"}, "verification": {"type": "systemd", "unit": "verify"},
	 "update": {"type": "systemd", "unit": "update"}}}]`))
	if len(res.Problems) > 0 {
		t.Fatal(res.Problems)
	}
	dir := t.TempDir()
	prepCount := filepath.Join(dir, "prep-count")
	h := New(Options{Entries: res.Entries, Root: dir, Log: log, Runner: &Runner{Log: log, StandIns: map[string]string{
		"prep": "echo x >> " + prepCount, "verify": verify, "update": update}}})
	t.Cleanup(h.Reset)
	return &bmc{t: t, h: h, m: blobs.NewManager(log, expiry, h, &Cleanup{Files: h.StagedFiles, Log: log}), dir: dir}
}

func (b *bmc) do(sub blob.Subcommand, body []byte) ([]byte, byte) {
	resp, cc := b.m.Process(blob.EncodeRequest(sub, body))
	if cc != 0 {
		return nil, cc
	}
	out, err := blob.DecodeResponse(resp)
	if err != nil {
		b.t.Fatal(err)
	}
	return out, 0
}

func (b *bmc) open(id string, flags uint16) (uint16, byte) {
	out, cc := b.do(blob.Open, append(binary.LittleEndian.AppendUint16(nil, flags), append([]byte(id), 0)...))
	if cc != 0 {
		return 0, cc
	}
	return binary.LittleEndian.Uint16(out), 0
}

func (b *bmc) must(cc byte, what string) {
	b.t.Helper()
	if cc != 0 {
		b.t.Fatalf("%s: cc %#02x (state %v)", what, cc, b.h.State())
	}
}

func sess(s uint16, rest ...byte) []byte {
	return append(binary.LittleEndian.AppendUint16(nil, s), rest...)
}

func (b *bmc) upload(id string, data []byte) {
	b.t.Helper()
	s, cc := b.open(id, blob.FlagWrite|blob.TransportIPMI)
	b.must(cc, "open "+id)
	_, cc = b.do(blob.Write, append(sess(s, 0, 0, 0, 0), data...))
	b.must(cc, "write "+id)
	_, cc = b.do(blob.Close, sess(s))
	b.must(cc, "close "+id)
}

func (b *bmc) waitStatus(s uint16) blob.ActionStatus {
	b.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		out, cc := b.do(blob.SessionStat, sess(s))
		b.must(cc, "session stat")
		m, _ := blob.DecodeMeta(out)
		if st := blob.ActionStatus(m.Metadata[0]); st != blob.StatusRunning {
			return st
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.t.Fatal("action never finished")
	return 0
}

func TestStateMachineHappyPath(t *testing.T) {
	b := newBMC(t, "true", "true", 0)
	if ids := b.m.IDs(); !slices.Equal(ids, []string{blob.HashBlob, "/flash/image", blob.CleanupBlob}) {
		t.Fatalf("ids %v", ids)
	}
	if _, cc := b.open(blob.VerifyBlob, blob.FlagWrite); cc == 0 {
		t.Fatal("verify opened before any upload")
	}
	if _, cc := b.open("/flash/image", blob.FlagRead|blob.TransportIPMI); cc == 0 {
		t.Fatal("read-only open accepted")
	}
	if _, cc := b.open("/flash/image", blob.FlagWrite|blob.TransportLPC); cc == 0 {
		t.Fatal("lpc transport accepted")
	}
	s, cc := b.open("/flash/image", blob.FlagWrite|blob.TransportIPMI)
	b.must(cc, "open image")
	if _, cc := b.open(blob.HashBlob, blob.FlagWrite|blob.TransportIPMI); cc == 0 {
		t.Fatal("second flash session accepted")
	}
	if _, cc := b.open(ActiveImage, blob.FlagWrite); cc == 0 {
		t.Fatal("marker opened")
	}
	if _, cc := b.do(blob.Delete, []byte(ActiveImage+"\x00")); cc == 0 {
		t.Fatal("marker deleted while its blob is open")
	}
	_, cc = b.do(blob.Write, append(sess(s, 0, 0, 0, 0), "image"...))
	b.must(cc, "write")
	_, cc = b.do(blob.Close, sess(s))
	b.must(cc, "close")
	if b.h.State() != VerificationPending || !slices.Contains(b.m.IDs(), blob.VerifyBlob) {
		t.Fatalf("after image: %v %v", b.h.State(), b.m.IDs())
	}
	b.upload(blob.HashBlob, []byte("sig"))
	b.upload("/flash/image", []byte("image2")) // re-upload is fine before verify
	if got, _ := os.ReadFile(filepath.Join(b.dir, "img")); string(got) != "image2" {
		t.Errorf("staged image %q", got)
	}
	// Preparation runs asynchronously; wait for it, then check it ran once.
	<-b.h.packs["/flash/image"].prepare.(*unitAction).done
	if got, _ := os.ReadFile(filepath.Join(b.dir, "prep-count")); string(got) != "x\n" {
		t.Errorf("preparation ran %q, want once", got)
	}
	v, cc := b.open(blob.VerifyBlob, blob.FlagWrite)
	b.must(cc, "open verify")
	_, cc = b.do(blob.Commit, sess(v, 0))
	b.must(cc, "commit verify")
	if st := b.waitStatus(v); st != blob.StatusSuccess {
		t.Fatalf("verify %v", st)
	}
	if b.h.State() != VerificationCompleted || slices.Contains(b.m.IDs(), blob.UpdateBlob) {
		t.Fatalf("after verify: %v %v", b.h.State(), b.m.IDs())
	}
	_, cc = b.do(blob.Close, sess(v))
	b.must(cc, "close verify")
	if b.h.State() != UpdatePending || !slices.Contains(b.m.IDs(), blob.UpdateBlob) {
		t.Fatalf("after verify close: %v", b.h.State())
	}
	u, cc := b.open(blob.UpdateBlob, blob.FlagWrite)
	b.must(cc, "open update")
	_, cc = b.do(blob.Commit, sess(u, 0))
	b.must(cc, "commit update")
	if st := b.waitStatus(u); st != blob.StatusSuccess {
		t.Fatalf("update %v", st)
	}
	_, cc = b.do(blob.Close, sess(u))
	b.must(cc, "close update")
	if b.h.State() != NotYetStarted || len(b.m.IDs()) != 3 {
		t.Fatalf("end: %v %v", b.h.State(), b.m.IDs())
	}
	c, cc := b.open(blob.CleanupBlob, blob.FlagWrite)
	b.must(cc, "open cleanup")
	_, cc = b.do(blob.Commit, sess(c, 0))
	b.must(cc, "commit cleanup")
	if _, err := os.Stat(filepath.Join(b.dir, "img")); !os.IsNotExist(err) {
		t.Error("cleanup left the staged image")
	}
}

func TestStateMachineFailuresAndAborts(t *testing.T) {
	t.Run("verify fails", func(t *testing.T) {
		b := newBMC(t, "exit 1", "true", 0)
		b.upload("/flash/image", []byte("i"))
		b.upload(blob.HashBlob, []byte("s"))
		v, _ := b.open(blob.VerifyBlob, blob.FlagWrite)
		b.do(blob.Commit, sess(v, 0))
		if st := b.waitStatus(v); st != blob.StatusFailed {
			t.Fatalf("status %v", st)
		}
		out, _ := b.do(blob.SessionStat, sess(v))
		if m, _ := blob.DecodeMeta(out); m.State&blob.StateCommitError == 0 {
			t.Errorf("state bits %#x", m.State)
		}
		b.do(blob.Close, sess(v))
		if b.h.State() != NotYetStarted || slices.Contains(b.h.Transitions(), UpdatePending) {
			t.Errorf("transitions %v", b.h.Transitions())
		}
	})
	t.Run("close aborts running verify", func(t *testing.T) {
		b := newBMC(t, "exec sleep 30", "true", 0)
		b.upload("/flash/image", []byte("i"))
		v, _ := b.open(blob.VerifyBlob, blob.FlagWrite)
		b.do(blob.Commit, sess(v, 0))
		start := time.Now()
		_, cc := b.do(blob.Close, sess(v))
		b.must(cc, "close")
		if time.Since(start) > 5*time.Second || b.h.State() != NotYetStarted {
			t.Errorf("abort took %v, state %v", time.Since(start), b.h.State())
		}
	})
	t.Run("stale session expires", func(t *testing.T) {
		b := newBMC(t, "true", "true", 50*time.Millisecond)
		if _, cc := b.open("/flash/image", blob.FlagWrite|blob.TransportIPMI); cc != 0 {
			t.Fatal(cc)
		}
		time.Sleep(80 * time.Millisecond)
		b.m.ExpireStale()
		if b.m.OpenSessions() != 0 || b.h.State() != NotYetStarted || slices.Contains(b.m.IDs(), ActiveImage) {
			t.Errorf("after expiry: %d sessions, %v, %v", b.m.OpenSessions(), b.h.State(), b.m.IDs())
		}
	})
	t.Run("delete marker abandons update", func(t *testing.T) {
		b := newBMC(t, "true", "true", 0)
		b.upload("/flash/image", []byte("i"))
		_, cc := b.do(blob.Delete, []byte(ActiveImage+"\x00"))
		b.must(cc, "delete marker")
		if b.h.State() != NotYetStarted || slices.Contains(b.m.IDs(), ActiveImage) {
			t.Errorf("%v %v", b.h.State(), b.m.IDs())
		}
		if _, cc := b.do(blob.Delete, []byte("/flash/image\x00")); cc != blob.CCUnspecifiedError {
			t.Errorf("deleting an upload blob: cc %#02x", cc)
		}
	})
	t.Run("no stand-in no systemd", func(t *testing.T) {
		b := newBMC(t, "true", "true", 0)
		delete(b.h.packs["/flash/image"].verify.(*unitAction).r.StandIns, "verify")
		b.upload("/flash/image", []byte("i"))
		v, _ := b.open(blob.VerifyBlob, blob.FlagWrite)
		if _, cc := b.do(blob.Commit, sess(v, 0)); cc != blob.CCUnspecifiedError {
			t.Errorf("commit without a way to run the unit: cc %#02x", cc)
		}
	})
}

func TestFileSystemdStatus(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := &Runner{Log: log, StandIns: map[string]string{"u": `echo "$WORD extra" > "$BMCSIM_STATUS_FILE"`}}
	for word, want := range map[string]blob.ActionStatus{"running": blob.StatusRunning, "success": blob.StatusSuccess,
		"failed": blob.StatusFailed, "bogus": blob.StatusUnknown} {
		a := r.newAction(&flashconfig.Action{Type: flashconfig.TypeFileSystemdVerify, Unit: "u", Mode: "replace", Path: "/st"},
			func(p string) string { return filepath.Join(dir, p) }, nil)
		if err := a.trigger([]string{"WORD=" + word}); err != nil {
			t.Fatal(err)
		}
		<-a.(*fileStatusAction).done
		if got := a.status(); got != want {
			t.Errorf("%s: %v, want %v", word, got, want)
		}
	}
}
