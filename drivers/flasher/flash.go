package flasher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/bundles/manifest"
	"github.com/pogolab/pogo/drivers/console/expect"
	"github.com/pogolab/pogo/drivers/flasher/image"
	"github.com/pogolab/pogo/drivers/state"
)

// plan is a checked flash request.
type plan struct {
	img  Image
	opts FlashOptions
	want string
	bmap *image.Bmap
	// bmapName says where bmap came from ("" when it came with the
	// request).
	bmapName string
	direct   bool
	// unpack is the board's decompressor for a direct fetch.
	unpack string
}

func checkRequest(img Image, opts FlashOptions) (*plan, error) {
	n := 0
	for _, set := range []bool{img.Reader != nil, img.URL != "", img.OCIRef != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, errdefs.Invalidf("flash: give exactly one image source (upload, URL or OCI reference), got %d", n)
	}
	p := &plan{img: img, opts: opts}
	if img.URL != "" {
		if err := checkURL(img.URL); err != nil {
			return nil, err
		}
	}
	if s := strings.ToLower(strings.TrimSpace(opts.SHA256)); s != "" {
		if b, err := hex.DecodeString(s); err != nil || len(b) != sha256.Size {
			return nil, errdefs.Invalidf("expected sha256 %q: want 64 hex digits", opts.SHA256)
		}
		p.want = s
	}
	if len(opts.Bmap) > 0 {
		bm, err := image.ParseBmap("bmap", opts.Bmap)
		if err != nil {
			return nil, errdefs.Invalidf("%v", err)
		}
		p.bmap = bm
	}
	if opts.Direct && !opts.ForceExporterHTTP {
		if img.URL == "" {
			return nil, errdefs.Invalidf("direct: the board can only fetch an http(s) URL itself")
		}
		if p.bmap != nil {
			return nil, fmt.Errorf("direct with a bmap: the board cannot select ranges itself; drop --direct: %w", errdefs.ErrUnsupported)
		}
		p.direct = true
		switch path.Ext(strings.SplitN(img.URL, "?", 2)[0]) {
		case ".xz":
			p.unpack = "xzcat"
		case ".gz":
			p.unpack = "gunzip -c"
		case ".bz2":
			p.unpack = "bzcat"
		case ".zst", ".zstd":
			return nil, fmt.Errorf("direct: busybox cannot undo zstd; drop --direct to decompress on the exporter: %w", errdefs.ErrUnsupported)
		}
	}
	return p, nil
}

// chooseTarget picks the target from --partition or the bundle.
func chooseTarget(spec *manifest.Spec, partition string) (manifest.Target, string, error) {
	name := partition
	if name == "" {
		name = spec.DefaultTarget
	}
	if name == "" && len(spec.Targets) == 1 {
		name = spec.TargetNames()[0]
	}
	if name == "" {
		return manifest.Target{}, "", errdefs.Invalidf("no --partition given and the bundle has no default_target (targets: %s)", strings.Join(spec.TargetNames(), ", "))
	}
	if t, ok := spec.Targets[name]; ok {
		return t, name, nil
	}
	if strings.HasPrefix(name, "/") {
		t, err := manifest.ParseTarget(name)
		if err != nil {
			return manifest.Target{}, "", errdefs.Invalidf("partition %v", err)
		}
		return t, name, nil
	}
	return manifest.Target{}, "", errdefs.Invalidf("partition %q is not a target of the bundle (targets: %s) nor a /dev path", name, strings.Join(spec.TargetNames(), ", "))
}

// syncEmit makes events safe to call from several goroutines.
func syncEmit(events func(Event)) func(Event) {
	if events == nil {
		return func(Event) {}
	}
	var mu sync.Mutex
	return func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		events(e)
	}
}

