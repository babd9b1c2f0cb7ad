package bmcsim

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers/bmc/blob"
	"github.com/pogolab/pogo/drivers/bmc/ipmi"
	"github.com/pogolab/pogo/lab/bmcsim/flash"
)

const goodSig = "good-signature"

// standIns plays every unit of the example configs: verification accepts
// only goodSig, update copies the staged image to <image>.applied.
func standIns(over map[string]string) map[string]string {
	verify := `sleep 0.1; test "$(cat "$BMCSIM_HASH")" = ` + goodSig
	update := `sleep 0.1; cp "$BMCSIM_IMAGE" "$BMCSIM_IMAGE.applied"`
	m := map[string]string{
		"phosphor-ipmi-flash-bmc-prepare.target":  "true",
		"phosphor-ipmi-flash-bmc-verify.target":   verify,
		"phosphor-ipmi-flash-bmc-update.target":   update,
		"phosphor-ipmi-flash-bios-prepare.target": "true",
		"phosphor-ipmi-flash-bios-verify.target":  verify,
		"phosphor-ipmi-flash-bios-update.target":  update,
	}
	for k, v := range over {
		m[k] = v
	}
	return m
}

func dialSim(t testing.TB, s *testSim, suite int) *ipmi.Transport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr, err := ipmi.Dial(ctx, ipmi.Config{
		Host: s.Host, Port: s.Port, Username: testUser, Password: testPass,
		CipherSuite: suite, Timeout: 150 * time.Millisecond, Retries: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = tr.Close(ctx)
	})
	return tr
}

// progressLog records what the client reported and what the simulator
// looked like at that moment; the client calls back between commands, so
// the snapshot is consistent with the protocol exchange.
type progressLog struct {
	mu    sync.Mutex
	sim   *testSim
	steps []step
}

type step struct {
	p     blob.Progress
	state flash.State
	ids   []string
}

func (l *progressLog) record(p blob.Progress) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.Total > 0 && p.Done != p.Total && p.Done > int64(512) {
		return // keep the log small: first and last chunk only
	}
	l.steps = append(l.steps, step{p, l.sim.Flash().State(), l.sim.Blobs().IDs()})
}

func (l *progressLog) find(phase blob.Phase, msg string) (step, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.steps {
		if s.p.Phase == phase && (msg == "" || s.p.Message == msg) {
			return s, true
		}
	}
	return step{}, false
}

func newUpdater(s *testSim, tr blob.Transport, log *progressLog) *blob.Updater {
	return &blob.Updater{
		Client:        &blob.Client{T: tr},
		PollStart:     10 * time.Millisecond,
		PollMax:       50 * time.Millisecond,
		ActionTimeout: 20 * time.Second,
		RetryDelay:    100 * time.Millisecond,
		Progress:      log.record,
		Log:           testLogger(nil),
	}
}

func randomImage(t testing.TB, n int) []byte {
	img := make([]byte, n)
	_, _ = rand.Read(img)
	return img
}

func updateReq(typ string, img []byte, sig string) blob.Request {
	return blob.Request{Type: typ, Image: bytes.NewReader(img), ImageSize: int64(len(img)), Signature: []byte(sig)}
}

