// Package rmcp serves IPMI v2.0 RMCP+ (ipmitool's "lanplus") on UDP: ASF
// presence ping, the session-less discovery commands, RMCP+ Open Session and
// RAKP 1-4 for one user, and integrity-protected, encrypted sessions whose
// requests are handed to a command handler.
package rmcp

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Completion codes the session layer itself produces.
const (
	ccOK             = 0x00
	ccInvalidCommand = 0xC1
	ccReqDataLen     = 0xC7
	ccReqDataTooLong = 0xC8
	ccInvalidField   = 0xCC
	ccInsufficient   = 0xD4
	ccInvalidSession = 0x87
)

// Privilege levels.
const (
	privUser  = 0x02
	privAdmin = 0x04
)

// Handler serves one authenticated IPMI request and returns the completion
// code and response data.
type Handler func(ctx context.Context, netFn, cmd byte, data []byte) (cc byte, resp []byte)

// Config configures a Server.
type Config struct {
	User, Password string
	// Handler serves commands the session layer does not answer itself.
	Handler Handler
	// MaxRequest caps IPMI request data; longer requests get 0xC8
	// (default 1024).
	MaxRequest int
	// IdleTimeout drops sessions without traffic (default 60 s, the IPMI
	// default session inactivity timeout).
	IdleTimeout time.Duration
	// MaxSessions bounds concurrent sessions (default 16).
	MaxSessions int
	GUID        [16]byte
	Log         *slog.Logger
}

// Server is an RMCP+ responder.
type Server struct {
	cfg     Config
	log     *slog.Logger
	offline atomic.Bool

	mu       sync.Mutex
	sessions map[uint32]*session // by managed system session id
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	if cfg.MaxRequest <= 0 {
		cfg.MaxRequest = 1024
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 60 * time.Second
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 16
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.GUID == [16]byte{} {
		copy(cfg.GUID[:], randBytes(16))
	}
	return &Server{cfg: cfg, log: cfg.Log, sessions: map[uint32]*session{}}
}

// SetOffline makes the server ignore every packet and forget its sessions,
// which is how a rebooting BMC looks from the network.
func (s *Server) SetOffline(off bool) {
	s.offline.Store(off)
	if off {
		s.mu.Lock()
		s.sessions = map[uint32]*session{}
		s.mu.Unlock()
	}
}

// Sessions reports how many sessions exist (in any state).
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Serve answers packets on conn until ctx is done; it closes conn then.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	buf := make([]byte, 65536)
	lastSweep := time.Now()
	for {
		n, addr, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("rmcp read: %w", err)
		}
		if time.Since(lastSweep) > time.Second {
			s.sweep()
			lastSweep = time.Now()
		}
		if s.offline.Load() {
			continue
		}
		reply := s.handle(ctx, buf[:n])
		if reply != nil {
			if _, err := conn.WriteTo(reply, addr); err != nil {
				s.log.Debug("rmcp write", "to", addr, "err", err)
			}
		}
	}
}

func (s *Server) sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, ss := range s.sessions {
		// A handshake a client abandoned (a wrong password ends at RAKP 2)
		// must not hold one of the few session slots for a whole idle timeout.
		limit := s.cfg.IdleTimeout
		if !ss.active {
			limit = min(limit, setupTimeout)
		}
		if time.Since(ss.last) > limit {
			s.log.Info("rmcp session timed out", "session", fmt.Sprintf("%#08x", id))
			delete(s.sessions, id)
		}
	}
}

// handle turns one datagram into a reply datagram, or nil to stay silent
// (malformed or unauthenticated packets are dropped, as BMCs do).
func (s *Server) handle(ctx context.Context, pkt []byte) (reply []byte) {
	defer func() {
		// A simulator must survive anything a fuzzer or a broken client
		// sends; a panic here would be a bug, but never a crash.
		if r := recover(); r != nil {
			s.log.Error("rmcp packet handler panicked", "panic", r, "packet", fmt.Sprintf("% x", pkt))
			reply = nil
		}
	}()
	if len(pkt) < 5 || pkt[0] != 0x06 {
		return nil
	}
	switch pkt[3] & 0x1f {
	case 0x06:
		return s.asf(pkt)
	case 0x07:
	default:
		return nil
	}
	if pkt[4] == 0x06 {
		return s.v20(ctx, pkt)
	}
	return s.v15(ctx, pkt)
}

