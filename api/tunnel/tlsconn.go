package tunnel

import (
	"crypto/tls"
	"net"
	"sync"
)

// chunk is how much a TLS tunnel leg moves per system call: crypto/tls
// writes each record (16 KiB at most) with its own write and reads the
// network about a record at a time, which on a fast link costs more than
// the cipher (BenchmarkTLSLeg).
const chunk = 256 << 10

var chunks = sync.Pool{New: func() any { b := make([]byte, chunk); return &b }}

// BatchConn sits under crypto/tls on a tunnel leg. Once batching is
// switched on (after the handshake), reads fill a pooled chunk from the
// network and writes inside one TLSConn.Write collect their records into
// one system call. An idle leg holds no buffer.
type BatchConn struct {
	net.Conn

	rmu     sync.Mutex
	on      bool
	rbuf    *[]byte
	pending []byte

	wmu   sync.Mutex
	batch bool
	wbuf  *[]byte
	out   []byte
}

func (b *BatchConn) Read(p []byte) (int, error) {
	b.rmu.Lock()
	defer b.rmu.Unlock()
	if !b.on {
		return b.Conn.Read(p)
	}
	if len(b.pending) == 0 {
		if b.rbuf == nil {
			b.rbuf = chunks.Get().(*[]byte)
		}
		n, err := b.Conn.Read(*b.rbuf)
		if n == 0 {
			b.release()
			return 0, err
		}
		b.pending = (*b.rbuf)[:n]
	}
	n := copy(p, b.pending)
	b.pending = b.pending[n:]
	if len(b.pending) == 0 {
		b.release()
	}
	return n, nil
}

func (b *BatchConn) release() {
	if b.rbuf != nil {
		chunks.Put(b.rbuf)
		b.rbuf, b.pending = nil, nil
	}
}

// Buffered is how many bytes read from the network await crypto/tls.
func (b *BatchConn) Buffered() int {
	b.rmu.Lock()
	defer b.rmu.Unlock()
	return len(b.pending)
}

func (b *BatchConn) Write(p []byte) (int, error) {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	if !b.batch {
		return b.Conn.Write(p)
	}
	if b.wbuf == nil {
		b.wbuf = chunks.Get().(*[]byte)
		b.out = (*b.wbuf)[:0]
	}
	if len(b.out)+len(p) > cap(b.out) {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(b.out) {
			return b.Conn.Write(p)
		}
	}
	b.out = append(b.out, p...)
	return len(p), nil
}

func (b *BatchConn) flushLocked() error {
	if len(b.out) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.out)
	b.out = b.out[:0]
	return err
}

// setBatch starts or ends a batch of writes; ending it sends the batch
// and gives its buffer back.
func (b *BatchConn) setBatch(on bool) error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.batch = on
	if on {
		return nil
	}
	err := b.flushLocked()
	if b.wbuf != nil {
		chunks.Put(b.wbuf)
		b.wbuf, b.out = nil, nil
	}
	return err
}

// TLSConn is a TLS tunnel leg over a BatchConn.
type TLSConn struct {
	*tls.Conn
	b *BatchConn
}

// NewTLSConn starts batching on a leg whose handshake is done.
func NewTLSConn(c *tls.Conn, b *BatchConn) *TLSConn {
	b.rmu.Lock()
	b.on = true
	b.rmu.Unlock()
	return &TLSConn{Conn: c, b: b}
}

// Write sends p's records in as few system calls as their size allows.
func (t *TLSConn) Write(p []byte) (int, error) {
	if len(p) <= 16<<10 {
		// One record: nothing to batch.
		return t.Conn.Write(p)
	}
	if err := t.b.setBatch(true); err != nil {
		return 0, err
	}
	n, err := t.Conn.Write(p)
	if ferr := t.b.setBatch(false); err == nil && ferr != nil {
		err = ferr
	}
	return n, err
}

// Buffered is how many bytes arrived but are not yet decrypted records
// (a lower bound: crypto/tls may hold more).
func (t *TLSConn) Buffered() int { return t.b.Buffered() }
