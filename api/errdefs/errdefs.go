// Package errdefs is pogo's small error vocabulary. Drivers and services
// wrap these sentinels; the gRPC boundary maps them to status codes and
// back, so errors.Is works on both sides of the wire.
package errdefs

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	ErrNotFound     = errors.New("not found")
	ErrInvalid      = errors.New("invalid argument")
	ErrInUse        = errors.New("in use")
	ErrNotHeld      = errors.New("not held by this client")
	ErrUnsupported  = errors.New("unsupported")
	ErrUnavailable  = errors.New("unavailable")
	ErrPrecondition = errors.New("failed precondition")
	ErrUnauthorized = errors.New("unauthorized")
	ErrExists       = errors.New("already exists")
	ErrExpired      = errors.New("expired")
)

var table = []struct {
	err  error
	code codes.Code
}{
	{ErrNotFound, codes.NotFound},
	{ErrInvalid, codes.InvalidArgument},
	{ErrInUse, codes.ResourceExhausted},
	{ErrNotHeld, codes.PermissionDenied},
	{ErrUnsupported, codes.Unimplemented},
	{ErrUnavailable, codes.Unavailable},
	{ErrPrecondition, codes.FailedPrecondition},
	{ErrUnauthorized, codes.Unauthenticated},
	{ErrExists, codes.AlreadyExists},
	{ErrExpired, codes.OutOfRange},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
}

// ToGRPC turns err into a gRPC status error whose code follows the
// sentinel it wraps. Errors that already are statuses pass through.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, e := range table {
		if errors.Is(err, e.err) {
			return status.Error(e.code, err.Error())
		}
	}
	return status.Error(codes.Unknown, err.Error())
}

// FromGRPC turns a gRPC status error back into an error that wraps the
// matching sentinel and reads as the server's message.
func FromGRPC(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	for _, e := range table {
		if e.code == st.Code() {
			return &wireError{msg: msg, err: e.err}
		}
	}
	return errors.New(msg)
}

type wireError struct {
	msg string
	err error
}

func (e *wireError) Error() string { return e.msg }
func (e *wireError) Unwrap() error { return e.err }

// Invalidf returns an ErrInvalid error with a formatted message.
func Invalidf(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalid)
}

// FileError is a problem at a place in an input file (exporter.yaml, a
// bundle manifest, a .bmap): it reads "file:line: field: message". It
// wraps ErrInvalid, so it maps to InvalidArgument on the wire.
type FileError struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *FileError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Field != "" {
		b.WriteString(": " + e.Field)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

func (e *FileError) Unwrap() error { return ErrInvalid }
