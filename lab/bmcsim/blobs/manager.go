// Package blobs is the BMC side of the IPMI blob protocol: a manager that
// routes blob ids and sessions to handlers, and turns raw NetFn 0x2E/0x80
// requests into replies with the completion codes phosphor-ipmi-blobs uses.
package blobs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pogolab/pogo/drivers/bmc/blob"
)

// Handler owns a set of blob ids.
type Handler interface {
	CanHandle(id string) bool
	IDs() []string
	Open(session, flags uint16, id string) error
	Read(session uint16, off, size uint32) ([]byte, error)
	Write(session uint16, off uint32, data []byte) error
	WriteMeta(session uint16, off uint32, data []byte) error
	Commit(session uint16, data []byte) error
	Close(session uint16) error
	Delete(id string) error
	Stat(id string) (blob.Meta, error)
	SessionStat(session uint16) (blob.Meta, error)
	// Expire drops a session whose host went away.
	Expire(session uint16)
}

// DefaultExpiry is how long a session may sit idle before it is expired,
// matching phosphor-ipmi-blobs.
const DefaultExpiry = blob.SessionTimeout

type session struct {
	h    Handler
	id   string
	last time.Time
}

// Manager routes blob commands to handlers. It is safe for concurrent use.
type Manager struct {
	mu       sync.Mutex
	handlers []Handler
	sessions map[uint16]*session
	list     []string // built by GetCount, read by Enumerate
	expiry   time.Duration
	now      func() time.Time
	log      *slog.Logger
}

// NewManager returns a manager expiring idle sessions after expiry
// (DefaultExpiry if zero).
func NewManager(log *slog.Logger, expiry time.Duration, hs ...Handler) *Manager {
	if expiry <= 0 {
		expiry = DefaultExpiry
	}
	if log == nil {
		log = slog.Default()
	}
	return &Manager{handlers: hs, sessions: map[uint16]*session{}, expiry: expiry, now: time.Now, log: log}
}

// ErrRejected is returned by handlers that refuse an operation; the BMC
// answers it with an unspecified error.
var ErrRejected = errors.New("rejected")

func (m *Manager) handlerFor(id string) Handler {
	for _, h := range m.handlers {
		if h.CanHandle(id) {
			return h
		}
	}
	return nil
}

// IDs lists every blob id in handler order.
func (m *Manager) IDs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ids()
}

func (m *Manager) ids() []string {
	var out []string
	for _, h := range m.handlers {
		out = append(out, h.IDs()...)
	}
	return out
}

// ExpireStale expires sessions idle longer than the expiry.
func (m *Manager) ExpireStale() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expireStale()
}

func (m *Manager) expireStale() {
	now := m.now()
	for id, s := range m.sessions {
		if now.Sub(s.last) > m.expiry {
			m.log.Info("expiring stale blob session", "session", id, "blob", s.id, "idle", now.Sub(s.last).Round(time.Millisecond))
			s.h.Expire(id)
			delete(m.sessions, id)
		}
	}
}

// Reset forgets every session without telling handlers, as a BMC reboot
// does.
func (m *Manager) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sessions = map[uint16]*session{}
	m.list = nil
}

// OpenSessions reports how many sessions are open.
func (m *Manager) OpenSessions() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sessions)
}

