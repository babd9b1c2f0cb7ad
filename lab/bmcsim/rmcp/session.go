package rmcp

import (
	"bytes"
	"crypto/hmac"
	"encoding/binary"
	"fmt"
	"time"
)

// RMCP+ status codes (IPMI v2.0 table 13-15).
const (
	statusOK                  = 0x00
	statusNoResources         = 0x01
	statusInvalidSessionID    = 0x02
	statusInvalidRole         = 0x09
	statusUnauthorizedRole    = 0x0A
	statusInvalidNameLength   = 0x0C
	statusUnauthorizedName    = 0x0D
	statusInvalidIntegrityICV = 0x0F
	statusNoCipherSuiteMatch  = 0x11
	statusIllegalParameter    = 0x12
)

type session struct {
	id        uint32 // managed system session id
	consoleID uint32
	suite     Suite
	maxPriv   byte
	priv      byte

	rm, rc   []byte
	role     byte
	username []byte
	rakp2    bool

	sik, k1, k2 []byte
	active      bool
	outSeq      uint32
	last        time.Time
}

func (s *Server) newSessionID() uint32 {
	for {
		id := binary.LittleEndian.Uint32(randBytes(4))
		if _, taken := s.sessions[id]; id != 0 && !taken {
			return id
		}
	}
}

