package flasher

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"

	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// streamServer is a one-shot HTTP server for one flash attempt: the
// board fetches the image (produced on the fly: decompressed, hashed,
// bmap-selected) and small scripts from it. Paths carry a random token,
// so nothing else can fetch them.
type streamServer struct {
	l     net.Listener
	srv   *http.Server
	token string
	base  string
	log   *slog.Logger

	mu      sync.Mutex
	scripts map[string]string
	produce func(w io.Writer) error
	taken   bool
	result  chan error
	sent    atomic.Int64
}

func newStreamServer(listen, urlHost string, log *slog.Logger) (*streamServer, error) {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("image stream server on %s: %w", listen, err)
	}
	var tok [12]byte
	_, _ = rand.Read(tok[:])
	s := &streamServer{l: l, token: hex.EncodeToString(tok[:]), log: log, scripts: map[string]string{}, result: make(chan error, 1)}
	port := l.Addr().(*net.TCPAddr).Port
	s.base = "http://" + net.JoinHostPort(urlHost, strconv.Itoa(port)) + "/" + s.token + "/"
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go s.srv.Serve(l)
	return s, nil
}

func (s *streamServer) url(name string) string { return s.base + name }

func (s *streamServer) setScript(name, text string) {
	s.mu.Lock()
	s.scripts[name] = text
	s.mu.Unlock()
}

// setImage arms the one-shot image: produce writes it to the first GET of
// "image"; its outcome arrives on result.
func (s *streamServer) setImage(produce func(w io.Writer) error) {
	s.mu.Lock()
	s.produce, s.taken = produce, false
	s.mu.Unlock()
}

func (s *streamServer) close() {
	s.srv.Close()
}

func (s *streamServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutPrefix(r.URL.Path, "/"+s.token+"/")
	if !ok || r.Method != http.MethodGet {
		s.log.Warn("flasher: stream server: refused", "remote", r.RemoteAddr, "path", r.URL.Path)
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	script, isScript := s.scripts[name]
	produce := s.produce
	first := name == "image" && produce != nil && !s.taken
	if first {
		s.taken = true
	}
	s.mu.Unlock()
	switch {
	case isScript:
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(script)))
		_, _ = io.WriteString(w, script)
	case first:
		s.log.Info("flasher: board fetching the image", "remote", r.RemoteAddr)
		w.Header().Set("Content-Type", "application/octet-stream")
		cw := &countWriter{w: w, n: &s.sent}
		bw := bufio.NewWriterSize(cw, 1<<20)
		err := produce(bw)
		if err == nil {
			err = bw.Flush()
		}
		s.result <- err
		if err != nil {
			// Cut the connection mid-body: the board's wget fails instead
			// of taking a short image for a whole one.
			panic(http.ErrAbortHandler)
		}
	case name == "image":
		http.Error(w, "the image was already fetched", http.StatusGone)
	default:
		http.NotFound(w, r)
	}
}

type countWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
