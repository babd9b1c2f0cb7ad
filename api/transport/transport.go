// Package transport is how pogo's parts reach each other: one set of gRPC
// transport options for every server and dialer (exporter, client, lease
// proxy, controller), unix sockets sized for bulk streams, and the dial
// to a lab controller with a bearer token.
package transport

import (
	"google.golang.org/grpc"
)

// MaxMsgSize bounds one gRPC message. Bulk streams move 256 KiB messages;
// a driver tree's report or a long listing may be larger.
const MaxMsgSize = 16 << 20

const (
	// Large flow-control windows keep bulk streams (images, consoles) at
	// wire speed.
	streamWindow = 4 << 20
	connWindow   = 16 << 20
	// ioBuffer is how much gRPC reads and writes per system call.
	ioBuffer = 1 << 20
)

// ServerOptions are the transport options of every pogo gRPC server,
// followed by extra.
func ServerOptions(extra ...grpc.ServerOption) []grpc.ServerOption {
	return append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMsgSize),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.WriteBufferSize(ioBuffer),
		grpc.ReadBufferSize(ioBuffer),
	}, extra...)
}

// DialOptions are the transport options of every pogo gRPC dialer,
// followed by extra.
func DialOptions(extra ...grpc.DialOption) []grpc.DialOption {
	return append([]grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize)),
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithWriteBufferSize(ioBuffer),
		grpc.WithReadBufferSize(ioBuffer),
	}, extra...)
}