// openSession answers an RMCP+ Open Session Request.
func (s *Server) openSession(p []byte) []byte {
	if len(p) < 32 {
		if len(p) >= 8 {
			return s.openError(p[0], statusIllegalParameter, binary.LittleEndian.Uint32(p[4:8]))
		}
		return nil
	}
	tag, reqPriv, consoleID := p[0], p[1]&0x0f, binary.LittleEndian.Uint32(p[4:8])
	var algs [3]byte
	for i := range 3 {
		rec := p[8+8*i : 16+8*i]
		if rec[0] != byte(i) {
			return s.openError(tag, statusIllegalParameter, consoleID)
		}
		algs[i] = rec[4] & 0x3f
	}
	suite, ok := suiteFor(algs[0], algs[1], algs[2])
	if !ok {
		s.log.Info("rmcp open session: no matching cipher suite", "auth", algs[0], "integrity", algs[1], "confidentiality", algs[2])
		return s.openError(tag, statusNoCipherSuiteMatch, consoleID)
	}
	if reqPriv == 0 {
		reqPriv = privAdmin
	}
	if reqPriv > privAdmin {
		return s.openError(tag, statusInvalidRole, consoleID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sessions) >= s.cfg.MaxSessions {
		return s.openError(tag, statusNoResources, consoleID)
	}
	ss := &session{id: s.newSessionID(), consoleID: consoleID, suite: suite, maxPriv: reqPriv, last: time.Now()}
	s.sessions[ss.id] = ss
	s.log.Debug("rmcp open session", "session", fmt.Sprintf("%#08x", ss.id), "suite", suite.ID)
	out := []byte{tag, statusOK, reqPriv, 0}
	out = binary.LittleEndian.AppendUint32(out, consoleID)
	out = binary.LittleEndian.AppendUint32(out, ss.id)
	for i, a := range []byte{suite.Auth, suite.Integ, suite.Conf} {
		out = append(out, byte(i), 0, 0, 8, a, 0, 0, 0)
	}
	return out
}

func (s *Server) openError(tag, status byte, consoleID uint32) []byte {
	out := []byte{tag, status, 0, 0}
	return binary.LittleEndian.AppendUint32(out, consoleID)
}

func (s *Server) rakpError(tag, status byte, consoleID uint32) []byte {
	return s.openError(tag, status, consoleID)
}

// rakp1 answers RAKP Message 1 with RAKP Message 2.
func (s *Server) rakp1(p []byte) []byte {
	if len(p) < 28 {
		return nil
	}
	tag, sid := p[0], binary.LittleEndian.Uint32(p[4:8])
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[sid]
	if !ok || ss.active {
		return s.rakpError(tag, statusInvalidSessionID, 0)
	}
	role, ulen := p[24], int(p[27])
	if ulen > 16 || len(p) < 28+ulen {
		delete(s.sessions, sid)
		return s.rakpError(tag, statusInvalidNameLength, ss.consoleID)
	}
	name := p[28 : 28+ulen]
	if !bytes.Equal(name, []byte(s.cfg.User)) {
		s.log.Info("rmcp login refused: unknown user", "user", string(name))
		delete(s.sessions, sid)
		return s.rakpError(tag, statusUnauthorizedName, ss.consoleID)
	}
	priv := role & 0x0f
	if priv == 0 || priv > privAdmin {
		delete(s.sessions, sid)
		return s.rakpError(tag, statusInvalidRole, ss.consoleID)
	}
	if priv > ss.maxPriv {
		delete(s.sessions, sid)
		return s.rakpError(tag, statusUnauthorizedRole, ss.consoleID)
	}
	ss.rm = append([]byte(nil), p[8:24]...)
	ss.rc = randBytes(16)
	ss.role = role
	ss.maxPriv = priv
	ss.username = append([]byte(nil), name...)
	ss.rakp2 = true
	ss.last = time.Now()

	code := mac(ss.suite.authHash(), []byte(s.cfg.Password),
		le32(ss.consoleID), le32(ss.id), ss.rm, ss.rc, s.cfg.GUID[:], []byte{ss.role, byte(len(ss.username))}, ss.username)
	out := []byte{tag, statusOK, 0, 0}
	out = binary.LittleEndian.AppendUint32(out, ss.consoleID)
	out = append(out, ss.rc...)
	out = append(out, s.cfg.GUID[:]...)
	return append(out, code...)
}

// rakp3 checks RAKP Message 3 and activates the session with RAKP 4.
func (s *Server) rakp3(p []byte) []byte {
	if len(p) < 8 {
		return nil
	}
	tag, status, sid := p[0], p[1], binary.LittleEndian.Uint32(p[4:8])
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[sid]
	if !ok || !ss.rakp2 || ss.active {
		return s.rakpError(tag, statusInvalidSessionID, 0)
	}
	if status != statusOK {
		// The console gave up (typically: our RAKP 2 did not verify
		// because its password differs).
		s.log.Info("rmcp console aborted session setup", "status", fmt.Sprintf("%#02x", status))
		delete(s.sessions, sid)
		return nil
	}
	h := ss.suite.authHash()
	key := []byte(s.cfg.Password)
	want := mac(h, key, ss.rc, le32(ss.consoleID), []byte{ss.role, byte(len(ss.username))}, ss.username)
	if !hmac.Equal(p[8:], want) {
		s.log.Info("rmcp login refused: bad password", "user", string(ss.username))
		delete(s.sessions, sid)
		return s.rakpError(tag, statusInvalidIntegrityICV, ss.consoleID)
	}
	ss.sik = mac(h, key, ss.rm, ss.rc, []byte{ss.role, byte(len(ss.username))}, ss.username)
	// K1 and K2 use the authentication algorithm over constants that are
	// 20 bytes whatever the hash size (IPMI v2.0 §13.32).
	ss.k1 = mac(h, ss.sik, bytes.Repeat([]byte{0x01}, 20))
	ss.k2 = mac(h, ss.sik, bytes.Repeat([]byte{0x02}, 20))
	ss.active = true
	ss.priv = privUser
	ss.last = time.Now()
	s.log.Info("rmcp session active", "session", fmt.Sprintf("%#08x", ss.id), "user", string(ss.username), "suite", ss.suite.ID)
	icv := mac(h, ss.sik, ss.rm, le32(ss.id), s.cfg.GUID[:])[:ss.suite.rakp4Len()]
	out := []byte{tag, statusOK, 0, 0}
	out = binary.LittleEndian.AppendUint32(out, ss.consoleID)
	return append(out, icv...)
}

func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// getChannelAuthCaps advertises RMCP+ with non-null user names.
func (s *Server) getChannelAuthCaps(data []byte) (byte, []byte) {
	if len(data) < 2 {
		return ccReqDataLen, nil
	}
	ch := data[0] & 0x0f
	if ch != 0x0e && ch != 0x01 {
		return ccInvalidField, nil
	}
	ext := byte(0x00)
	if data[0]&0x80 != 0 {
		ext = 0x02 // IPMI v2.0 connections supported
	}
	return ccOK, []byte{0x01, 0x80, 0x04, ext, 0, 0, 0, 0}
}

// getChannelCipherSuites lists suites 3 and 17 in 16-byte pages.
func (s *Server) getChannelCipherSuites(data []byte) (byte, []byte) {
	if len(data) < 3 {
		return ccReqDataLen, nil
	}
	var recs []byte
	for _, su := range Suites {
		recs = append(recs, 0xc0, su.ID, su.Auth, 0x40|su.Integ, 0x80|su.Conf)
	}
	idx := int(data[2] & 0x3f)
	out := []byte{0x01}
	if start := idx * 16; start < len(recs) {
		out = append(out, recs[start:min(start+16, len(recs))]...)
	}
	return ccOK, out
}

func (s *Server) getDeviceID() (byte, []byte) {
	return ccOK, []byte{
		0x20, 0x01, 0x02, 0x19, 0x02, 0x0d, // id, rev, fw 2.19, IPMI 2.0, support
		0xcf, 0xc2, 0x00, // manufacturer: OpenBMC IANA 49871
		0x01, 0x00, // product
		0, 0, 0, 0,
	}
}

func (s *Server) setPrivilege(ss *session, data []byte) (byte, []byte) {
	if len(data) < 1 {
		return ccReqDataLen, nil
	}
	p := data[0] & 0x0f
	if p == 0 {
		return ccOK, []byte{ss.priv}
	}
	if p > ss.maxPriv || p < 1 {
		return 0x81, nil // requested level not available for this user
	}
	ss.priv = p
	return ccOK, []byte{p}
}

func (s *Server) closeSession(ss *session, data []byte) (byte, []byte) {
	if len(data) < 4 {
		return ccReqDataLen, nil
	}
	id := binary.LittleEndian.Uint32(data)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sessions[id]; !ok {
		return ccInvalidSession, nil
	}
	// The reply still goes out under ss's keys, which the caller holds.
	delete(s.sessions, id)
	s.log.Debug("rmcp session closed", "session", fmt.Sprintf("%#08x", id))
	return ccOK, nil
}

func (s *Server) sessionInfo(ss *session, data []byte) (byte, []byte) {
	if len(data) < 1 {
		return ccReqDataLen, nil
	}
	s.mu.Lock()
	n := byte(len(s.sessions))
	s.mu.Unlock()
	return ccOK, []byte{byte(ss.id & 0x3f), byte(s.cfg.MaxSessions), n, 0x02, ss.priv, 0x11}
}
