package tftp

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/files"
)

// takeoverPoll is how often a process that does not hold the port checks
// whether the holder went away.
const takeoverPoll = 250 * time.Millisecond

// boardName is what a subdir may be: one path component that cannot be
// . or .., nor hidden.
var boardName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// endpoint is this process's share of one host-wide TFTP port: it serves
// the port when it holds the port's lock, or else waits to take over.
type endpoint struct {
	network string
	addr    *net.UDPAddr // requested address
	dir     string       // the port's registry
	private bool         // dir is ours alone (port 0)
	log     *slog.Logger

	mu      sync.Mutex
	closed  bool
	lock    *lockFile // held while this process serves the port
	srv     *tftp.Server
	conn    *net.UDPConn
	bound   *net.UDPAddr
	served  chan struct{}
	stop    chan struct{}
	watcher sync.WaitGroup
	// lastErr keeps the watcher from logging the same failure every poll.
	lastErr string

	statsMu sync.Mutex
}

// parseListen turns a listen value into the UDP network and address to
// bind; an empty host means every IPv4 address.
func parseListen(listen string) (string, *net.UDPAddr, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", nil, fmt.Errorf("want [ip]:port, got %q", listen)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", nil, fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return "", nil, fmt.Errorf("host %q is not an IP address", host)
	}
	if ip.To4() != nil {
		return "udp4", &net.UDPAddr{IP: ip.To4(), Port: p}, nil
	}
	return "udp6", &net.UDPAddr{IP: ip, Port: p}, nil
}

// openEndpoint joins the host-wide server for listen, coordinated through
// hostDir: it serves the port itself when no other pogo process does.
func openEndpoint(listen, hostDir string, log *slog.Logger) (*endpoint, error) {
	network, addr, err := parseListen(listen)
	if err != nil {
		return nil, drivers.FieldErr("listen", "%v", err)
	}
	e := &endpoint{network: network, addr: addr, log: log, stop: make(chan struct{})}
	if addr.Port == 0 {
		// A random port cannot be shared: keep a private registry.
		if e.dir, err = os.MkdirTemp("", "pogo-tftp-"); err != nil {
			return nil, fmt.Errorf("tftp: create registry: %w", err)
		}
		e.private = true
	} else {
		e.dir = filepath.Join(hostDir, "port-"+strconv.Itoa(addr.Port))
	}
	if err := os.MkdirAll(filepath.Join(e.dir, "boards"), 0o755); err != nil {
		return nil, drivers.FieldErr("host_dir", "tftp: create %s: %v", e.dir, err)
	}
	held, err := e.tryServe()
	if err != nil {
		e.cleanup()
		return nil, err
	}
	if held {
		return e, nil
	}
	pid, holderAddr := e.holder()
	if holderAddr == reservedMark {
		e.cleanup()
		return nil, &listenError{fe: &drivers.FieldError{Field: "listen", Msg: fmt.Sprintf("tftp: port %d is reserved for another TFTP server by pid %d", addr.Port, pid)}, err: errdefs.ErrUnavailable}
	}
	if holderAddr != "" && !covers(holderAddr, addr) {
		e.cleanup()
		return nil, drivers.FieldErr("listen", "tftp: port %d is served by pogo (pid %d) on %s, which does not cover %s", addr.Port, pid, holderAddr, addr)
	}
	log.Info("tftp: port served by another pogo process; sharing it", "port", addr.Port, "holder_pid", pid, "registry", e.dir)
	e.watcher.Add(1)
	go e.watch()
	return e, nil
}

// covers tells whether a server bound to holder receives what is sent to
// want.
func covers(holder string, want *net.UDPAddr) bool {
	h, err := net.ResolveUDPAddr("udp", holder)
	if err != nil {
		return false
	}
	return h.Port == want.Port && (h.IP.IsUnspecified() || h.IP.Equal(want.IP))
}