// Flash implements Programmer.
func (d *Driver) Flash(ctx context.Context, img Image, opts FlashOptions, events func(Event)) (res Result, err error) {
	start := time.Now()
	emit := syncEmit(events)
	p, err := checkRequest(img, opts)
	if err != nil {
		return Result{}, err
	}
	unlock, err := d.lock()
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(ctx, d.cfg.FlashTimeout)
	defer cancel()

	// Everything that can fail without the board fails before it is
	// powered: the image source, then the bundle and the target.
	src, err := d.preflight(ctx, p, emit)
	if src != nil {
		defer src.close()
	}
	if err != nil {
		return Result{}, err
	}
	ref := d.cfg.Bundle
	if opts.Bundle != "" {
		ref = opts.Bundle
	}
	emit(Event{Phase: PhaseBundle, Message: "loading the flasher bundle " + ref})
	b, err := d.loadBundle(ctx, ref)
	if err != nil {
		return Result{}, &stepErr{PhaseBundle, err}
	}
	partition := opts.Partition
	if partition == "" {
		partition = d.cfg.DefaultTarget // the node's default_target
	}
	target, targetName, err := chooseTarget(b.spec, partition)
	if err != nil {
		return Result{}, err
	}

	// Whatever happens, the board ends powered off.
	defer func() {
		emit(Event{Phase: PhasePowerOff, Message: "powering the board off"})
		offCtx, c := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer c()
		if perr := d.power.Off(offCtx); perr != nil {
			d.log.Error("flasher: power off", "err", perr)
			if err == nil {
				err = &stepErr{PhasePowerOff, perr}
			}
		}
	}()

	d.log.Info("flasher: flash", "image", imageName(img), "target", targetName, "bundle", ref, "bmap", p.bmap != nil, "direct", p.direct)
	for attempt := 0; ; attempt++ {
		res, err = d.flashOnce(ctx, b, p, src, target, emit)
		if err == nil {
			res.Duration = time.Since(start)
			res.Bmap = p.bmapName
			if p.bmap != nil && res.Bmap == "" {
				res.Bmap = "request"
			}
			d.log.Info("flasher: flashed", "image", imageName(img), "target", res.Target, "bytes", res.Written,
				"sha256", res.SHA256, "write", res.Write, "MB/s", mbps(res.Written, res.Write),
				"verify", res.Verify, "verify MB/s", mbps(res.Verified, res.Verify), "total", res.Duration)
			return res, nil
		}
		if attempt >= d.cfg.Retries || !retryable(ctx, err) {
			if attempt > 0 {
				err = fmt.Errorf("flash failed after %d attempts: %w", attempt+1, err)
			}
			d.log.Error("flasher: flash failed", "image", imageName(img), "err", err)
			return Result{}, err
		}
		wait := d.cfg.RetryBackoff << attempt
		d.log.Warn("flasher: attempt failed, trying again", "attempt", attempt+1, "in", wait, "err", err)
		emit(Event{Phase: PhaseRetry, Message: fmt.Sprintf("attempt %d failed (%v); trying again in %s", attempt+1, err, wait)})
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Result{}, fmt.Errorf("flash: %w (last failure: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func imageName(img Image) string {
	switch {
	case img.URL != "":
		return img.URL
	case img.OCIRef != "":
		return "oci://" + img.OCIRef
	case img.Name != "":
		return img.Name
	}
	return "upload"
}

// retryable tells failures worth another attempt (the board, the network)
// from those that would fail the same way (the image, the request).
func retryable(ctx context.Context, err error) bool {
	var ce *image.ChecksumError
	var re *image.RangeError
	switch {
	case ctx.Err() != nil, errors.As(err, &ce), errors.As(err, &re),
		errors.Is(err, errdefs.ErrInvalid), errors.Is(err, errdefs.ErrUnsupported), errors.Is(err, errUpload):
		return false
	}
	return true
}

var errUpload = errors.New("the upload failed")

var (
	sumRe   = regexp.MustCompile(`\b([0-9a-f]{64})\b`)
	devRe   = regexp.MustCompile(`pogo-dev=(/dev/[^\s$'"]+)`)
	countRe = regexp.MustCompile(`(?m)^\s*(\d+)\s*$`)
)

// flashOnce is one attempt: boot the flasher, write, sync, verify.
func (d *Driver) flashOnce(ctx context.Context, b *bundle, p *plan, src source, target manifest.Target, emit func(Event)) (Result, error) {
	s, err := d.reach(ctx, state.Flasher, b, emit, p.opts.ConsoleDebug)
	if err != nil {
		return Result{}, err
	}
	defer s.close()
	prompt := shellPrompt(b)
	sh := func(timeout time.Duration, cmd string) (string, int, error) {
		return s.run(ctx, timeout, cmd, prompt)
	}
	// A failing wget must fail the pipeline, not hide behind dd's status.
	_, _, _ = sh(d.cfg.CommandTimeout, "set -o pipefail")

	for _, c := range b.spec.PreflashCommands {
		emit(Event{Phase: PhasePreflash, Message: c})
		out, rc, err := sh(d.cfg.CommandTimeout, c)
		if err != nil {
			return Result{}, &stepErr{PhasePreflash, err}
		}
		if rc != 0 {
			return Result{}, stepf(PhasePreflash, "%q exited with status %d: %s", c, rc, lastLine(out))
		}
	}

	emit(Event{Phase: PhaseTarget, Message: "resolving the target " + target.String()})
	dev, err := d.resolveTarget(ctx, s, prompt, target)
	if err != nil {
		return Result{}, err
	}
	d.log.Info("flasher: target", "device", dev)

	st, err := newStreamServer(d.streamHost, d.streamURLHost, d.log)
	if err != nil {
		return Result{}, &stepErr{PhaseWrite, err}
	}
	defer st.close()

	if p.direct {
		return d.writeDirect(ctx, s, st, prompt, p, dev, emit)
	}
	return d.writeStream(ctx, s, st, prompt, p, src, dev, emit)
}

func (d *Driver) resolveTarget(ctx context.Context, s *session, prompt string, t manifest.Target) (string, error) {
	if t.Device != "" {
		_, rc, err := s.run(ctx, d.cfg.CommandTimeout, "[ -b "+t.Device+" ]", prompt)
		if err != nil {
			return "", &stepErr{PhaseTarget, err}
		}
		if rc != 0 {
			return "", stepf(PhaseTarget, "%s is not a block device on the flasher", t.Device)
		}
		return t.Device, nil
	}
	cmd := `for d in /sys/class/block/*; do [ -e $d/partition ] && continue; case $(readlink -f $d) in *` + t.Lookup + `*) echo pogo-dev=/dev/${d##*/};; esac; done`
	out, _, err := s.run(ctx, d.cfg.CommandTimeout, cmd, prompt)
	if err != nil {
		return "", &stepErr{PhaseTarget, err}
	}
	var found []string
	for _, m := range devRe.FindAllStringSubmatch(out, -1) {
		found = append(found, m[1])
	}
	switch len(found) {
	case 0:
		return "", stepf(PhaseTarget, "no disk under /sys/class/block matches %s", t.Lookup)
	case 1:
		return found[0], nil
	}
	return "", stepf(PhaseTarget, "several disks match %s: %s", t.Lookup, strings.Join(found, ", "))
}

// progress reports the write step every second (and logs every 10 s).
func (d *Driver) progress(ctx context.Context, emit func(Event), start time.Time, srcDone func() int64, total int64, sent func() int64) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		lastLog := start
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				n := sent()
				rate := float64(n) / now.Sub(start).Seconds() / 1e6
				emit(Event{Phase: PhaseWrite, Done: srcDone(), Total: total, Image: n, MBps: rate})
				if now.Sub(lastLog) >= 10*time.Second {
					lastLog = now
					d.log.Info("flasher: writing", "sent", n, "source", srcDone(), "total", total, "MB/s", fmt.Sprintf("%.1f", rate))
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// writeStream has the board fetch the image from the stream server and
// write it to dev, then reads it back.
func (d *Driver) writeStream(ctx context.Context, s *session, st *streamServer, prompt string, p *plan, src source, dev string, emit func(Event)) (Result, error) {
	rc, size, err := src.open(ctx)
	if err != nil {
		return Result{}, &stepErr{PhaseWrite, err}
	}
	defer rc.Close()
	stream, err := image.Open(rc, image.Options{SHA256: p.want, SourceSize: size})
	if err != nil {
		return Result{}, &stepErr{PhaseWrite, fmt.Errorf("image: %w", err)}
	}
	defer stream.Close()

	var cmd string
	var rangeSums []string
	var pieces [][]ddPiece
	if p.bmap == nil {
		st.setImage(func(w io.Writer) error {
			buf := make([]byte, 1<<20)
			_, err := io.CopyBuffer(w, stream, buf)
			return err
		})
		cmd = fmt.Sprintf("wget -q -O - %s | dd of=%s bs=1M", st.url("image"), dev)
	} else {
		bm := p.bmap
		for _, r := range bm.Ranges {
			pieces = append(pieces, ddPieces(bm.Offset(r), bm.Length(r)))
		}
		st.setScript("write.sh", writeScript(dev, pieces))
		st.setImage(func(w io.Writer) error {
			m := bm.Mapped(stream)
			buf := make([]byte, 1<<20)
			for {
				_, _, _, err := m.Next()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				h := sha256.New()
				if _, err := io.CopyBuffer(io.MultiWriter(w, h), m, buf); err != nil {
					return err
				}
				rangeSums = append(rangeSums, hex.EncodeToString(h.Sum(nil)))
			}
		})
		cmd = fmt.Sprintf("wget -q -O /tmp/pogo-write.sh %s && wget -q -O - %s | sh /tmp/pogo-write.sh", st.url("write.sh"), st.url("image"))
	}

	emit(Event{Phase: PhaseWrite, Message: "writing to " + dev, Total: size})
	start := time.Now()
	stop := d.progress(ctx, emit, start, stream.SourceRead, size, st.sent.Load)
	out, code, err := s.run(ctx, d.cfg.FlashTimeout, cmd, prompt)
	stop()
	writeDur := time.Since(start)
	var perr error
	select {
	case perr = <-st.result:
	default:
		if err == nil && code == 0 {
			perr = errors.New("the board never fetched the image")
		}
	}
	if perr != nil {
		var ce *image.ChecksumError
		if errors.As(perr, &ce) {
			return Result{}, &stepErr{PhaseWrite, fmt.Errorf("%w (the target holds the mismatching image)", ce)}
		}
		return Result{}, &stepErr{PhaseWrite, perr}
	}
	if err != nil {
		return Result{}, &stepErr{PhaseWrite, err}
	}
	if code != 0 {
		return Result{}, stepf(PhaseWrite, "writing %s on the board failed (status %d): %s", dev, code, lastLine(out))
	}
	sum, imgSize := stream.Sum(), stream.Size()
	written := imgSize
	if p.bmap != nil {
		written = p.bmap.MappedBytes()
	}
	d.log.Info("flasher: written", "device", dev, "bytes", written, "image", imgSize, "duration", writeDur, "MB/s", mbps(written, writeDur))
	// The bar showed the last tick; this is the exact end of the step.
	msg := fmt.Sprintf("wrote %.1f MB to %s in %s (%s MB/s)", float64(written)/1e6, dev, writeDur.Round(100*time.Millisecond), mbps(written, writeDur))
	if p.bmap != nil {
		msg += fmt.Sprintf(", the mapped part of a %.1f MB image", float64(imgSize)/1e6)
	}
	emit(Event{Phase: PhaseWrite, Message: msg})

	if err := d.syncBoard(ctx, s, prompt, emit); err != nil {
		return Result{}, err
	}
	if p.bmap == nil {
		pieces = [][]ddPiece{ddPieces(0, imgSize)}
		rangeSums = []string{sum}
	}
	got, verifyDur, err := d.readBack(ctx, s, st, prompt, dev, pieces, written, emit)
	if err != nil {
		return Result{}, err
	}
	if len(got) != len(rangeSums) {
		return Result{}, stepf(PhaseVerify, "read back %d checksums, want %d", len(got), len(rangeSums))
	}
	for i := range got {
		if got[i] == rangeSums[i] {
			continue
		}
		if p.bmap == nil {
			return Result{}, stepf(PhaseVerify, "%s reads back with sha256 %s, but the image streamed has %s", dev, got[i], sum)
		}
		r := p.bmap.Ranges[i]
		return Result{}, stepf(PhaseVerify, "range %v (offset %d) reads back with sha256 %s, streamed %s", r, p.bmap.Offset(r), got[i], rangeSums[i])
	}
	return Result{SHA256: sum, Written: written, ImageSize: imgSize, Target: dev, Write: writeDur, Verify: verifyDur, Verified: written}, nil
}

// writeDirect has the board fetch (and decompress) the URL itself.
func (d *Driver) writeDirect(ctx context.Context, s *session, st *streamServer, prompt string, p *plan, dev string, emit func(Event)) (Result, error) {
	cmd := "wget -q -O - '" + strings.ReplaceAll(p.img.URL, "'", `'\''`) + "'"
	if p.unpack != "" {
		cmd += " | " + p.unpack
	}
	// busybox dd reports records, not bytes: count what passes with tee.
	cmd = "{ " + cmd + " | tee /proc/self/fd/3 | dd of=" + dev + " bs=1M 2>/dev/null; } 3>&1 | wc -c"
	emit(Event{Phase: PhaseWrite, Message: "the board fetches " + p.img.URL})
	start := time.Now()
	out, code, err := s.run(ctx, d.cfg.FlashTimeout, cmd, prompt)
	writeDur := time.Since(start)
	if err != nil {
		return Result{}, &stepErr{PhaseWrite, err}
	}
	if code != 0 {
		return Result{}, stepf(PhaseWrite, "the board's fetch of %s failed (status %d): %s", p.img.URL, code, lastLine(out))
	}
	m := countRe.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return Result{}, stepf(PhaseWrite, "no byte count from the board: %q", lastLine(out))
	}
	size, _ := strconv.ParseInt(m[len(m)-1][1], 10, 64)
	if size == 0 {
		return Result{}, stepf(PhaseWrite, "the board fetched an empty image from %s", p.img.URL)
	}
	if err := d.syncBoard(ctx, s, prompt, emit); err != nil {
		return Result{}, err
	}
	emit(Event{Phase: PhaseWrite, Message: fmt.Sprintf("wrote %.1f MB to %s in %s (%s MB/s)", float64(size)/1e6, dev, writeDur.Round(100*time.Millisecond), mbps(size, writeDur))})
	sums, verifyDur, err := d.readBack(ctx, s, st, prompt, dev, [][]ddPiece{ddPieces(0, size)}, size, emit)
	if err != nil {
		return Result{}, err
	}
	if len(sums) != 1 {
		return Result{}, stepf(PhaseVerify, "read back %d checksums, want 1", len(sums))
	}
	got := sums[0]
	if p.want != "" && got != p.want {
		return Result{}, stepf(PhaseVerify, "image sha256 mismatch: expected %s, got %s (read back from %s)", p.want, got, dev)
	}
	return Result{SHA256: got, Written: size, ImageSize: size, Target: dev, Write: writeDur, Verify: verifyDur, Verified: size}, nil
}

func (d *Driver) syncBoard(ctx context.Context, s *session, prompt string, emit func(Event)) error {
	emit(Event{Phase: PhaseSync, Message: "sync"})
	start := time.Now()
	_, code, err := s.run(ctx, d.cfg.FlashTimeout, "sync", prompt)
	if err != nil {
		return &stepErr{PhaseSync, err}
	}
	if code != 0 {
		return stepf(PhaseSync, "sync exited with status %d", code)
	}
	d.log.Info("flasher: synced", "duration", time.Since(start))
	return nil
}

func mbps(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(n)/d.Seconds()/1e6)
}

// ddPiece is one dd invocation: count blocks of bs bytes at block seek.
type ddPiece struct {
	bs, count, seek int64
}

// ddPieces covers bytes [off, off+n) with as few dd invocations as block
// sizes allow: an unaligned head, 1 MiB blocks, an unaligned tail.
func ddPieces(off, n int64) []ddPiece {
	const big = 1 << 20
	var out []ddPiece
	add := func(o, l int64) {
		if l <= 0 {
			return
		}
		bs := int64(big)
		for bs > 1 && (o%bs != 0 || l%bs != 0) {
			bs /= 2
		}
		out = append(out, ddPiece{bs: bs, count: l / bs, seek: o / bs})
	}
	head := int64(0)
	if off%big != 0 {
		head = min(n, big-off%big)
	}
	add(off, head)
	mid := (n - head) / big * big
	add(off+head, mid)
	add(off+head+mid, n-head-mid)
	return out
}

func writeScript(dev string, ranges [][]ddPiece) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	for _, r := range ranges {
		for _, p := range r {
			fmt.Fprintf(&b, "dd of=%s bs=%d count=%d seek=%d conv=notrunc iflag=fullblock 2>/dev/null\n", dev, p.bs, p.count, p.seek)
		}
	}
	return b.String()
}

