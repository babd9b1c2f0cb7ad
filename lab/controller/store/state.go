package store

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
)

// State is where a lease stands. It is stored as its name, so records
// written before it was typed read the same.
type State string

// The lease states. A lease is requested Pending (or Unsatisfiable, when
// no exporter could ever serve it), becomes Ready when granted, and ends
// Ended or Invalid; the last three never change again.
const (
	Pending       State = "pending"
	Ready         State = "ready"
	Ended         State = "ended"
	Unsatisfiable State = "unsatisfiable"
	Invalid       State = "invalid"
)

// transitions lists, for each state, the states a lease in it may move to
// (staying put is always allowed to a live lease: an extension).
var transitions = map[State][]State{
	Pending: {Pending, Ready, Ended, Unsatisfiable, Invalid},
	Ready:   {Ready, Ended},
}

// Valid reports whether s is one of the lease states.
func (s State) Valid() bool {
	switch s {
	case Pending, Ready, Ended, Unsatisfiable, Invalid:
		return true
	}
	return false
}

// Final reports whether a lease in s can no longer change.
func (s State) Final() bool { return s == Ended || s == Unsatisfiable || s == Invalid }

// Initial reports whether a lease may be created in s.
func (s State) Initial() bool { return s == Pending || s == Unsatisfiable }

// CanBecome reports whether a lease in s may move to t.
func (s State) CanBecome(t State) bool {
	for _, u := range transitions[s] {
		if u == t {
			return true
		}
	}
	return false
}

// ErrTransition is the error for a lease change the state machine does
// not allow; it wraps errdefs.ErrPrecondition.
var ErrTransition = fmt.Errorf("lease state transition not allowed: %w", errdefs.ErrPrecondition)

// Transition checks that a lease may move from s to t.
func (s State) Transition(t State) error {
	if !t.Valid() {
		return fmt.Errorf("%q is no lease state: %w", t, ErrTransition)
	}
	if !s.CanBecome(t) {
		return fmt.Errorf("lease %s cannot become %s: %w", s, t, ErrTransition)
	}
	return nil
}

// UnmarshalJSON refuses a state pogo does not know, so that a corrupt
// record shows up as unreadable rather than as a lease in no state.
func (s *State) UnmarshalJSON(data []byte) error {
	var str string
	if err := json.Unmarshal(data, &str); err != nil {
		return err
	}
	if !State(str).Valid() {
		return fmt.Errorf("unknown lease state %q", str)
	}
	*s = State(str)
	return nil
}

// Finish returns a copy of l moved into the final state to at now (its
// end is now unless that already passed), or an error if l may not move
// there (a final lease does not).
func (l *Lease) Finish(to State, reason string, now time.Time) (*Lease, error) {
	if !to.Final() {
		return nil, fmt.Errorf("finish lease %s as %s: %w", l.ID, to, ErrTransition)
	}
	if err := l.State.Transition(to); err != nil {
		return nil, fmt.Errorf("lease %s: %w", l.ID, err)
	}
	n := l.Clone()
	n.State, n.Reason = to, reason
	if n.End.IsZero() || n.End.After(now) {
		n.End = now
	}
	return n, nil
}

// Grant returns a copy of the pending l granted exporter at now.
func (l *Lease) Grant(exporter string, now time.Time) (*Lease, error) {
	if err := l.State.Transition(Ready); err != nil || l.State != Pending {
		return nil, fmt.Errorf("grant lease %s (%s): %w", l.ID, l.State, ErrTransition)
	}
	n := l.Clone()
	n.State, n.Exporter, n.Granted, n.End, n.Reason = Ready, exporter, now, now.Add(l.Duration), ""
	return n, nil
}