// holder reads who serves the port from its lock file ("pid addr").
func (e *endpoint) holder() (int, string) {
	b, err := os.ReadFile(filepath.Join(e.dir, "lock"))
	if err != nil {
		return 0, ""
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, ""
	}
	pid, _ := strconv.Atoi(f[0])
	return pid, f[1]
}

// tryServe serves the port when its lock is free. It reports whether this
// process now serves it; an error means the lock was free but the port
// could not be bound.
func (e *endpoint) tryServe() (bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false, nil
	}
	lk, ok, err := tryLock(filepath.Join(e.dir, "lock"))
	if err != nil || !ok {
		return false, err
	}
	conn, err := net.ListenUDP(e.network, e.addr)
	if err != nil {
		lk.unlock(false)
		return false, listenErr(e.addr.Port, err)
	}
	e.lock = lk
	e.conn = conn
	e.bound = conn.LocalAddr().(*net.UDPAddr)
	_ = lk.f.Truncate(0)
	_, _ = lk.f.WriteAt([]byte(fmt.Sprintf("%d %s\n", os.Getpid(), e.bound)), 0)

	e.srv = tftp.NewServer(e.read, nil)
	// Honour the block size the client asks for instead of clamping it to
	// the interface MTU: a client asking for more than its MTU reassembles
	// fragments (U-Boot with CONFIG_IP_DEFRAG), and fewer, larger blocks
	// mean fewer lock-step round trips.
	e.srv.SetBlockSizeNegotiation(false)
	e.served = make(chan struct{})
	go func(srv *tftp.Server, done chan struct{}) {
		defer close(done)
		if err := srv.Serve(requestConn{conn, e.beforeRequest}); err != nil {
			e.log.Error("tftp: serve", "err", err)
		}
	}(e.srv, e.served)
	e.log.Info("tftp: serving", "addr", e.bound.String(), "registry", e.dir)
	return true, nil
}

// listenError is a bind failure: a config error on listen that still
// wraps the system error (syscall.EADDRINUSE, syscall.EACCES).
type listenError struct {
	fe  *drivers.FieldError
	err error
}

func (e *listenError) Error() string   { return e.fe.Msg }
func (e *listenError) Unwrap() []error { return []error{e.fe, e.err} }

func listenErr(port int, err error) error {
	msg := fmt.Sprintf("tftp: cannot bind port %d: %v", port, err)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		msg = fmt.Sprintf("tftp: port %d is in use by another process", port)
	case errors.Is(err, syscall.EACCES):
		msg = fmt.Sprintf("tftp: binding port %d needs root or CAP_NET_BIND_SERVICE", port)
	}
	return &listenError{fe: &drivers.FieldError{Field: "listen", Msg: msg}, err: err}
}

// watch takes the port over once its holder goes away.
func (e *endpoint) watch() {
	defer e.watcher.Done()
	t := time.NewTicker(takeoverPoll)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
		}
		held, err := e.tryServe()
		if err != nil {
			if err.Error() != e.lastErr {
				e.log.Warn("tftp: port holder went away but the port cannot be taken over; retrying", "err", err)
				e.lastErr = err.Error()
			}
			continue
		}
		if held {
			e.log.Info("tftp: took over the port from a pogo process that stopped", "port", e.addr.Port)
			return
		}
	}
}

// Holding tells whether this process serves the port.
func (e *endpoint) holding() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.srv != nil
}

// boundAddr is the address clients send to.
func (e *endpoint) boundAddr() *net.UDPAddr {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := *e.addr
	if e.bound != nil {
		a = *e.bound
	}
	if a.IP.IsUnspecified() {
		a.IP = net.IPv4(127, 0, 0, 1)
	}
	return &a
}