var rmcpHeader = []byte{0x06, 0x00, 0xff, 0x07}

// asf answers a presence ping with a pong advertising IPMI support.
func (s *Server) asf(pkt []byte) []byte {
	if len(pkt) < 12 || !bytes.Equal(pkt[4:8], []byte{0x00, 0x00, 0x11, 0xbe}) || pkt[8] != 0x80 {
		return nil
	}
	out := []byte{0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x40, pkt[9], 0x00, 0x10}
	out = append(out, 0x00, 0x00, 0x11, 0xbe, 0, 0, 0, 0, 0x81, 0x00, 0, 0, 0, 0, 0, 0)
	return out
}

// v15 serves session-less IPMI v1.5 packets, which ipmitool uses for Get
// Channel Authentication Capabilities before switching to RMCP+.
func (s *Server) v15(ctx context.Context, pkt []byte) []byte {
	if len(pkt) < 14 || pkt[4] != 0x00 {
		return nil // only authentication type none, session-less
	}
	if binary.LittleEndian.Uint32(pkt[9:13]) != 0 {
		return nil
	}
	n := int(pkt[13])
	if len(pkt) < 14+n {
		return nil
	}
	resp := s.message(ctx, nil, pkt[14:14+n])
	if resp == nil {
		return nil
	}
	out := append([]byte{}, rmcpHeader...)
	out = append(out, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, byte(len(resp)))
	return append(out, resp...)
}

// Payload types.
const (
	ptIPMI     = 0x00
	ptOpenReq  = 0x10
	ptOpenResp = 0x11
	ptRAKP1    = 0x12
	ptRAKP2    = 0x13
	ptRAKP3    = 0x14
	ptRAKP4    = 0x15

	ptEncrypted     = 0x80
	ptAuthenticated = 0x40
)

func (s *Server) v20(ctx context.Context, pkt []byte) []byte {
	if len(pkt) < 16 {
		return nil
	}
	ptByte := pkt[5]
	pt := ptByte & 0x3f
	if pt == 0x02 {
		return nil // OEM payloads are not supported
	}
	sid := binary.LittleEndian.Uint32(pkt[6:10])
	plen := int(binary.LittleEndian.Uint16(pkt[14:16]))
	if len(pkt) < 16+plen {
		return nil
	}
	payload := pkt[16 : 16+plen]

	if sid == 0 {
		switch pt {
		case ptOpenReq:
			return s.sessionless(ptOpenResp, s.openSession(payload))
		case ptRAKP1:
			return s.sessionless(ptRAKP2, s.rakp1(payload))
		case ptRAKP3:
			return s.sessionless(ptRAKP4, s.rakp3(payload))
		case ptIPMI:
			if ptByte&(ptEncrypted|ptAuthenticated) != 0 {
				return nil
			}
			if resp := s.message(ctx, nil, payload); resp != nil {
				return s.sessionless(ptIPMI, resp)
			}
		}
		return nil
	}
	if pt != ptIPMI {
		return nil
	}
	s.mu.Lock()
	ss, ok := s.sessions[sid]
	s.mu.Unlock()
	if !ok || !ss.active {
		return nil
	}
	// Both negotiated suites protect integrity and confidentiality, so
	// anything less is rejected silently.
	if ptByte&ptAuthenticated == 0 || ptByte&ptEncrypted == 0 {
		return nil
	}
	il := ss.suite.integLen()
	if len(pkt) < 16+plen+2+il {
		return nil
	}
	end := len(pkt) - il
	if pkt[end-1] != 0x07 {
		return nil
	}
	if !hmac.Equal(pkt[end:], mac(ss.suite.integHash(), ss.k1, pkt[4:end])[:il]) {
		s.log.Debug("rmcp integrity check failed; dropping", "session", fmt.Sprintf("%#08x", sid))
		return nil
	}
	plain, err := decryptAES(ss.k2, payload)
	if err != nil {
		return nil
	}
	ss.last = time.Now()
	resp := s.message(ctx, ss, plain)
	if resp == nil {
		return nil
	}
	return s.inSession(ss, resp)
}

