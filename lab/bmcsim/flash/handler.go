// Package flash is the simulator's phosphor-ipmi-flash firmware handler:
// the upload/verify/update state machine behind the /flash/* blobs, and the
// /flash/cleanup blob.
package flash

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/pogolab/pogo/drivers/bmc/blob"
	"github.com/pogolab/pogo/lab/bmcsim/blobs"
	"github.com/pogolab/pogo/lab/bmcsim/flashconfig"
)

// State is the firmware update state.
type State int

// States in the order an update walks them.
const (
	NotYetStarted State = iota
	UploadInProgress
	VerificationPending
	VerificationStarted
	VerificationCompleted
	UpdatePending
	UpdateStarted
	UpdateCompleted
)

var stateNames = [...]string{"notYetStarted", "uploadInProgress", "verificationPending", "verificationStarted",
	"verificationCompleted", "updatePending", "updateStarted", "updateCompleted"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Marker blob ids that show which uploads are in flight.
const (
	ActiveImage = "/flash/active/image"
	ActiveHash  = "/flash/active/hash"
)

// DefaultHashPath is where phosphor-ipmi-flash stores the signature.
const DefaultHashPath = "/tmp/bmc.sig"

// Options configure a Handler.
type Options struct {
	Entries []flashconfig.Entry
	// HashPath receives /flash/hash (DefaultHashPath if empty).
	HashPath string
	// Root re-roots every configured file path, so a simulator never
	// writes to /run/initramfs or /tmp of the machine it runs on.
	Root   string
	Runner *Runner
	// Reboot is called when a reboot update action triggers. It must not
	// block; the simulator goes away asynchronously.
	Reboot func()
	Log    *slog.Logger
}

type sessionKind int

const (
	kindUpload sessionKind = iota
	kindVerify
	kindUpdate
)

type fsession struct {
	kind sessionKind
	id   string
	file *os.File
	size uint32
}

type pack struct {
	entry                       flashconfig.Entry
	prepare, verify, updateStep action
}

// Handler implements blobs.Handler for the firmware blobs.
type Handler struct {
	mu       sync.Mutex
	log      *slog.Logger
	order    []string // configured blob ids, first definition wins
	packs    map[string]*pack
	hashPath string
	resolve  func(string) string

	state       State
	current     *pack // the image being updated
	prepared    bool
	activeImage bool
	activeHash  bool
	sessions    map[uint16]*fsession
	lastVerify  blob.ActionStatus
	lastUpdate  blob.ActionStatus
	transitions []State
}

// New returns a handler for entries.
func New(o Options) *Handler {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	runner := o.Runner
	if runner == nil {
		runner = &Runner{}
	}
	if runner.Log == nil {
		runner.Log = log
	}
	resolve := func(p string) string {
		if o.Root == "" {
			return p
		}
		return filepath.Join(o.Root, p)
	}
	h := &Handler{log: log, packs: map[string]*pack{}, resolve: resolve, sessions: map[uint16]*fsession{}}
	h.hashPath = resolve(o.HashPath)
	if o.HashPath == "" {
		h.hashPath = resolve(DefaultHashPath)
	}
	for _, e := range o.Entries {
		if _, dup := h.packs[e.Blob]; dup || e.Blob == blob.HashBlob {
			continue
		}
		h.order = append(h.order, e.Blob)
		h.packs[e.Blob] = &pack{
			entry:      e,
			prepare:    runner.newAction(e.Actions.Preparation, resolve, o.Reboot),
			verify:     runner.newAction(e.Actions.Verification, resolve, o.Reboot),
			updateStep: runner.newAction(e.Actions.Update, resolve, o.Reboot),
		}
	}
	return h
}

// State returns the current state.
func (h *Handler) State() State {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state
}

// Transitions returns every state entered since the handler was created.
func (h *Handler) Transitions() []State {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.transitions)
}

// StagedFiles lists the files uploads are written to.
func (h *Handler) StagedFiles() []string {
	out := []string{h.hashPath}
	for _, id := range h.order {
		out = append(out, h.resolve(h.packs[id].entry.Handler.Path))
	}
	return out
}

func (h *Handler) setState(s State) {
	if s == h.state {
		return
	}
	h.log.Info("flash state", "from", h.state.String(), "to", s.String())
	h.state = s
	h.transitions = append(h.transitions, s)
}