// readChunk is how much one dd of the read-back reads, and how often it
// reports progress.
const readChunk = 16 << 20

// splitPiece cuts p into pieces of at most limit bytes (at least one block).
func splitPiece(p ddPiece, limit int64) []ddPiece {
	n := max(1, limit/p.bs)
	var out []ddPiece
	for done := int64(0); done < p.count; done += n {
		out = append(out, ddPiece{bs: p.bs, count: min(n, p.count-done), seek: p.seek + done})
	}
	return out
}

// verifyScript reads each range of dev back in large reads and prints its
// sha256, and a progress marker (pogo-read=BYTES, on stderr) about every
// readChunk bytes and at the end.
func verifyScript(dev string, ranges [][]ddPiece) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	var done, mark int64
	for _, r := range ranges {
		// ":" keeps an empty range's group valid shell.
		b.WriteString("{ :; ")
		for _, p := range r {
			for _, q := range splitPiece(p, readChunk) {
				fmt.Fprintf(&b, "dd if=%s bs=%d count=%d skip=%d 2>/dev/null; ", dev, q.bs, q.count, q.seek)
				done += q.bs * q.count
				if done-mark >= readChunk {
					mark = done
					fmt.Fprintf(&b, "echo pogo-read=%d >&2; ", done)
				}
			}
		}
		b.WriteString("} | sha256sum\n")
	}
	if done != mark {
		fmt.Fprintf(&b, "echo pogo-read=%d >&2\n", done)
	}
	return b.String()
}

