package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/exporter/config"
)

// Tree is the live driver tree built from a config.
type Tree struct {
	file    *config.File
	entries map[string]*entry
	order   []*entry // every node in file order
	host    *drivers.Host

	// mu keeps Close from closing drivers under a Reset in progress (a
	// lease ending as the exporter stops).
	mu    sync.RWMutex
	built []drivers.Driver
}

type entry struct {
	node   *config.Node
	kind   string
	driver drivers.Driver // nil for a group
}

// Build instantiates every driver in f, children before parents, each
// exactly once (refs share the target's instance). On error, whatever was
// built is closed again.
func Build(ctx context.Context, f *config.File, host *drivers.Host, log *slog.Logger) (*Tree, error) {
	t := &Tree{file: f, entries: map[string]*entry{}, host: host}
	byPath := map[string]*config.Node{}
	var walk func([]*config.Node)
	walk = func(ns []*config.Node) {
		for _, n := range ns {
			byPath[n.Path] = n
			t.order = append(t.order, &entry{node: n})
			walk(n.Children)
		}
	}
	walk(f.Export)
	for _, e := range t.order {
		t.entries[e.node.Path] = e
	}
	var build func(n *config.Node) (drivers.Driver, error)
	done := map[string]bool{}
	build = func(n *config.Node) (drivers.Driver, error) {
		e := t.entries[n.Path]
		if done[n.Path] {
			return e.driver, nil
		}
		if n.Ref != "" {
			d, err := build(byPath[n.Ref])
			if err != nil {
				return nil, err
			}
			e.driver, e.kind = d, t.entries[n.Ref].kind
			done[n.Path] = true
			return d, nil
		}
		children := map[string]drivers.Driver{}
		childPaths := map[string]string{}
		for _, c := range n.Children {
			childPaths[c.Name] = c.Path
			if c.Ref != "" {
				childPaths[c.Name] = c.Ref
			}
			d, err := build(c)
			if err != nil {
				return nil, err
			}
			if d != nil {
				children[c.Name] = d
			}
		}
		done[n.Path] = true
		if n.Type == "" {
			return nil, nil // a group
		}
		k, _ := drivers.Lookup(n.Type)
		d, err := drivers.New(ctx, k, &drivers.Build{
			Path:       n.Path,
			Type:       n.Type,
			Config:     n.Config,
			Children:   children,
			ChildPaths: childPaths,
			Log:        log.With("driver", n.Path),
			Host:       host,
		})
		if err != nil {
			return nil, buildError(f.Path, n, err)
		}
		e.driver, e.kind = d, k.Name
		t.built = append(t.built, d)
		if p, ok := d.(drivers.Parent); ok {
			if err := t.addParts(f.Path, n, p); err != nil {
				return nil, err
			}
		}
		return d, nil
	}
	for _, n := range f.Export {
		if _, err := build(n); err != nil {
			t.Close()
			return nil, err
		}
	}
	return t, nil
}

func buildError(file string, n *config.Node, err error) error {
	var fe *drivers.FieldError
	if errors.As(err, &fe) {
		line := fe.Line
		if line == 0 {
			line = n.Config.Line(fe.Field)
		}
		if line == 0 {
			line = n.TypeLine
		}
		field := "export." + n.Path + ".config"
		if fe.Field != "" {
			field += "." + fe.Field
		}
		return &config.Error{File: file, Line: line, Field: field, Msg: fe.Msg}
	}
	var ce *drivers.ChildError
	if errors.As(err, &ce) {
		return &config.Error{File: file, Line: n.Line, Field: "export." + n.Path + ".children." + ce.Name, Msg: ce.Msg}
	}
	return &config.Error{File: file, Line: n.TypeLine, Field: "export." + n.Path, Msg: err.Error()}
}

// Lookup returns the driver at path.
func (t *Tree) Lookup(path string) (drivers.Driver, bool) {
	e, ok := t.entries[path]
	if !ok || e.driver == nil {
		return nil, false
	}
	return e.driver, true
}

// Paths lists the paths that hold a driver.
func (t *Tree) Paths() []string {
	var out []string
	for _, e := range t.order {
		if e.driver != nil {
			out = append(out, e.node.Path)
		}
	}
	sort.Strings(out)
	return out
}

// Reset puts every driver into its safe state, parents first (a flasher
// before the power it uses), and returns every failure.
func (t *Tree) Reset(ctx context.Context) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var errs []error
	for i := len(t.built) - 1; i >= 0; i-- {
		if r, ok := t.built[i].(drivers.Resetter); ok {
			if err := r.Reset(ctx); err != nil {
				errs = append(errs, fmt.Errorf("reset %s: %w", t.host.Kind(t.built[i]), err))
			}
		}
	}
	return errors.Join(errs...)
}

// each calls f for every distinct driver.
func (t *Tree) each(f func(drivers.Driver)) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, d := range t.built {
		f(d)
	}
}

// Close closes every driver, parents first, then the host's shared
// servers.
func (t *Tree) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for i := len(t.built) - 1; i >= 0; i-- {
		errs = append(errs, t.built[i].Close())
	}
	t.built = nil
	if t.host != nil {
		errs = append(errs, t.host.Close())
	}
	return errors.Join(errs...)
}

// addParts serves a parent driver's parts under its path.
func (t *Tree) addParts(file string, n *config.Node, p drivers.Parent) error {
	for _, part := range p.Parts() {
		path := n.Path + "." + part.Name
		if _, dup := t.entries[path]; dup {
			return &config.Error{File: file, Line: n.Line, Field: "export." + path, Msg: fmt.Sprintf("%s already has a part named %q", n.Type, part.Name)}
		}
		e := &entry{node: &config.Node{Name: part.Name, Path: path, Line: n.Line, TypeLine: n.TypeLine}, kind: part.Kind, driver: part.Driver}
		t.entries[path] = e
		// Keep parts right after their parent in reports.
		for i, o := range t.order {
			if o.node == n {
				j := i + 1
				for j < len(t.order) && len(t.order[j].node.Path) > len(n.Path) && t.order[j].node.Path[:len(n.Path)+1] == n.Path+"." {
					j++
				}
				t.order = append(t.order[:j], append([]*entry{e}, t.order[j:]...)...)
				break
			}
		}
	}
	return nil
}

// Drivers lists every distinct driver of the tree, children first.
func (t *Tree) Drivers() []drivers.Driver {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return append([]drivers.Driver(nil), t.built...)
}