// CanHandle implements blobs.Handler.
func (h *Handler) CanHandle(id string) bool {
	if _, ok := h.packs[id]; ok {
		return true
	}
	switch id {
	case blob.HashBlob, blob.VerifyBlob, blob.UpdateBlob, ActiveImage, ActiveHash:
		return true
	}
	return false
}

// IDs implements blobs.Handler: which blobs exist depends on the state.
func (h *Handler) IDs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ids()
}

func (h *Handler) ids() []string {
	ids := append([]string{blob.HashBlob}, h.order...)
	if h.state >= VerificationPending {
		ids = append(ids, blob.VerifyBlob)
	}
	if h.state >= UpdatePending {
		ids = append(ids, blob.UpdateBlob)
	}
	if h.activeImage {
		ids = append(ids, ActiveImage)
	}
	if h.activeHash {
		ids = append(ids, ActiveHash)
	}
	return ids
}

func (h *Handler) env() []string {
	env := []string{"BMCSIM_HASH=" + h.hashPath}
	if h.current != nil {
		env = append(env, "BMCSIM_BLOB="+h.current.entry.Blob, "BMCSIM_IMAGE="+h.resolve(h.current.entry.Handler.Path))
	}
	return env
}

// Open implements blobs.Handler.
func (h *Handler) Open(sid, flags uint16, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if flags&blob.FlagWrite == 0 {
		return fmt.Errorf("open %s: firmware blobs are write-only: %w", id, blobs.ErrRejected)
	}
	if len(h.sessions) > 0 {
		return fmt.Errorf("open %s: another flash blob is open: %w", id, blobs.ErrRejected)
	}
	switch id {
	case ActiveImage, ActiveHash:
		return fmt.Errorf("open %s: markers cannot be opened: %w", id, blobs.ErrRejected)
	case blob.VerifyBlob:
		if h.state != VerificationPending {
			return fmt.Errorf("open %s in state %s: %w", id, h.state, blobs.ErrRejected)
		}
		if h.current == nil {
			return fmt.Errorf("open %s: no image uploaded: %w", id, blobs.ErrRejected)
		}
		h.sessions[sid] = &fsession{kind: kindVerify, id: id}
		return nil
	case blob.UpdateBlob:
		if h.state != UpdatePending {
			return fmt.Errorf("open %s in state %s: %w", id, h.state, blobs.ErrRejected)
		}
		h.sessions[sid] = &fsession{kind: kindUpdate, id: id}
		return nil
	}

	// An upload.
	if flags&blob.TransportMask != blob.TransportIPMI {
		return fmt.Errorf("open %s: transport %#04x not supported, only ipmi: %w", id, flags&blob.TransportMask, blobs.ErrRejected)
	}
	switch h.state {
	case NotYetStarted, UploadInProgress, VerificationPending:
	default:
		return fmt.Errorf("open %s in state %s: %w", id, h.state, blobs.ErrRejected)
	}
	path := h.hashPath
	p, isImage := h.packs[id]
	if isImage {
		if h.current != nil && h.current != p {
			return fmt.Errorf("open %s: %s already being updated: %w", id, h.current.entry.Blob, blobs.ErrRejected)
		}
		path = h.resolve(p.entry.Handler.Path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("open %s: %w", id, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", id, err)
	}
	if isImage {
		h.current = p
		if !h.prepared {
			// Preparation runs once per update, whatever is opened again.
			h.prepared = true
			if err := p.prepare.trigger(h.env()); err != nil {
				h.log.Warn("preparation failed to start", "blob", id, "err", err)
			}
		}
		h.activeImage = true
	} else {
		h.activeHash = true
	}
	h.sessions[sid] = &fsession{kind: kindUpload, id: id, file: f}
	h.setState(UploadInProgress)
	return nil
}

func (h *Handler) session(sid uint16) (*fsession, error) {
	s, ok := h.sessions[sid]
	if !ok {
		return nil, fmt.Errorf("session %d not open here: %w", sid, blobs.ErrRejected)
	}
	return s, nil
}

// Read implements blobs.Handler; firmware blobs cannot be read back.
func (h *Handler) Read(uint16, uint32, uint32) ([]byte, error) {
	return nil, fmt.Errorf("read: firmware blobs are write-only: %w", blobs.ErrRejected)
}

// Write implements blobs.Handler.
func (h *Handler) Write(sid uint16, off uint32, data []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, err := h.session(sid)
	if err != nil {
		return err
	}
	if s.kind != kindUpload {
		return fmt.Errorf("write %s: %w", s.id, blobs.ErrRejected)
	}
	if _, err := s.file.WriteAt(data, int64(off)); err != nil {
		return fmt.Errorf("write %s: %w", s.id, err)
	}
	s.size = max(s.size, off+uint32(len(data)))
	return nil
}

// WriteMeta implements blobs.Handler; the in-band ipmi transport has no
// metadata (that is for LPC/P2A windows).
func (h *Handler) WriteMeta(uint16, uint32, []byte) error {
	return fmt.Errorf("write meta: ipmi transport takes no metadata: %w", blobs.ErrRejected)
}

// Commit implements blobs.Handler: committing verify or update starts it.
func (h *Handler) Commit(sid uint16, _ []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, err := h.session(sid)
	if err != nil {
		return err
	}
	switch s.kind {
	case kindVerify:
		switch h.state {
		case VerificationStarted, VerificationCompleted:
			return nil
		case VerificationPending:
			if err := h.current.verify.trigger(h.env()); err != nil {
				return fmt.Errorf("commit %s: %w", s.id, err)
			}
			h.lastVerify = blob.StatusRunning
			h.setState(VerificationStarted)
			return nil
		}
	case kindUpdate:
		switch h.state {
		case UpdateStarted, UpdateCompleted:
			return nil
		case UpdatePending:
			h.setState(UpdateStarted)
			h.lastUpdate = blob.StatusRunning
			if err := h.current.updateStep.trigger(h.env()); err != nil {
				h.setState(UpdatePending)
				return fmt.Errorf("commit %s: %w", s.id, err)
			}
			return nil
		}
	}
	return fmt.Errorf("commit %s in state %s: %w", s.id, h.state, blobs.ErrRejected)
}

// refresh folds a finished action into the state.
func (h *Handler) refresh() {
	switch h.state {
	case VerificationStarted:
		h.lastVerify = h.current.verify.status()
		if h.lastVerify == blob.StatusSuccess || h.lastVerify == blob.StatusFailed {
			h.setState(VerificationCompleted)
		}
	case UpdateStarted:
		h.lastUpdate = h.current.updateStep.status()
		if h.lastUpdate == blob.StatusSuccess || h.lastUpdate == blob.StatusFailed {
			h.setState(UpdateCompleted)
		}
	}
}

func stateBits(st blob.ActionStatus) uint16 {
	switch st {
	case blob.StatusRunning:
		return blob.StateOpenWrite | blob.StateCommitting
	case blob.StatusSuccess:
		return blob.StateOpenWrite | blob.StateCommitted
	case blob.StatusFailed:
		return blob.StateOpenWrite | blob.StateCommitError
	}
	return blob.StateOpenWrite
}

// SessionStat implements blobs.Handler.
func (h *Handler) SessionStat(sid uint16) (blob.Meta, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, err := h.session(sid)
	if err != nil {
		return blob.Meta{}, err
	}
	h.refresh()
	switch s.kind {
	case kindVerify, kindUpdate:
		st := blob.StatusUnknown
		switch {
		case s.kind == kindVerify && h.state >= VerificationStarted:
			st = h.lastVerify
		case s.kind == kindUpdate && h.state >= UpdateStarted:
			st = h.lastUpdate
		}
		return blob.Meta{State: stateBits(st), Metadata: []byte{byte(st)}}, nil
	}
	return blob.Meta{State: blob.StateOpenWrite, Size: s.size}, nil
}

// Close implements blobs.Handler.
func (h *Handler) Close(sid uint16) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, err := h.session(sid)
	if err != nil {
		return err
	}
	delete(h.sessions, sid)
	h.refresh()
	switch s.kind {
	case kindUpload:
		if err := s.file.Close(); err != nil {
			h.log.Warn("closing staged file", "blob", s.id, "err", err)
		}
		h.setState(VerificationPending)
	case kindVerify:
		switch h.state {
		case VerificationStarted:
			h.log.Info("verify session closed while verification runs; aborting")
			h.abortProcess()
		case VerificationCompleted:
			if h.lastVerify == blob.StatusSuccess {
				h.setState(UpdatePending)
			} else {
				h.abortProcess()
			}
		}
	case kindUpdate:
		switch h.state {
		case UpdateStarted:
			h.log.Info("update session closed while update runs; aborting")
			h.abortProcess()
		case UpdateCompleted:
			// Either way the process is over.
			h.abortProcess()
		}
	}
	return nil
}

// Delete implements blobs.Handler: deleting an active marker abandons the
// update in flight, which is how a host clears a crashed earlier attempt.
func (h *Handler) Delete(id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if (id == ActiveImage && h.activeImage) || (id == ActiveHash && h.activeHash) {
		if len(h.sessions) > 0 {
			return fmt.Errorf("delete %s: a flash blob is open: %w", id, blobs.ErrRejected)
		}
		h.abortProcess()
		return nil
	}
	return fmt.Errorf("delete %s: %w", id, blobs.ErrRejected)
}

// Stat implements blobs.Handler. Upload blobs report the transports they
// accept in the state field, which is what hosts check before uploading.
func (h *Handler) Stat(id string) (blob.Meta, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.packs[id]; ok || id == blob.HashBlob {
		return blob.Meta{State: blob.TransportIPMI}, nil
	}
	for _, known := range h.ids() {
		if known == id {
			return blob.Meta{}, nil
		}
	}
	return blob.Meta{}, fmt.Errorf("stat %s: not present: %w", id, blobs.ErrRejected)
}

// Expire implements blobs.Handler.
func (h *Handler) Expire(sid uint16) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.sessions[sid]; ok {
		h.log.Info("flash session expired; abandoning update", "blob", s.id)
		h.abortProcess()
	}
}