// Close stops serving (another pogo process then takes the port over)
// and leaves the registry.
func (e *endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	close(e.stop)
	srv, served := e.srv, e.served
	e.mu.Unlock()
	e.watcher.Wait()
	if srv != nil {
		// Let another process take the port over now rather than after
		// the transfers in flight, which go on over their own sockets.
		e.conn.Close()
		e.cleanup()
		// Shutdown waits for those, which boards of other exporters may
		// depend on; a peer that stopped answering ends within the retry
		// budget (5 tries of 5 s).
		done := make(chan struct{})
		go func() { srv.Shutdown(); close(done) }()
		select {
		case <-done:
			<-served
		case <-time.After(30 * time.Second):
			e.log.Warn("tftp: transfers still running at shutdown; leaving them to time out")
		}
	}
	e.cleanup()
	return nil
}

func (e *endpoint) cleanup() {
	if e.lock != nil {
		e.lock.unlock(false)
		e.lock = nil
	}
	if e.private {
		os.RemoveAll(e.dir)
	}
}

// registration is a board's subdir in the port's registry: a symlink
// boards/<name> to its directory, boards/<name>.lock held while it is
// registered and boards/<name>.window when its window is not 1.
type registration struct {
	name, link, dir string
	lock            *lockFile
}

// register makes the files in dir reachable as <name>/<file> on the port,
// whichever pogo process serves it.
func (e *endpoint) register(name, dir string, window int) (*registration, error) {
	boards := filepath.Join(e.dir, "boards")
	lockPath := filepath.Join(boards, name+".lock")
	lk, ok, err := tryLock(lockPath)
	if err != nil {
		return nil, fmt.Errorf("tftp: register subdir %s: %w", name, err)
	}
	if !ok {
		return nil, drivers.FieldErr("subdir", "tftp: subdir %q is already served for another exporter (pid %d)", name, lockHolder(lockPath))
	}
	lk.writePID()
	abs, err := filepath.Abs(dir)
	if err != nil {
		lk.unlock(true)
		return nil, fmt.Errorf("tftp: register subdir %s: %w", name, err)
	}
	link := filepath.Join(boards, name)
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(boards, ".tmp-"+hex.EncodeToString(rnd[:]))
	_ = os.Remove(link + windowSuffix)
	if window > 1 {
		if err := writeAtomic(tmp, link+windowSuffix, []byte(strconv.Itoa(window)+"\n")); err != nil {
			lk.unlock(true)
			return nil, fmt.Errorf("tftp: register subdir %s: %w", name, err)
		}
	}
	if err := os.Symlink(abs, tmp); err != nil {
		lk.unlock(true)
		return nil, fmt.Errorf("tftp: register subdir %s: %w", name, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		lk.unlock(true)
		return nil, fmt.Errorf("tftp: register subdir %s: %w", name, err)
	}
	_ = os.Remove(link + ".stats")
	return &registration{name: name, link: link, dir: abs, lock: lk}, nil
}

func (e *endpoint) unregister(r *registration) {
	if t, err := os.Readlink(r.link); err == nil && t == r.dir {
		os.Remove(r.link)
	}
	os.Remove(r.link + ".stats")
	os.Remove(r.link + windowSuffix)
	r.lock.unlock(true)
}

// open resolves a requested filename, <subdir>/<path>, to a file inside
// that board's directory.
func (e *endpoint) open(filename string) (*os.File, os.FileInfo, string, error) {
	board, rest, ok := strings.Cut(filename, "/")
	if !boardName.MatchString(board) {
		if !ok || board == "" || board == "." || board == ".." {
			return nil, nil, "", fmt.Errorf("%q names no board subdir: %w", filename, files.ErrRefused)
		}
		return nil, nil, "", fmt.Errorf("%q: no board subdir %q: %w", filename, board, errdefs.ErrNotFound)
	}
	if !ok {
		return nil, nil, "", fmt.Errorf("%q names no file inside board subdir: %w", filename, errdefs.ErrNotFound)
	}
	target, err := os.Readlink(filepath.Join(e.dir, "boards", board))
	if err != nil {
		return nil, nil, "", fmt.Errorf("no board subdir %q: %w", board, errdefs.ErrNotFound)
	}
	root, err := os.OpenRoot(target)
	if err != nil {
		return nil, nil, board, fmt.Errorf("board subdir %q: %w", board, errdefs.ErrNotFound)
	}
	defer root.Close()
	f, fi, err := files.Open(root, rest)
	return f, fi, board, err
}

// read is the TFTP read handler. Errors become the ERROR packet's text, so
// they say what happened without naming host paths.
func (e *endpoint) read(filename string, rf io.ReaderFrom) error {
	start := time.Now()
	remote := ""
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ra := ot.RemoteAddr()
		remote = ra.String()
	}
	f, fi, board, err := e.open(filename)
	if err != nil {
		if errors.Is(err, files.ErrRefused) {
			e.log.Warn("tftp: refused", "remote", remote, "file", filename, "err", err)
			e.addStats(board, Stats{Refused: 1})
			return errors.New("access violation: path leaves the served directory")
		}
		e.log.Info("tftp: not found", "remote", remote, "file", filename, "err", err)
		e.addStats(board, Stats{NotFound: 1})
		return errors.New("file not found")
	}
	defer f.Close()
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ot.SetSize(fi.Size())
	}
	// The sender reads one block per request; a large buffer turns that
	// into one read syscall per megabyte, off the lock-step path.
	n, err := rf.ReadFrom(bufio.NewReaderSize(f, 1<<20))
	dur := time.Since(start)
	rate := float64(n) / dur.Seconds() / 1e6
	if err != nil {
		e.log.Warn("tftp: transfer failed", "remote", remote, "file", filename, "bytes", n, "size", fi.Size(), "duration", dur, "err", err)
		e.addStats(board, Stats{Failed: 1, Bytes: n, Seconds: dur.Seconds()})
		return err
	}
	e.log.Info("tftp: sent", "remote", remote, "file", filename, "bytes", n, "duration", dur, "MB/s", strconv.FormatFloat(rate, 'f', 1, 64))
	e.addStats(board, Stats{Transfers: 1, Bytes: n, Seconds: dur.Seconds()})
	return nil
}

