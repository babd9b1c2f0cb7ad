// Package blob speaks the OpenBMC IPMI blob protocol (phosphor-ipmi-blobs)
// from the host side and runs the phosphor-ipmi-flash update sequence that
// burn_my_bmc performs. The wire helpers are exported because the BMC
// simulator decodes the very same frames.
package blob

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// IPMI addressing of the blob protocol: an OEM/group command under the
// OpenBMC IANA enterprise number.
const (
	NetFn   byte   = 0x2E
	Command byte   = 0x80
	OEN     uint32 = 49871
)

// oenBytes is OEN in the little-endian 3-byte form every request and
// response starts with.
var oenBytes = [3]byte{0xcf, 0xc2, 0x00}

// Subcommand selects the blob operation.
type Subcommand byte

// Subcommands in wire order.
const (
	GetCount Subcommand = iota
	Enumerate
	Open
	Read
	Write
	Commit
	Close
	Delete
	Stat
	SessionStat
	WriteMeta
)

var subcommandNames = [...]string{"get-count", "enumerate", "open", "read", "write", "commit", "close", "delete", "stat", "session-stat", "write-meta"}

func (s Subcommand) String() string {
	if int(s) < len(subcommandNames) {
		return subcommandNames[s]
	}
	return fmt.Sprintf("subcommand(%#02x)", byte(s))
}

// Open flags; the transport sits in the upper byte.
const (
	FlagRead  uint16 = 1 << 0
	FlagWrite uint16 = 1 << 1

	TransportIPMI uint16 = 1 << 8
	TransportP2A  uint16 = 1 << 9
	TransportLPC  uint16 = 1 << 10
	TransportNet  uint16 = 1 << 11
	TransportMask uint16 = 0xff00
)

// Blob state flags reported by Stat and SessionStat.
const (
	StateOpenRead    uint16 = 1 << 0
	StateOpenWrite   uint16 = 1 << 1
	StateCommitting  uint16 = 1 << 2
	StateCommitted   uint16 = 1 << 3
	StateCommitError uint16 = 1 << 4
)

// ActionStatus is the single metadata byte a verify or update session
// reports through SessionStat.
type ActionStatus byte

// Action statuses.
const (
	StatusRunning ActionStatus = 0
	StatusSuccess ActionStatus = 1
	StatusFailed  ActionStatus = 2
	StatusUnknown ActionStatus = 3
)

func (a ActionStatus) String() string {
	switch a {
	case StatusRunning:
		return "running"
	case StatusSuccess:
		return "success"
	case StatusFailed:
		return "failed"
	default:
		return "unknown"
	}
}

// IPMI completion codes the blob handler answers with.
const (
	CCInvalidCommand   byte = 0xC1
	CCReqDataLen       byte = 0xC7
	CCReqDataTooLong   byte = 0xC8
	CCInvalidField     byte = 0xCC
	CCResponseError    byte = 0xCE
	CCUnspecifiedError byte = 0xFF
)

// CRC16 is CRC-16-CCITT (poly 0x1021, init 0xFFFF) with two zero bytes of
// augmentation, which is the variant ipmiblob uses; it is not CRC-16/XMODEM
// nor CRC-16/CCITT-FALSE.
func CRC16(data []byte) uint16 {
	crc := uint16(0xFFFF)
	step := func(b byte) {
		for i := 7; i >= 0; i-- {
			top := crc&0x8000 != 0
			crc = crc<<1 | uint16(b>>uint(i)&1)
			if top {
				crc ^= 0x1021
			}
		}
	}
	for _, b := range data {
		step(b)
	}
	step(0)
	step(0)
	return crc
}

// EncodeRequest builds the IPMI data of a blob command: OEN, subcommand and,
// when body is non-empty, the CRC of body followed by body.
func EncodeRequest(sub Subcommand, body []byte) []byte {
	out := make([]byte, 0, 6+len(body))
	out = append(out, oenBytes[:]...)
	out = append(out, byte(sub))
	if len(body) > 0 {
		out = binary.LittleEndian.AppendUint16(out, CRC16(body))
		out = append(out, body...)
	}
	return out
}

// EncodeResponse builds the IPMI data of a successful blob reply: OEN and,
// when body is non-empty, CRC + body.
func EncodeResponse(body []byte) []byte {
	out := make([]byte, 0, 5+len(body))
	out = append(out, oenBytes[:]...)
	if len(body) > 0 {
		out = binary.LittleEndian.AppendUint16(out, CRC16(body))
		out = append(out, body...)
	}
	return out
}

// Frame is a decoded blob request.
type Frame struct {
	Sub  Subcommand
	Body []byte
}

// DecodeError is a malformed request together with the completion code a
// BMC answers it with.
type DecodeError struct {
	CC     byte
	Reason string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("blob request: %s (cc %#02x)", e.Reason, e.CC)
}