// Process answers the data of one NetFn 0x2E cmd 0x80 request with response
// data and a completion code. It never panics on malformed input.
func (m *Manager) Process(data []byte) ([]byte, byte) {
	req, err := blob.DecodeRequest(data)
	if err != nil {
		var de *blob.DecodeError
		errors.As(err, &de)
		m.log.Debug("blob request rejected", "err", err)
		return nil, de.CC
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.expireStale()
	body, cc := m.dispatch(req)
	if cc != 0 {
		return nil, cc
	}
	return blob.EncodeResponse(body), 0
}

func (m *Manager) dispatch(req blob.Frame) ([]byte, byte) {
	b := req.Body
	fail := func(op string, err error) ([]byte, byte) {
		m.log.Debug("blob command failed", "op", op, "err", err)
		return nil, blob.CCUnspecifiedError
	}
	switch req.Sub {
	case blob.GetCount:
		m.list = m.ids()
		return binary.LittleEndian.AppendUint32(nil, uint32(len(m.list))), 0
	case blob.Enumerate:
		if m.list == nil {
			m.list = m.ids()
		}
		idx := binary.LittleEndian.Uint32(b)
		if int64(idx) >= int64(len(m.list)) {
			return nil, blob.CCInvalidField
		}
		return append([]byte(m.list[idx]), 0), 0
	case blob.Open:
		flags := binary.LittleEndian.Uint16(b)
		id, ok := blob.CString(b[2:])
		if !ok {
			return nil, blob.CCReqDataLen
		}
		s, err := m.open(flags, id)
		if err != nil {
			return fail("open "+id, err)
		}
		return binary.LittleEndian.AppendUint16(nil, s), 0
	case blob.Delete, blob.Stat:
		id, ok := blob.CString(b)
		if !ok {
			return nil, blob.CCReqDataLen
		}
		h := m.handlerFor(id)
		if h == nil {
			return fail(req.Sub.String()+" "+id, fmt.Errorf("no handler"))
		}
		if req.Sub == blob.Delete {
			for _, s := range m.sessions {
				if s.id == id {
					return fail("delete "+id, fmt.Errorf("blob is open"))
				}
			}
			if err := h.Delete(id); err != nil {
				return fail("delete "+id, err)
			}
			return nil, 0
		}
		meta, err := h.Stat(id)
		if err != nil {
			return fail("stat "+id, err)
		}
		return meta.Encode(), 0
	}

	// Everything else addresses an open session.
	sid := binary.LittleEndian.Uint16(b)
	s, ok := m.sessions[sid]
	if !ok {
		return fail(req.Sub.String(), fmt.Errorf("unknown session %d", sid))
	}
	s.last = m.now()
	var err error
	switch req.Sub {
	case blob.Read:
		var out []byte
		out, err = s.h.Read(sid, binary.LittleEndian.Uint32(b[2:]), binary.LittleEndian.Uint32(b[6:]))
		if err != nil {
			// phosphor answers a failed read with zero bytes, not an error.
			out = nil
		}
		return out, 0
	case blob.Write:
		err = s.h.Write(sid, binary.LittleEndian.Uint32(b[2:]), b[6:])
	case blob.WriteMeta:
		err = s.h.WriteMeta(sid, binary.LittleEndian.Uint32(b[2:]), b[6:])
	case blob.Commit:
		n := int(b[2])
		if n > len(b)-3 {
			return nil, blob.CCReqDataLen
		}
		err = s.h.Commit(sid, b[3:3+n])
	case blob.Close:
		if err = s.h.Close(sid); err == nil {
			delete(m.sessions, sid)
		}
	case blob.SessionStat:
		var meta blob.Meta
		if meta, err = s.h.SessionStat(sid); err == nil {
			return meta.Encode(), 0
		}
	}
	if err != nil {
		return fail(req.Sub.String(), err)
	}
	return nil, 0
}

func (m *Manager) open(flags uint16, id string) (uint16, error) {
	if flags&(blob.FlagRead|blob.FlagWrite) == 0 {
		return 0, fmt.Errorf("open flags %#04x ask for neither read nor write", flags)
	}
	h := m.handlerFor(id)
	if h == nil {
		return 0, fmt.Errorf("no handler for %s", id)
	}
	if len(m.sessions) >= 0xffff {
		return 0, fmt.Errorf("out of sessions")
	}
	// Random ids make a stale session id from an earlier host run unlikely
	// to alias a new one.
	var sid uint16
	for {
		sid = uint16(rand.N(0x10000))
		if _, taken := m.sessions[sid]; !taken {
			break
		}
	}
	if err := h.Open(sid, flags, id); err != nil {
		return 0, err
	}
	m.sessions[sid] = &session{h: h, id: id, last: m.now()}
	return sid, nil
}
