package cli

import (
	"bytes"
	"io"
)

// queryFilter passes a board's console output to a terminal with the
// control sequences that make a terminal answer neutralised: replayed, a
// busybox cursor-position request (ESC [ 6 n) would have the user's
// terminal type ^[[42;3R into their own shell. Those are shown in caret
// notation (^[[6n) instead: device status and attribute requests (CSI n,
// c, x, t, $p, $w, $u, *y, and ? or > q, u, m, S), DECID (ESC Z), ENQ, and
// every string sequence (OSC, DCS — DECRQSS among them —, APC, PM, SOS),
// which query or reprogram the terminal. Everything else passes unchanged.
// State carries across writes, so a sequence split between two reads is
// still caught.
type queryFilter struct {
	w     io.Writer
	state filterState
	// seq holds an ESC, or a CSI, not yet complete.
	seq []byte
}

type filterState int

const (
	fGround filterState = iota
	fEsc
	fCSI
	fString
	fStringEsc
)

const (
	ctlESC = 0x1b
	ctlENQ = 0x05
	ctlBEL = 0x07
	// maxCSI bounds a held CSI; a longer one is malformed and shown.
	maxCSI = 64
)

func (f *queryFilter) Write(p []byte) (int, error) {
	if _, err := f.w.Write(f.filter(make([]byte, 0, len(p)+8), p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush shows what is held of an unfinished sequence.
func (f *queryFilter) Flush() error {
	if len(f.seq) == 0 {
		return nil
	}
	out := caret(nil, f.seq...)
	f.seq, f.state = f.seq[:0], fGround
	_, err := f.w.Write(out)
	return err
}

// filter appends src to dst with the answering sequences neutralised.
func (f *queryFilter) filter(dst, src []byte) []byte {
	for i := 0; i < len(src); {
		b := src[i]
		switch f.state {
		case fGround:
			switch b {
			case ctlESC:
				f.state, f.seq = fEsc, append(f.seq[:0], b)
			case ctlENQ:
				dst = caret(dst, b)
			default:
				dst = append(dst, b)
			}
		case fEsc:
			switch b {
			case '[':
				f.state, f.seq = fCSI, append(f.seq, b)
			case ']', 'P', '_', '^', 'X':
				dst = caret(dst, ctlESC, b)
				f.state, f.seq = fString, f.seq[:0]
			case 'Z':
				dst = caret(dst, ctlESC, b)
				f.state, f.seq = fGround, f.seq[:0]
			case ctlESC:
				// The first ESC is abandoned; shown, since raw it could
				// pair with a ^ that follows.
				dst = caret(dst, ctlESC)
			default:
				f.state, f.seq = fGround, f.seq[:0]
				if b < 0x20 || b == 0x7f {
					// A terminal runs a control byte even here (ENQ
					// too): show the ESC, read b afresh.
					dst = caret(dst, ctlESC)
					continue
				}
				dst = append(dst, ctlESC, b)
			}
		case fCSI:
			switch {
			case b >= 0x40 && b <= 0x7e:
				f.seq = append(f.seq, b)
				if csiQuery(f.seq) {
					dst = caret(dst, f.seq...)
				} else {
					dst = append(dst, f.seq...)
				}
				f.state, f.seq = fGround, f.seq[:0]
			case b >= 0x20 && b <= 0x3f && len(f.seq) < maxCSI:
				f.seq = append(f.seq, b)
			default:
				// Malformed or overlong: show it, and read b afresh.
				dst = caret(dst, f.seq...)
				f.state, f.seq = fGround, f.seq[:0]
				continue
			}
		case fString:
			switch b {
			case ctlBEL:
				dst = caret(dst, b)
				f.state = fGround
			case ctlESC:
				f.state = fStringEsc
			default:
				dst = caret(dst, b)
			}
		case fStringEsc:
			if b == '\\' {
				dst = caret(dst, ctlESC, b)
				f.state = fGround
			} else {
				// ESC not followed by \ ends the string and starts anew.
				f.state, f.seq = fEsc, append(f.seq[:0], ctlESC)
				continue
			}
		}
		i++
	}
	return dst
}

// csiQuery tells whether the complete CSI seq (ESC [ … final) asks the
// terminal for an answer (or, for CSI t, moves or resizes its window).
func csiQuery(seq []byte) bool {
	body, final := seq[2:len(seq)-1], seq[len(seq)-1]
	switch final {
	case 'n', 'c', 'x', 't':
		return true
	case 'p', 'w', 'u', 'y':
		if bytes.ContainsAny(body, "$*") {
			return true
		}
	}
	switch final {
	case 'q', 'u', 'm', 'S':
		return len(body) > 0 && (body[0] == '?' || body[0] == '>')
	}
	return false
}

// caret appends bs in caret notation: control bytes as ^X, DEL as ^?,
// everything else as it is.
func caret(dst []byte, bs ...byte) []byte {
	for _, b := range bs {
		switch {
		case b < 0x20:
			dst = append(dst, '^', b+0x40)
		case b == 0x7f:
			dst = append(dst, '^', '?')
		default:
			dst = append(dst, b)
		}
	}
	return dst
}
