// Package config loads exporter.yaml: Jumpstarter's ExporterConfig shape
// (apiVersion, kind, metadata, endpoint, token, tls, hooks, export). Every
// problem comes back as one *Error naming the file, line and field.
package config

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers"
)

// File is a loaded exporter config.
type File struct {
	// Path is where the config was read from (for messages).
	Path       string
	APIVersion string
	Kind       string
	Metadata   Metadata
	Endpoint   string
	Token      string
	TLS        TLS
	Hooks      Hooks
	// ExitOnLeaseEnd makes the exporter exit once it has served one lease
	// (its afterLease hook included), for a supervisor to restart it clean.
	ExitOnLeaseEnd bool
	// Export is the driver tree in file order.
	Export []*Node
}

// Metadata names the exporter.
type Metadata struct {
	Namespace string
	Name      string
	Labels    map[string]string
}

// TLS is how the exporter trusts its controller.
type TLS struct {
	Insecure bool
	CA       string
}

// Hooks run around leases.
type Hooks struct {
	BeforeLease *Hook
	AfterLease  *Hook
}

// Hook is a script run on the exporter host. Script is either the
// script's text or, when it names an existing file, that file.
type Hook struct {
	Script string
	// Exec is the interpreter ("/bin/bash"); empty means /bin/sh, or
	// python3 for a file ending in .py.
	Exec      string
	Timeout   time.Duration
	OnFailure string // warn, endLease or exit
}

// Node is one entry of the export tree.
type Node struct {
	// Name is the key in its parent's map; Path the dotted path from the
	// export root ("storage.serial").
	Name string
	Path string
	// Type is the driver kind as written (pogo name or Jumpstarter alias).
	Type   string
	Config drivers.Config
	// Children are nested nodes in file order.
	Children []*Node
	// Ref, when set, makes the node stand for the node at that path.
	Ref string
	// Line is where the node's name stands in the file.
	Line int
	// TypeLine is where `type:` stands (or Line).
	TypeLine int
}

// Error is a config problem at a place in the file.
type Error = errdefs.FileError

// Load reads and checks the config at path.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("exporter config: %w", err)
	}
	return Parse(path, data)
}

// Parse checks data as the config named path.
func Parse(path string, data []byte) (*File, error) {
	p := &parser{file: path}
	f, err := p.parse(data)
	if err != nil {
		return nil, err
	}
	return f, nil
}

type parser struct {
	file string
}

func (p *parser) errf(n *yaml.Node, field, format string, args ...any) *Error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{File: p.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// mapping walks a mapping node's pairs, refusing duplicate and unknown keys.
func (p *parser) mapping(n *yaml.Node, field string, known []string, f func(key, val *yaml.Node) error) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return p.errf(n, field, "must be a mapping")
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := join(field, k.Value)
		if seen[k.Value] {
			return p.errf(k, name, "duplicate name")
		}
		seen[k.Value] = true
		if known != nil && !slices.Contains(known, k.Value) {
			return p.errf(k, name, "unknown key (known: %s)", strings.Join(known, ", "))
		}
		if err := f(k, v); err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) str(n *yaml.Node, field string, out *string) error {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!map" || n.Tag == "!!seq" {
		return p.errf(n, field, "want a string")
	}
	if n.Tag == "!!null" {
		*out = ""
		return nil
	}
	*out = n.Value
	return nil
}