// readBack drops the board's page cache (so the device, not memory, is
// read) and has the board read ranges of dev back with verifyScript,
// emitting verify progress; it returns one sha256 per range and how long
// the read-back took.
func (d *Driver) readBack(ctx context.Context, s *session, st *streamServer, prompt, dev string, ranges [][]ddPiece, total int64, emit func(Event)) ([]string, time.Duration, error) {
	emit(Event{Phase: PhaseVerify, Message: fmt.Sprintf("reading %.1f MB of %s back", float64(total)/1e6, dev), Total: total})
	start := time.Now()
	if _, rc, err := s.run(ctx, d.cfg.CommandTimeout, "echo 3 > /proc/sys/vm/drop_caches", prompt); err != nil {
		return nil, 0, &stepErr{PhaseVerify, err}
	} else if rc != 0 {
		d.log.Warn("flasher: cannot drop the board's page cache; the read-back may come from memory", "status", rc)
	}
	st.setScript("verify.sh", verifyScript(dev, ranges))
	out, code, err := s.runWatch(ctx, d.cfg.VerifyTimeout, fmt.Sprintf("wget -q -O - %s | sh", st.url("verify.sh")), prompt, func(n int64) {
		rate := float64(n) / time.Since(start).Seconds() / 1e6
		emit(Event{Phase: PhaseVerify, Done: n, Total: total, Image: n, MBps: rate})
	})
	dur := time.Since(start)
	if err != nil {
		return nil, 0, &stepErr{PhaseVerify, err}
	}
	if code != 0 {
		return nil, 0, stepf(PhaseVerify, "reading %s back failed (status %d): %s", dev, code, lastLine(out))
	}
	d.log.Info("flasher: read back", "device", dev, "bytes", total, "duration", dur, "MB/s", mbps(total, dur))
	emit(Event{Phase: PhaseVerify, Message: fmt.Sprintf("read %.1f MB of %s back in %s (%s MB/s)", float64(total)/1e6, dev, dur.Round(100*time.Millisecond), mbps(total, dur))})
	return sumRe.FindAllString(out, -1), dur, nil
}