// minBody is the smallest body each subcommand accepts; shorter requests are
// rejected with CCReqDataLen before any handler sees them.
var minBody = map[Subcommand]int{
	Enumerate:   4,
	Open:        2 + 2,
	Read:        2 + 4 + 4,
	Write:       2 + 4 + 1,
	Commit:      2 + 1,
	Close:       2,
	Delete:      2,
	Stat:        2,
	SessionStat: 2,
	WriteMeta:   2 + 4,
}

// DecodeRequest validates the IPMI data of a blob command: OEN, length, CRC
// and subcommand, in the order a phosphor BMC checks them.
func DecodeRequest(data []byte) (Frame, error) {
	if len(data) < 3 {
		return Frame{}, &DecodeError{CCReqDataLen, "shorter than the OEN"}
	}
	if [3]byte(data[:3]) != oenBytes {
		return Frame{}, &DecodeError{CCInvalidCommand, fmt.Sprintf("unknown OEN %#06x", uint32(data[0])|uint32(data[1])<<8|uint32(data[2])<<16)}
	}
	if len(data) < 4 {
		return Frame{}, &DecodeError{CCReqDataLen, "missing subcommand"}
	}
	sub := Subcommand(data[3])
	rest := data[4:]
	var body []byte
	if len(rest) > 0 {
		if len(rest) < 3 {
			return Frame{}, &DecodeError{CCReqDataLen, "body shorter than CRC plus one byte"}
		}
		body = rest[2:]
	}
	if min, ok := minBody[sub]; ok && len(body) < min {
		return Frame{}, &DecodeError{CCReqDataLen, fmt.Sprintf("%s body is %d bytes, need %d", sub, len(body), min)}
	}
	if len(body) > 0 {
		if got, want := binary.LittleEndian.Uint16(rest), CRC16(body); got != want {
			return Frame{}, &DecodeError{CCUnspecifiedError, fmt.Sprintf("crc mismatch: got %#04x, want %#04x", got, want)}
		}
	}
	if sub > WriteMeta {
		return Frame{}, &DecodeError{CCInvalidField, fmt.Sprintf("unknown subcommand %#02x", byte(sub))}
	}
	return Frame{Sub: sub, Body: body}, nil
}

// ErrShortResponse is returned for a reply too short to carry what the
// subcommand promises.
var ErrShortResponse = errors.New("blob response too short")

// DecodeResponse checks the OEN and CRC of a blob reply and returns its body.
func DecodeResponse(data []byte) ([]byte, error) {
	if len(data) < 3 {
		return nil, fmt.Errorf("%w: %d bytes", ErrShortResponse, len(data))
	}
	if [3]byte(data[:3]) != oenBytes {
		return nil, fmt.Errorf("blob response: unexpected OEN % x", data[:3])
	}
	rest := data[3:]
	if len(rest) == 0 {
		return nil, nil
	}
	if len(rest) < 2 {
		return nil, fmt.Errorf("%w: CRC truncated", ErrShortResponse)
	}
	body := rest[2:]
	if got, want := binary.LittleEndian.Uint16(rest), CRC16(body); got != want {
		return nil, fmt.Errorf("blob response: crc mismatch: got %#04x, want %#04x", got, want)
	}
	return body, nil
}

// Meta is what Stat and SessionStat report.
type Meta struct {
	State    uint16
	Size     uint32
	Metadata []byte
}

// Encode renders m as a Stat reply body.
func (m Meta) Encode() []byte {
	out := binary.LittleEndian.AppendUint16(nil, m.State)
	out = binary.LittleEndian.AppendUint32(out, m.Size)
	out = append(out, byte(len(m.Metadata)))
	return append(out, m.Metadata...)
}

// DecodeMeta parses a Stat reply body.
func DecodeMeta(body []byte) (Meta, error) {
	if len(body) < 7 {
		return Meta{}, fmt.Errorf("%w: stat body is %d bytes", ErrShortResponse, len(body))
	}
	n := int(body[6])
	if len(body) < 7+n {
		return Meta{}, fmt.Errorf("%w: stat metadata truncated", ErrShortResponse)
	}
	return Meta{
		State:    binary.LittleEndian.Uint16(body),
		Size:     binary.LittleEndian.Uint32(body[2:]),
		Metadata: append([]byte(nil), body[7:7+n]...),
	}, nil
}

// CString splits a NUL-terminated blob id that must fill the rest of b, as
// the BMC insists; ok is false otherwise.
func CString(b []byte) (string, bool) {
	if len(b) < 2 || b[len(b)-1] != 0 {
		return "", false
	}
	s := b[:len(b)-1]
	for _, c := range s {
		if c == 0 {
			return "", false
		}
	}
	return string(s), true
}