func TestUpdateEachExampleConfig(t *testing.T) {
	cases := []struct {
		config, typ, image string
		reboot             bool
	}{
		{"config-static-bmc.json", "image", "run/initramfs/bmc-image", false},
		{"config-bios.json", "bios", "tmp/bios-image", false},
		{"config-static-bmc-reboot.json", "image", "run/initramfs/bmc-image", true},
	}
	for _, tc := range cases {
		for _, suite := range []int{17, 3} {
			t.Run(tc.config+"/suite="+strconv.Itoa(suite), func(t *testing.T) {
				t.Parallel()
				s := startSim(t, withConfigDir(exampleDir(t, tc.config)), withStandIns(standIns(nil)))
				tr := dialSim(t, s, suite)
				log := &progressLog{sim: s}
				u := newUpdater(s, tr, log)
				img := randomImage(t, 64<<10+123)
				base := s.Blobs().IDs()
				want := []string{blob.HashBlob, blob.BlobID(tc.typ), blob.CleanupBlob}
				if !slices.Equal(base, want) {
					t.Fatalf("initial blobs %v, want %v", base, want)
				}

				if err := u.Update(context.Background(), updateReq(tc.typ, img, goodSig)); err != nil {
					t.Fatalf("update: %v", err)
				}

				// Uploading the hash: the image is closed, both markers exist,
				// nothing to verify yet because an upload is in progress.
				st, ok := log.find(blob.PhaseHash, "")
				if !ok || st.state != flash.UploadInProgress ||
					!slices.Contains(st.ids, flash.ActiveImage) || !slices.Contains(st.ids, flash.ActiveHash) ||
					slices.Contains(st.ids, blob.VerifyBlob) {
					t.Errorf("during hash upload: state %v blobs %v", st.state, st.ids)
				}
				st, ok = log.find(blob.PhaseVerify, "running")
				if !ok || st.state != flash.VerificationStarted || !slices.Contains(st.ids, blob.VerifyBlob) || slices.Contains(st.ids, blob.UpdateBlob) {
					t.Errorf("during verify: state %v blobs %v", st.state, st.ids)
				}
				staged := filepath.Join(s.State, tc.image)
				if tc.reboot {
					if _, ok := log.find(blob.PhaseUpdate, "BMC rebooted; update applied"); !ok {
						t.Errorf("client did not notice the reboot: %+v", log.steps)
					}
					if s.Reboots() != 1 {
						t.Errorf("reboots = %d, want 1", s.Reboots())
					}
				} else {
					st, ok = log.find(blob.PhaseUpdate, "running")
					if !ok || st.state != flash.UpdateStarted || !slices.Contains(st.ids, blob.UpdateBlob) {
						t.Errorf("during update: state %v blobs %v", st.state, st.ids)
					}
					applied, err := os.ReadFile(staged + ".applied")
					if err != nil || !bytes.Equal(applied, img) {
						t.Errorf("applied image differs from upload (err %v, %d bytes)", err, len(applied))
					}
					wantSeq := []flash.State{flash.UploadInProgress, flash.VerificationPending, flash.UploadInProgress,
						flash.VerificationPending, flash.VerificationStarted, flash.VerificationCompleted,
						flash.UpdatePending, flash.UpdateStarted, flash.UpdateCompleted, flash.NotYetStarted}
					if got := s.Flash().Transitions(); !slices.Equal(got, wantSeq) {
						t.Errorf("transitions %v, want %v", got, wantSeq)
					}
				}
				if got := s.Blobs().IDs(); !slices.Equal(got, want) {
					t.Errorf("final blobs %v, want %v", got, want)
				}
				if s.Flash().State() != flash.NotYetStarted {
					t.Errorf("final state %v", s.Flash().State())
				}
			})
		}
	}
}

func TestRebootDuringUpdatePoll(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		name := "poll"
		if ignore {
			name = "ignore-update"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := startSim(t, withConfigDir(exampleDir(t, "config-static-bmc-reboot.json")), withStandIns(standIns(nil)))
			tr := dialSim(t, s, 0)
			log := &progressLog{sim: s}
			u := newUpdater(s, tr, log)
			req := updateReq("image", randomImage(t, 4096), goodSig)
			req.IgnoreUpdate = ignore
			start := time.Now()
			if err := u.Update(context.Background(), req); err != nil {
				t.Fatalf("update: %v", err)
			}
			if ignore {
				if _, ok := log.find(blob.PhaseUpdate, "committed; not waiting for the result"); !ok {
					t.Error("ignore-update still polled")
				}
				// The BMC must still go away and come back.
				deadline := time.Now().Add(5 * time.Second)
				for s.Reboots() == 0 && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
			} else if time.Since(start) < 400*time.Millisecond {
				t.Errorf("client returned before the BMC came back (%v)", time.Since(start))
			}
			if s.Reboots() != 1 {
				t.Fatalf("reboots = %d", s.Reboots())
			}
			// After the reboot a fresh session sees a clean BMC.
			c := &blob.Client{T: dialSim(t, s, 0)}
			ids, err := c.List(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(ids, func(id string) bool { return strings.HasPrefix(id, blob.ActivePfx) || id == blob.VerifyBlob }) {
				t.Errorf("state survived the reboot: %v", ids)
			}
		})
	}
}

