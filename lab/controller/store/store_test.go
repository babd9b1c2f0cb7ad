package store

import (
	"context"
	"testing"
	"time"
)

func TestEmbedded(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	s, err := Open(ctx, Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ready in %v", time.Since(start))
	defer s.Close()
	if _, err := s.Client.Put(ctx, Prefix+"x", "y"); err != nil {
		t.Fatal(err)
	}
	r, err := s.Client.Get(ctx, Prefix+"x")
	if err != nil || string(r.Kvs[0].Value) != "y" {
		t.Fatal(r, err)
	}
}

func TestEmbeddedRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client.Put(ctx, Prefix+"x", "y"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.Client.Get(ctx, Prefix+"x")
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "y" {
		t.Fatal(r, err)
	}
}
