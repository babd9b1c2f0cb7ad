package flasher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sync"

	"github.com/pogolab/pogo/api/errdefs"
)

// source gives every attempt of a flash the image from its start.
type source interface {
	// open returns the image from its first byte and its size (0:
	// unknown).
	open(ctx context.Context) (io.ReadCloser, int64, error)
	close()
}

// spool keeps an upload on disk while it arrives, so the board can start
// as soon as bytes come, the client's upload is not held back by the
// board, and a retry can replay it.
type spool struct {
	f    *os.File
	size int64 // announced size, 0 when unknown

	mu   sync.Mutex
	cond *sync.Cond
	n    int64
	done bool
	err  error
}

func newSpool(dir string, src io.Reader, size int64) (*spool, error) {
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, ".upload-*")
	if err != nil {
		return nil, fmt.Errorf("spool the upload: %w", err)
	}
	// Unlinked at once: nothing is left behind whatever happens.
	os.Remove(f.Name())
	s := &spool{f: f, size: size}
	s.cond = sync.NewCond(&s.mu)
	go s.fill(src)
	return s, nil
}

func (s *spool) fill(src io.Reader) {
	buf := make([]byte, 1<<20)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := s.f.WriteAt(buf[:n], s.n); werr != nil {
				err = fmt.Errorf("spool the upload: %w", werr)
			}
			s.mu.Lock()
			s.n += int64(n)
			s.cond.Broadcast()
			s.mu.Unlock()
		}
		if err != nil {
			s.mu.Lock()
			if !errors.Is(err, io.EOF) {
				s.err = fmt.Errorf("%w: %w", errUpload, err)
			} else if s.size > 0 && s.n != s.size {
				s.err = fmt.Errorf("%w: it ended after %d bytes of %d announced", errUpload, s.n, s.size)
			}
			s.done = true
			s.cond.Broadcast()
			s.mu.Unlock()
			return
		}
	}
}

func (s *spool) open(ctx context.Context) (io.ReadCloser, int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	return &spoolReader{s: s, ctx: ctx, cancel: cancel, stop: stop}, s.size, nil
}

// wait blocks until more than off bytes are spooled or the upload ended.
func (s *spool) wait(ctx context.Context, off int64) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.n <= off && !s.done {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		s.cond.Wait()
	}
	if s.n > off {
		return s.n, nil
	}
	if s.err != nil {
		return 0, s.err
	}
	return 0, io.EOF
}

func (s *spool) close() { s.f.Close() }

type spoolReader struct {
	s      *spool
	ctx    context.Context
	cancel context.CancelFunc
	stop   func() bool
	off    int64
}

func (r *spoolReader) Read(p []byte) (int, error) {
	avail, err := r.s.wait(r.ctx, r.off)
	if err != nil {
		return 0, err
	}
	if int64(len(p)) > avail-r.off {
		p = p[:avail-r.off]
	}
	n, err := r.s.f.ReadAt(p, r.off)
	r.off += int64(n)
	if errors.Is(err, io.EOF) && n > 0 {
		err = nil
	}
	return n, err
}

func (r *spoolReader) Close() error {
	r.stop()
	r.cancel()
	return nil
}

// urlSource fetches an http(s) image for each attempt.
type urlSource struct {
	url string
}

func (u urlSource) open(ctx context.Context) (io.ReadCloser, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("image URL %s: %w", u.url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("fetch the image: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("fetch the image %s: %s", u.url, resp.Status)
	}
	size := resp.ContentLength
	if size < 0 {
		size = 0
	}
	return resp.Body, size, nil
}

func (urlSource) close() {}

// fileSource is an image already on the exporter (a pulled OCI image).
type fileSource struct {
	path string
	rm   bool
}

func (f fileSource) open(context.Context) (io.ReadCloser, int64, error) {
	fh, err := os.Open(f.path)
	if err != nil {
		return nil, 0, err
	}
	fi, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, 0, err
	}
	return fh, fi.Size(), nil
}

func (f fileSource) close() {
	if f.rm {
		os.Remove(f.path)
	}
}

// checkURL accepts http and https URLs only.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errdefs.Invalidf("image URL %q: want http:// or https://", raw)
	}
	return nil
}