func TestVerificationFails(t *testing.T) {
	s := startSim(t, withConfigDir(exampleDir(t, "config-static-bmc.json")), withStandIns(standIns(nil)))
	log := &progressLog{sim: s}
	u := newUpdater(s, dialSim(t, s, 0), log)
	err := u.Update(context.Background(), updateReq("image", randomImage(t, 10000), "forged"))
	if err == nil {
		t.Fatal("update with a bad signature succeeded")
	}
	var pe *blob.PhaseError
	if !errors.As(err, &pe) || pe.Phase != blob.PhaseVerify || !errors.Is(err, blob.ErrActionFailed) {
		t.Fatalf("error %v does not name the verify phase", err)
	}
	if !strings.Contains(err.Error(), "verify: BMC reported failed") {
		t.Errorf("error text %q", err)
	}
	if slices.Contains(s.Flash().Transitions(), flash.UpdatePending) {
		t.Error("/flash/update appeared after a failed verification")
	}
	for _, st := range log.steps {
		if slices.Contains(st.ids, blob.UpdateBlob) {
			t.Errorf("/flash/update listed at %+v", st.p)
		}
	}
	if _, ok := log.find(blob.PhaseCleanup, ""); !ok {
		t.Error("cleanup did not run")
	}
	for _, f := range s.Flash().StagedFiles() {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("staged file %s survived cleanup (%v)", f, err)
		}
	}
	if s.Flash().State() != flash.NotYetStarted || s.Blobs().OpenSessions() != 0 {
		t.Errorf("BMC left in %v with %d open sessions", s.Flash().State(), s.Blobs().OpenSessions())
	}
}

func TestUpdateActionFails(t *testing.T) {
	s := startSim(t, withConfigDir(exampleDir(t, "config-bios.json")),
		withStandIns(standIns(map[string]string{"phosphor-ipmi-flash-bios-update.target": "sleep 0.1; exit 3"})))
	u := newUpdater(s, dialSim(t, s, 0), &progressLog{sim: s})
	err := u.Update(context.Background(), updateReq("bios", randomImage(t, 3000), goodSig))
	if err == nil || !strings.Contains(err.Error(), "update: BMC reported failed") {
		t.Fatalf("error %v, want the update phase named", err)
	}
	if !slices.Contains(s.Flash().Transitions(), flash.UpdateCompleted) || s.Flash().State() != flash.NotYetStarted {
		t.Errorf("transitions %v", s.Flash().Transitions())
	}
}