// sessionless frames a reply outside any session.
func (s *Server) sessionless(pt byte, payload []byte) []byte {
	if payload == nil {
		return nil
	}
	out := append([]byte{}, rmcpHeader...)
	out = append(out, 0x06, pt, 0, 0, 0, 0, 0, 0, 0, 0)
	out = binary.LittleEndian.AppendUint16(out, uint16(len(payload)))
	return append(out, payload...)
}

// inSession frames, encrypts and signs a reply for ss.
func (s *Server) inSession(ss *session, msg []byte) []byte {
	enc := encryptAES(ss.k2, msg)
	out := append([]byte{}, rmcpHeader...)
	out = append(out, 0x06, ptIPMI|ptEncrypted|ptAuthenticated)
	out = binary.LittleEndian.AppendUint32(out, ss.consoleID)
	ss.outSeq++
	out = binary.LittleEndian.AppendUint32(out, ss.outSeq)
	out = binary.LittleEndian.AppendUint16(out, uint16(len(enc)))
	out = append(out, enc...)
	// Pad so that authtype .. next header is a multiple of four.
	pad := (4 - (len(out)-4+2)%4) % 4
	for range pad {
		out = append(out, 0xff)
	}
	out = append(out, byte(pad), 0x07)
	return append(out, mac(ss.suite.integHash(), ss.k1, out[4:])[:ss.suite.integLen()]...)
}

func checksum(b []byte) byte {
	var sum byte
	for _, c := range b {
		sum += c
	}
	return -sum
}

// message parses an IPMI LAN message, dispatches it and builds the reply
// message; ss is nil outside a session.
func (s *Server) message(ctx context.Context, ss *session, m []byte) []byte {
	if len(m) < 7 || checksum(m[:2]) != m[2] || checksum(m[3:len(m)-1]) != m[len(m)-1] {
		return nil
	}
	rsAddr, netFn, rqAddr, rqSeq, cmd := m[0], m[1]>>2, m[3], m[4], m[5]
	if netFn&1 != 0 {
		return nil // a response; not for us
	}
	data := m[6 : len(m)-1]
	var cc byte
	var resp []byte
	if len(data) > s.cfg.MaxRequest {
		cc = ccReqDataTooLong
	} else {
		cc, resp = s.dispatch(ctx, ss, netFn, cmd, data)
	}
	out := []byte{rqAddr, (netFn|1)<<2 | rqSeq&3, 0}
	out[2] = checksum(out[:2])
	body := []byte{rsAddr, rqSeq&^3 | m[1]&3, cmd, cc}
	body = append(body, resp...)
	out = append(out, body...)
	return append(out, checksum(body))
}

const netFnApp = 0x06

func (s *Server) dispatch(ctx context.Context, ss *session, netFn, cmd byte, data []byte) (byte, []byte) {
	if netFn == netFnApp {
		switch cmd {
		case 0x38:
			return s.getChannelAuthCaps(data)
		case 0x54:
			return s.getChannelCipherSuites(data)
		}
	}
	if ss == nil {
		return ccInsufficient, nil
	}
	if netFn == netFnApp {
		switch cmd {
		case 0x01:
			return s.getDeviceID()
		case 0x37:
			return ccOK, s.cfg.GUID[:]
		case 0x3B:
			return s.setPrivilege(ss, data)
		case 0x3C:
			return s.closeSession(ss, data)
		case 0x3D:
			return s.sessionInfo(ss, data)
		}
	}
	if s.cfg.Handler == nil {
		return ccInvalidCommand, nil
	}
	return s.cfg.Handler(ctx, netFn, cmd, data)
}

// setupTimeout drops sessions whose handshake did not complete.
const setupTimeout = 5 * time.Second