var watchRe = regexp.MustCompile(`pogo-read=(\d+)|pogo-rc=(\d+)`)

// runWatch is session.run for a command that prints progress markers
// (pogo-read=N) while it runs: each is passed to progress as it arrives.
func (s *session) runWatch(ctx context.Context, timeout time.Duration, cmd, prompt string, progress func(int64)) (string, int, error) {
	return runWatch(ctx, s.us.Expecter(), timeout, cmd, prompt, progress)
}

func runWatch(ctx context.Context, e *expect.Expecter, timeout time.Duration, cmd, prompt string, progress func(int64)) (string, int, error) {
	if err := e.SendLine(cmd + "; echo pogo-rc=$?"); err != nil {
		return "", -1, err
	}
	deadline := time.Now().Add(timeout)
	var out strings.Builder
	for {
		before, m, err := e.ExpectRegexp(ctx, time.Until(deadline), watchRe)
		out.WriteString(before)
		if err != nil {
			if errors.Is(err, expect.ErrTimeout) {
				return out.String(), -1, fmt.Errorf("%q did not finish within %s (last output: %q)", cmd, timeout, lastLine(out.String()))
			}
			return out.String(), -1, fmt.Errorf("%q: %w", cmd, err)
		}
		if m[1] != "" {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			progress(n)
			continue
		}
		rc, _ := strconv.Atoi(m[2])
		if _, err := e.Expect(ctx, 10*time.Second, prompt); err != nil {
			return out.String(), rc, fmt.Errorf("%q: no prompt afterwards: %w", cmd, err)
		}
		text := out.String()
		if i := strings.Index(text, "\n"); i >= 0 {
			text = text[i+1:]
		}
		return strings.TrimSpace(strings.ReplaceAll(text, "\r", "")), rc, nil
	}
}