// Stats count a board's transfers, as served by whichever process holds
// the port.
type Stats struct {
	// Transfers completed, and their bytes and seconds (failed ones
	// included).
	Transfers int64   `json:"transfers"`
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"`
	// Failed transfers started but did not finish (the client went away).
	Failed int64 `json:"failed"`
	// NotFound and Refused count requests for missing files and for names
	// leaving the board's directory.
	NotFound int64 `json:"not_found"`
	Refused  int64 `json:"refused"`
}

func (s *Stats) add(d Stats) {
	s.Transfers += d.Transfers
	s.Bytes += d.Bytes
	s.Seconds += d.Seconds
	s.Failed += d.Failed
	s.NotFound += d.NotFound
	s.Refused += d.Refused
}

// addStats adds d to a registered board's counters, which live next to
// its registration so that every process sharing the port can read them.
func (e *endpoint) addStats(board string, d Stats) {
	if board == "" {
		return
	}
	link := filepath.Join(e.dir, "boards", board)
	if _, err := os.Lstat(link); err != nil {
		return
	}
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	s, _ := readStats(link + ".stats")
	s.add(d)
	b, _ := json.Marshal(s)
	if err := writeAtomic(link+".stats.tmp", link+".stats", b); err != nil {
		e.log.Warn("tftp: write stats", "err", err)
	}
}

