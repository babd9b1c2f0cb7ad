package tunnel

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	mrand "math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/pin"
)

func selfSigned(t testing.TB) *tls.Config {
	cert, _, err := pin.SelfSigned("leg")
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

// legPair is a TLS connection over loopback TCP; batched makes both ends
// tunnel legs (TLSConn), otherwise plain crypto/tls.
func legPair(t testing.TB, batched bool) (client, server net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sc := make(chan net.Conn, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			sc <- nil
			return
		}
		bc := &BatchConn{Conn: raw}
		s := tls.Server(bc, selfSigned(t))
		if err := s.Handshake(); err != nil {
			sc <- nil
			return
		}
		if batched {
			sc <- NewTLSConn(s, bc)
		} else {
			sc <- s
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	bc := &BatchConn{Conn: raw}
	c := tls.Client(bc, &tls.Config{InsecureSkipVerify: true})
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	server = <-sc
	if server == nil {
		t.Fatal("server handshake failed")
	}
	if batched {
		return NewTLSConn(c, bc), server
	}
	return c, server
}

// Both directions at once, in writes of every size from one byte to
// several records: every byte arrives, in order, and a half close ends
// each direction cleanly.
func TestTLSLegCarriesEveryByte(t *testing.T) {
	c, s := legPair(t, true)
	defer c.Close()
	defer s.Close()
	send := func(w net.Conn, data []byte, errc chan<- error) {
		r := mrand.New(mrand.NewPCG(1, 2))
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 1+r.IntN(100<<10))
			if _, err := w.Write(rest[:n]); err != nil {
				errc <- err
				return
			}
			rest = rest[n:]
		}
		errc <- w.(*TLSConn).CloseWrite()
	}
	up := make([]byte, 8<<20)
	down := make([]byte, 6<<20)
	_, _ = rand.Read(up)
	_, _ = rand.Read(down)
	errc := make(chan error, 2)
	go send(c, up, errc)
	go send(s, down, errc)
	gotUp, errUp := io.ReadAll(s)
	gotDown, errDown := io.ReadAll(c)
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if errUp != nil || errDown != nil {
		t.Fatal(errUp, errDown)
	}
	if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
		t.Fatalf("got %d/%d and %d/%d bytes, or they differ", len(gotUp), len(up), len(gotDown), len(down))
	}
	if n := c.(*TLSConn).b.Buffered(); n != 0 {
		t.Fatalf("%d bytes left buffered", n)
	}
}

// BenchmarkTLSLeg compares a tunnel leg with plain crypto/tls, 64 MiB in
// 256 KiB writes over loopback TCP, in the same run.
func BenchmarkTLSLeg(b *testing.B) {
	const total = 64 << 20
	run := func(batched bool) float64 {
		c, s := legPair(b, batched)
		defer c.Close()
		defer s.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 256<<10)
			for n := 0; n < total; {
				k, err := s.Read(buf)
				n += k
				if err != nil {
					return
				}
			}
		}()
		buf := make([]byte, 256<<10)
		start := time.Now()
		for n := 0; n < total; n += len(buf) {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		<-done
		return total / 1e6 / time.Since(start).Seconds()
	}
	var plain, leg float64
	b.SetBytes(2 * total)
	for range b.N {
		plain += run(false)
		leg += run(true)
	}
	b.ReportMetric(plain/float64(b.N), "crypto/tls-MB/s")
	b.ReportMetric(leg/float64(b.N), "leg-MB/s")
	b.ReportMetric(leg/plain, "leg/crypto-tls")
}