func TestAbortMidVerify(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	s := startSim(t, withConfigDir(exampleDir(t, "config-static-bmc.json")),
		withStandIns(standIns(map[string]string{"phosphor-ipmi-flash-bmc-verify.target": "echo $$ > " + pidFile + "; exec sleep 30"})))
	log := &progressLog{sim: s}
	u := newUpdater(s, dialSim(t, s, 0), log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	u.Progress = func(p blob.Progress) {
		log.record(p)
		if p.Phase == blob.PhaseVerify && p.Message == "running" {
			time.AfterFunc(150*time.Millisecond, cancel)
		}
	}
	err := u.Update(ctx, updateReq("image", randomImage(t, 2000), goodSig))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	var pe *blob.PhaseError
	if !errors.As(err, &pe) || pe.Phase != blob.PhaseVerify {
		t.Errorf("error %v does not name verify", err)
	}
	tr := s.Flash().Transitions()
	if !slices.Contains(tr, flash.VerificationStarted) || slices.Contains(tr, flash.VerificationCompleted) || s.Flash().State() != flash.NotYetStarted {
		t.Errorf("transitions %v state %v", tr, s.Flash().State())
	}
	data, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	var pid int
	for _, c := range strings.TrimSpace(string(data)) {
		pid = pid*10 + int(c-'0')
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("verification process %d still running after abort", pid)
	}
}

func TestStaleActiveImageCleaned(t *testing.T) {
	t.Run("closed", func(t *testing.T) {
		t.Parallel()
		s := startSim(t, withConfigDir(exampleDir(t, "config-static-bmc.json")), withStandIns(standIns(nil)))
		tr := dialSim(t, s, 0)
		c := &blob.Client{T: tr}
		ctx := context.Background()
		// A crashed run: image half uploaded, session closed, no verify.
		sid, err := c.Open(ctx, "/flash/image", blob.FlagWrite|blob.TransportIPMI)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Write(ctx, sid, 0, []byte("partial")); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(ctx, sid); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(s.Blobs().IDs(), flash.ActiveImage) {
			t.Fatal("no stale marker to clean")
		}
		log := &progressLog{sim: s}
		if err := newUpdater(s, tr, log).Update(ctx, updateReq("image", randomImage(t, 5000), goodSig)); err != nil {
			t.Fatal(err)
		}
		if _, ok := log.find(blob.PhaseStale, "deleting stale "+flash.ActiveImage); !ok {
			t.Error("stale marker was not deleted")
		}
	})
	t.Run("session-left-open", func(t *testing.T) {
		t.Parallel()
		s := startSim(t, withConfigDir(exampleDir(t, "config-static-bmc.json")), withStandIns(standIns(nil)), withExpiry(300*time.Millisecond))
		ctx := context.Background()
		crashed := &blob.Client{T: dialSim(t, s, 0)}
		if _, err := crashed.Open(ctx, "/flash/image", blob.FlagWrite|blob.TransportIPMI); err != nil {
			t.Fatal(err)
		}
		// The crashed host never closes; the BMC must expire the session
		// before the marker can be deleted.
		u := newUpdater(s, dialSim(t, s, 0), &progressLog{sim: s})
		u.RetryDelay = 250 * time.Millisecond
		if err := u.Update(ctx, updateReq("image", randomImage(t, 5000), goodSig)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("held-by-another-session", func(t *testing.T) {
		t.Parallel()
		s := startSim(t, withConfigDir(exampleDir(t, "config-static-bmc.json")), withStandIns(standIns(nil)))
		ctx := context.Background()
		other := &blob.Client{T: dialSim(t, s, 0)}
		if _, err := other.Open(ctx, "/flash/image", blob.FlagWrite|blob.TransportIPMI); err != nil {
			t.Fatal(err)
		}
		u := newUpdater(s, dialSim(t, s, 0), &progressLog{sim: s})
		u.RetryDelay = 10 * time.Millisecond
		before := time.Now()
		err := u.Update(ctx, updateReq("image", randomImage(t, 5000), goodSig))
		var pe *blob.PhaseError
		if !errors.As(err, &pe) || pe.Phase != blob.PhaseStale || !errors.Is(err, errdefs.ErrInUse) {
			t.Fatalf("error %v, want the stale-cleanup phase and ErrInUse", err)
		}
		msg := err.Error()
		for _, want := range []string{"another session holds a flash blob open", "after 10m0s without commands", "gone by "} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not say %q", msg, want)
			}
		}
		if strings.Contains(msg, "Unspecified error") || strings.Contains(msg, "0xff") {
			t.Errorf("error %q shows the raw completion code", msg)
		}
		// The latest an abandoned session lasts: 10 minutes from now.
		by := before.Add(blob.SessionTimeout).Format("15:04:05")
		if !strings.Contains(msg, "gone by "+by) && !strings.Contains(msg, "gone by "+before.Add(blob.SessionTimeout+time.Second).Format("15:04:05")) {
			t.Errorf("error %q: want the expiry %s", msg, by)
		}
	})
}

// countCC counts the BMC's answers with one completion code.
type countCC struct {
	blob.Transport
	cc byte
	mu sync.Mutex
	n  int
}

func (c *countCC) RawCommand(ctx context.Context, netFn, cmd byte, data []byte) ([]byte, error) {
	out, err := c.Transport.RawCommand(ctx, netFn, cmd, data)
	if cc, ok := blob.CompletionCode(err); ok && cc == c.cc {
		c.mu.Lock()
		c.n++
		c.mu.Unlock()
	}
	return out, err
}

// A chunk larger than the BMC's request limit is sent once: the BMC's
// 0xc8 will not change on a retry.
func TestChunkTooLargeIsNotRetried(t *testing.T) {
	s := startSim(t, withConfigDir(exampleDir(t, "config-static-bmc.json")), withStandIns(standIns(nil)))
	tr := &countCC{Transport: dialSim(t, s, 0), cc: blob.CCReqDataTooLong}
	u := newUpdater(s, tr, &progressLog{sim: s})
	u.ChunkSize = 2048
	err := u.Update(context.Background(), updateReq("image", randomImage(t, 5000), goodSig))
	if !errors.Is(err, blob.ErrChunkTooLarge) || !strings.Contains(err.Error(), "lower chunk_size (now 2048") {
		t.Fatalf("error %v, want ErrChunkTooLarge with a hint", err)
	}
	if tr.n != 1 {
		t.Errorf("the BMC refused %d writes as too long, want 1 (no retries)", tr.n)
	}
}
