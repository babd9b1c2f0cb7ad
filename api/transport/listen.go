package transport

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// ListenUnix listens on a unix socket at path, replacing a stale one, in a
// directory only the owner can enter.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s: another process is serving it", path)
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return bufferedListener{l}, nil
}

// socketBuffer is what unix socket connections ask the kernel for: the
// default (about 200 KiB) splits every bulk message into many syscalls.
// Best effort: the kernel caps it at net.core.[rw]mem_max.
const socketBuffer = 4 << 20

// DialUnix connects to the unix socket addr ("unix://path", "unix:path"
// or a path) with socketBuffer-sized buffers: a gRPC context dialer.
func DialUnix(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", strings.TrimPrefix(strings.TrimPrefix(addr, "unix://"), "unix:"))
	if err != nil {
		return nil, err
	}
	sizeBuffers(c)
	return c, nil
}

func sizeBuffers(c net.Conn) {
	if uc, ok := c.(*net.UnixConn); ok {
		_ = uc.SetReadBuffer(socketBuffer)
		_ = uc.SetWriteBuffer(socketBuffer)
	}
}

// bufferedListener sizes the socket buffers of every accepted connection.
type bufferedListener struct{ net.Listener }

func (l bufferedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		sizeBuffers(c)
	}
	return c, err
}
