// Package drivers is the registry of driver kinds and the contract between
// the exporter and a driver: a kind is a typed factory that turns a node of
// exporter.yaml into a live Driver. Capability packages (power, console, …)
// register the gRPC services that expose drivers implementing them.
//
// The exporter never imports a driver package by name; cmd/jmp blank-imports
// them all (see drivers/all).
package drivers

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
)

// Driver is a live instance of a kind in an exporter's tree.
type Driver interface {
	// Close releases everything the driver holds; nothing it started may
	// outlive it.
	Close() error
}

// Resetter is a driver with a safe state (for power: off). The exporter
// resets every driver at session end and at shutdown.
type Resetter interface {
	Reset(ctx context.Context) error
}

// Describer is a driver with a one-line description for reports.
type Describer interface {
	Description() string
}

// Factory builds a driver from its node.
type Factory func(ctx context.Context, b *Build) (Driver, error)

// Kind is a registered driver type.
type Kind struct {
	// Name is pogo's type name, e.g. "serial".
	Name string
	// Aliases are other accepted type names, e.g. Jumpstarter's Python
	// class paths.
	Aliases []string
	New     Factory
}

// Build is what a factory gets: its place in the tree, its config and its
// already-built children.
type Build struct {
	// Path is the node's dotted path in the export tree.
	Path string
	// Type is the node's type as written (a kind or one of its aliases).
	Type   string
	Config Config
	// Children are the node's children (refs resolved), by name.
	Children map[string]Driver
	// ChildPaths are the tree paths of the children, by name: for a ref,
	// the path of the node it points to.
	ChildPaths map[string]string
	Log        *slog.Logger
	// Host holds resources shared by every driver of this exporter.
	Host *Host
}

// Child returns the named child or a FieldError naming it as missing.
func (b *Build) Child(name string) (Driver, error) {
	d, ok := b.Children[name]
	if !ok {
		return nil, &ChildError{Name: name, Msg: "required child is missing"}
	}
	return d, nil
}

// ChildAs returns the named child as T, or an error naming what it lacks.
func ChildAs[T any](b *Build, name, capability string) (T, error) {
	var zero T
	d, err := b.Child(name)
	if err != nil {
		return zero, err
	}
	t, ok := d.(T)
	if !ok {
		return zero, &ChildError{Name: name, Msg: fmt.Sprintf("is %s, which does not serve %s", b.Host.Kind(d), capability)}
	}
	return t, nil
}

// ChildError reports a problem with a node's children.
type ChildError struct {
	Name string
	Msg  string
}

func (e *ChildError) Error() string { return fmt.Sprintf("children.%s: %s", e.Name, e.Msg) }

var (
	mu    sync.RWMutex
	kinds = map[string]*Kind{}
	alias = map[string]*Kind{}
)

// Register adds a kind. It panics on a duplicate name, which is a
// programming error caught at start-up.
func Register(k Kind) {
	mu.Lock()
	defer mu.Unlock()
	if k.Name == "" || k.New == nil {
		panic("drivers: Register needs a name and a factory")
	}
	for _, n := range append([]string{k.Name}, k.Aliases...) {
		if _, dup := alias[n]; dup {
			panic("drivers: duplicate kind " + n)
		}
	}
	kk := k
	kinds[k.Name] = &kk
	for _, n := range append([]string{k.Name}, k.Aliases...) {
		alias[n] = &kk
	}
}

// Lookup finds a kind by its name or an alias.
func Lookup(name string) (*Kind, bool) {
	mu.RLock()
	defer mu.RUnlock()
	k, ok := alias[name]
	return k, ok
}

// Names lists the registered kind names, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	var out []string
	for n := range kinds {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// New builds a driver of kind k; b.Host remembers its kind.
func New(ctx context.Context, k *Kind, b *Build) (Driver, error) {
	d, err := k.New(ctx, b)
	if err != nil {
		return nil, err
	}
	b.Host.remember(d, k.Name)
	return d, nil
}

// SessionObserver is a driver that wants to know when a client starts and
// ends a session (to open a per-session console log, say).
type SessionObserver interface {
	SessionStart(holder string)
	SessionEnd()
}

// Parent is a driver made of parts that are drivers in their own right
// (a virtual board's power, console and storage). The exporter serves each
// part at <path>.<name>; the parent owns, resets and closes its parts.
type Parent interface {
	Parts() []Part
}

// Part is one part of a Parent.
type Part struct {
	Name   string
	Kind   string
	Driver Driver
}