// Reset abandons everything, as a BMC reboot does.
func (h *Handler) Reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.abortProcess()
}

// abortProcess returns to notYetStarted, stopping whatever runs. Staged
// files stay until /flash/cleanup is committed, as on the BMC.
func (h *Handler) abortProcess() {
	for sid, s := range h.sessions {
		if s.file != nil {
			_ = s.file.Close()
		}
		delete(h.sessions, sid)
	}
	if h.current != nil {
		h.current.verify.abort()
		h.current.updateStep.abort()
		h.current.prepare.abort()
	}
	h.current = nil
	h.prepared = false
	h.activeImage, h.activeHash = false, false
	h.lastVerify, h.lastUpdate = blob.StatusUnknown, blob.StatusUnknown
	h.setState(NotYetStarted)
}

// Cleanup is the /flash/cleanup blob: committing it deletes staged files.
type Cleanup struct {
	Files func() []string
	Log   *slog.Logger

	mu       sync.Mutex
	sessions map[uint16]bool
}

// CanHandle implements blobs.Handler.
func (c *Cleanup) CanHandle(id string) bool { return id == blob.CleanupBlob }

// IDs implements blobs.Handler.
func (c *Cleanup) IDs() []string { return []string{blob.CleanupBlob} }

// Open implements blobs.Handler.
func (c *Cleanup) Open(sid, flags uint16, _ string) error {
	if flags&blob.FlagWrite == 0 {
		return fmt.Errorf("open %s: write flag required: %w", blob.CleanupBlob, blobs.ErrRejected)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sessions == nil {
		c.sessions = map[uint16]bool{}
	}
	c.sessions[sid] = false
	return nil
}

// Read implements blobs.Handler.
func (c *Cleanup) Read(uint16, uint32, uint32) ([]byte, error) { return nil, blobs.ErrRejected }

// Write implements blobs.Handler.
func (c *Cleanup) Write(uint16, uint32, []byte) error { return blobs.ErrRejected }

// WriteMeta implements blobs.Handler.
func (c *Cleanup) WriteMeta(uint16, uint32, []byte) error { return blobs.ErrRejected }

// Commit implements blobs.Handler.
func (c *Cleanup) Commit(sid uint16, _ []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.Files() {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			c.Log.Warn("cleanup", "file", f, "err", err)
			continue
		}
	}
	c.Log.Info("cleanup committed: staged files removed")
	c.sessions[sid] = true
	return nil
}

// Close implements blobs.Handler.
func (c *Cleanup) Close(sid uint16) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.sessions, sid)
	return nil
}

// Delete implements blobs.Handler.
func (c *Cleanup) Delete(string) error { return blobs.ErrRejected }

// Stat implements blobs.Handler.
func (c *Cleanup) Stat(string) (blob.Meta, error) { return blob.Meta{}, nil }

// SessionStat implements blobs.Handler.
func (c *Cleanup) SessionStat(sid uint16) (blob.Meta, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := blob.StateOpenWrite
	if c.sessions[sid] {
		st |= blob.StateCommitted
	}
	return blob.Meta{State: st}, nil
}

// Expire implements blobs.Handler.
func (c *Cleanup) Expire(sid uint16) { _ = c.Close(sid) }