func (p *parser) parse(data []byte) (*File, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, &Error{File: p.file, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(doc.Content) == 0 {
		return nil, &Error{File: p.file, Msg: "empty config"}
	}
	root := doc.Content[0]
	f := &File{Path: p.file}
	var export *yaml.Node
	err := p.mapping(root, "", []string{"apiVersion", "kind", "metadata", "endpoint", "token", "tls", "hooks", "exitOnLeaseEnd", "export", "grpcOptions", "description"}, func(k, v *yaml.Node) error {
		switch k.Value {
		case "apiVersion":
			return p.str(v, "apiVersion", &f.APIVersion)
		case "kind":
			if err := p.str(v, "kind", &f.Kind); err != nil {
				return err
			}
			if f.Kind != "ExporterConfig" {
				return p.errf(v, "kind", "must be ExporterConfig, got %q", f.Kind)
			}
		case "metadata":
			return p.metadata(v, &f.Metadata)
		case "endpoint":
			return p.str(v, "endpoint", &f.Endpoint)
		case "token":
			return p.str(v, "token", &f.Token)
		case "tls":
			return p.mapping(v, "tls", []string{"insecure", "ca"}, func(k, v *yaml.Node) error {
				if k.Value == "ca" {
					return p.str(v, "tls.ca", &f.TLS.CA)
				}
				if v.Decode(&f.TLS.Insecure) != nil {
					return p.errf(v, "tls.insecure", "want true or false, got %q", v.Value)
				}
				return nil
			})
		case "hooks":
			return p.hooks(v, &f.Hooks)
		case "exitOnLeaseEnd":
			if v.Kind != yaml.ScalarNode || v.Decode(&f.ExitOnLeaseEnd) != nil {
				return p.errf(v, "exitOnLeaseEnd", "want true or false, got %q", v.Value)
			}
		case "export":
			export = v
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if export == nil {
		return nil, p.errf(root, "export", "required key is missing")
	}
	if f.Export, err = p.nodes(export, ""); err != nil {
		return nil, err
	}
	if err := p.checkTree(f); err != nil {
		return nil, err
	}
	return f, nil
}

func (p *parser) metadata(n *yaml.Node, m *Metadata) error {
	return p.mapping(n, "metadata", []string{"namespace", "name", "labels"}, func(k, v *yaml.Node) error {
		switch k.Value {
		case "namespace":
			return p.str(v, "metadata.namespace", &m.Namespace)
		case "name":
			return p.str(v, "metadata.name", &m.Name)
		case "labels":
			m.Labels = map[string]string{}
			return p.mapping(v, "metadata.labels", nil, func(k, v *yaml.Node) error {
				var s string
				if err := p.str(v, "metadata.labels."+k.Value, &s); err != nil {
					return err
				}
				m.Labels[k.Value] = s
				return nil
			})
		}
		return nil
	})
}

func (p *parser) hooks(n *yaml.Node, h *Hooks) error {
	return p.mapping(n, "hooks", []string{"beforeLease", "afterLease"}, func(k, v *yaml.Node) error {
		field := "hooks." + k.Value
		hook := &Hook{Timeout: 120 * time.Second, OnFailure: "warn"}
		err := p.mapping(v, field, []string{"script", "exec", "timeout", "onFailure"}, func(k, v *yaml.Node) error {
			switch k.Value {
			case "script":
				return p.str(v, field+".script", &hook.Script)
			case "exec":
				if err := p.str(v, field+".exec", &hook.Exec); err != nil {
					return err
				}
				if strings.TrimSpace(hook.Exec) == "" {
					return p.errf(v, field+".exec", "names no interpreter")
				}
			case "timeout":
				var secs int
				if v.Decode(&secs) == nil {
					hook.Timeout = time.Duration(secs) * time.Second
					return nil
				}
				d, err := time.ParseDuration(v.Value)
				if err != nil || d <= 0 {
					return p.errf(v, field+".timeout", "want seconds or a duration like \"30s\", got %q", v.Value)
				}
				hook.Timeout = d
			case "onFailure":
				if err := p.str(v, field+".onFailure", &hook.OnFailure); err != nil {
					return err
				}
				if !slices.Contains([]string{"warn", "endLease", "exit"}, hook.OnFailure) {
					return p.errf(v, field+".onFailure", "must be warn, endLease or exit, got %q", hook.OnFailure)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if hook.Script == "" {
			return p.errf(v, field+".script", "required key is missing")
		}
		if k.Value == "beforeLease" {
			h.BeforeLease = hook
		} else {
			h.AfterLease = hook
		}
		return nil
	})
}

func (p *parser) nodes(n *yaml.Node, parent string) ([]*Node, error) {
	var out []*Node
	field := "export"
	if parent != "" {
		field = "export." + parent + ".children"
	}
	err := p.mapping(n, field, nil, func(k, v *yaml.Node) error {
		if k.Value == "" || strings.ContainsAny(k.Value, ". \t") {
			return p.errf(k, join(field, k.Value), "a driver name must be non-empty without dots or spaces")
		}
		node, err := p.node(k, v, join(parent, k.Value))
		if err != nil {
			return err
		}
		out = append(out, node)
		return nil
	})
	return out, err
}

func (p *parser) node(k, v *yaml.Node, path string) (*Node, error) {
	field := "export." + path
	node := &Node{Name: k.Value, Path: path, Line: k.Line, TypeLine: k.Line}
	var typeNode, configNode, childrenNode, refNode *yaml.Node
	configLine := 0
	err := p.mapping(v, field, []string{"type", "config", "children", "ref", "description"}, func(k, v *yaml.Node) error {
		switch k.Value {
		case "type":
			typeNode = v
			node.TypeLine = k.Line
			return p.str(v, field+".type", &node.Type)
		case "config":
			configNode, configLine = v, k.Line
		case "children":
			childrenNode = v
		case "ref":
			refNode = v
			return p.str(v, field+".ref", &node.Ref)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return nil, p.errf(k, field, "empty node: give it a type, children or a ref")
	}
	switch {
	case refNode != nil:
		if typeNode != nil || configNode != nil || childrenNode != nil {
			return nil, p.errf(refNode, field+".ref", "a ref node has nothing else (no type, config or children)")
		}
		if node.Ref == "" {
			return nil, p.errf(refNode, field+".ref", "must name a dotted path")
		}
		return node, nil
	case typeNode != nil:
		if _, ok := drivers.Lookup(node.Type); !ok {
			return nil, p.errf(typeNode, field+".type", "%s", unknownType(node.Type))
		}
	case configNode != nil:
		return nil, p.errf(configNode, field+".config", "config without a type")
	case childrenNode == nil:
		return nil, p.errf(k, field, "empty node: give it a type, children or a ref")
	}
	if configNode != nil {
		node.Config = drivers.NewConfigAt(configNode, configLine)
	}
	if childrenNode != nil {
		if node.Children, err = p.nodes(childrenNode, path); err != nil {
			return nil, err
		}
	}
	return node, nil
}

func unknownType(t string) string {
	if strings.HasPrefix(t, "jumpstarter_driver_") {
		return fmt.Sprintf("Jumpstarter driver %q has no pogo equivalent (pogo has: %s)", t, strings.Join(drivers.Names(), ", "))
	}
	return fmt.Sprintf("unknown driver type %q (pogo has: %s)", t, strings.Join(drivers.Names(), ", "))
}

// checkTree resolves every ref and refuses dangling and cyclic ones.
func (p *parser) checkTree(f *File) error {
	byPath := map[string]*Node{}
	var all []*Node
	var walk func([]*Node)
	walk = func(ns []*Node) {
		for _, n := range ns {
			byPath[n.Path] = n
			all = append(all, n)
			walk(n.Children)
		}
	}
	walk(f.Export)
	for _, n := range all {
		if n.Ref == "" {
			continue
		}
		if _, ok := byPath[n.Ref]; !ok {
			paths := make([]string, 0, len(byPath))
			for q := range byPath {
				paths = append(paths, q)
			}
			sort.Strings(paths)
			return &Error{File: p.file, Line: n.Line, Field: "export." + n.Path + ".ref", Msg: fmt.Sprintf("dangling ref %q (paths: %s)", n.Ref, strings.Join(paths, ", "))}
		}
	}
	// A node depends on its children and a ref on its target; building
	// needs that graph to be acyclic.
	const (
		white = iota
		grey
		black
	)
	color := map[*Node]int{}
	var visit func(n *Node, chain []string) error
	visit = func(n *Node, chain []string) error {
		switch color[n] {
		case grey:
			return &Error{File: p.file, Line: n.Line, Field: "export." + n.Path, Msg: "cyclic ref: " + strings.Join(append(chain, n.Path), " → ")}
		case black:
			return nil
		}
		color[n] = grey
		chain = append(chain, n.Path)
		deps := n.Children
		if n.Ref != "" {
			deps = []*Node{byPath[n.Ref]}
		}
		for _, d := range deps {
			if err := visit(d, chain); err != nil {
				return err
			}
		}
		color[n] = black
		return nil
	}
	for _, n := range all {
		if err := visit(n, nil); err != nil {
			return err
		}
	}
	return nil
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}