// writeAtomic writes b to path through tmp, so readers see the old or the
// new content and never a part.
func writeAtomic(tmp, path string, b []byte) error {
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

const windowSuffix = ".window"

// maxBurst bounds the bytes of one window: a client's socket buffer must
// take a whole burst (a window of 65464-byte blocks would overrun most,
// and pin/tftp resends the whole window on a loss).
const maxBurst = 64 << 10

// requestConn is the port's socket as pin/tftp's server reads it: each
// request is seen before pin handles it, which is when pin takes the
// send window for the transfer.
type requestConn struct {
	*net.UDPConn
	before func(pkt []byte)
}

func (c requestConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.UDPConn.ReadFrom(b)
	if err == nil {
		c.before(b[:n])
	}
	return n, a, err
}

// beforeRequest sets the send window for the read request in pkt: its
// board's window, capped so one burst stays within maxBurst. Other
// packets leave it alone (pin handles them in turn, on this goroutine).
func (e *endpoint) beforeRequest(pkt []byte) {
	name, blksize, ok := parseRRQ(pkt)
	if !ok {
		return
	}
	w := 1
	if board, _, _ := strings.Cut(name, "/"); boardName.MatchString(board) {
		w = e.boardWindow(board)
	}
	w = max(1, min(w, maxBurst/(blksize+4)))
	e.srv.SetAnticipate(uint(w))
}

// boardWindow is the window a registered board asked for (1 without a
// window file).
func (e *endpoint) boardWindow(board string) int {
	b, err := os.ReadFile(filepath.Join(e.dir, "boards", board+windowSuffix))
	if err != nil {
		return 1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 1 {
		return 1
	}
	return min(n, MaxWindow)
}

// parseRRQ reads a TFTP read request (RFC 1350, options per RFC 2347):
// the file name and the block size it asks for (512 without blksize).
func parseRRQ(pkt []byte) (name string, blksize int, ok bool) {
	if len(pkt) < 4 || pkt[0] != 0 || pkt[1] != 1 {
		return "", 0, false
	}
	fields := strings.Split(string(pkt[2:]), "\x00")
	if len(fields) < 3 || fields[len(fields)-1] != "" {
		return "", 0, false
	}
	fields = fields[:len(fields)-1]
	name, blksize = fields[0], 512
	for i := 2; i+1 < len(fields); i += 2 {
		if strings.EqualFold(fields[i], "blksize") {
			if n, err := strconv.Atoi(fields[i+1]); err == nil && n >= 8 && n <= 65464 {
				blksize = n
			}
		}
	}
	return name, blksize, true
}

func readStats(path string) (Stats, error) {
	var s Stats
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return s, nil
		}
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return Stats{}, fmt.Errorf("read tftp stats %s: %w", path, err)
	}
	return s, nil
}

// reservedMark stands for the address in the lock file of a port reserved
// with Reserve.
const reservedMark = "reserved"

// Reserve keeps pogo's TFTP servers off a port so that another server can
// bind it (Debian's tftpd-hpa as a benchmark baseline, which boards also
// only find on port 69). It waits until no pogo process on the host serves
// the port, or ctx ends. Until release is called, starting a pogo server
// on the port fails naming the reservation, and pogo processes already
// sharing it do not take it over. hostDir "" means DefaultHostDir().
func Reserve(ctx context.Context, hostDir string, port int) (release func(), err error) {
	if hostDir == "" {
		hostDir = DefaultHostDir()
	}
	dir := filepath.Join(hostDir, "port-"+strconv.Itoa(port))
	if err := os.MkdirAll(filepath.Join(dir, "boards"), 0o755); err != nil {
		return nil, fmt.Errorf("tftp: reserve port %d: %w", port, err)
	}
	t := time.NewTicker(takeoverPoll / 2)
	defer t.Stop()
	for {
		lk, ok, err := tryLock(filepath.Join(dir, "lock"))
		if err != nil {
			return nil, fmt.Errorf("tftp: reserve port %d: %w", port, err)
		}
		if ok {
			_ = lk.f.Truncate(0)
			_, _ = lk.f.WriteAt([]byte(fmt.Sprintf("%d %s\n", os.Getpid(), reservedMark)), 0)
			return func() { lk.unlock(false) }, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("tftp: reserve port %d: still served by pogo (pid %d): %w", port, lockHolder(filepath.Join(dir, "lock")), ctx.Err())
		case <-t.C:
		}
	}
}
