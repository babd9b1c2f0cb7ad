// Package files is the files capability: the directory a file server
// driver (tftp, http) serves to boards, managed by clients over the
// exporter. Store is the interface, Dir the directory-backed
// implementation both servers use, and Client the same interface over the
// wire.
package files

import (
	"context"
	"io"
	"time"
)

// Store is a served directory whose files clients manage.
type Store interface {
	// Put stores r's content under name (a slash-separated path inside
	// the directory), replacing any file of that name once the content is
	// complete. It returns the number of bytes stored.
	Put(ctx context.Context, name string, r io.Reader) (int64, error)
	// List returns every regular file, sorted by name.
	List(ctx context.Context) ([]Info, error)
	// Remove deletes the file name.
	Remove(ctx context.Context, name string) error
}

// Locator is a Store that boards reach at a URL.
type Locator interface {
	// URL is where a board fetches the files from; a file's URL is the
	// URL followed by its name.
	URL(ctx context.Context) (string, error)
}

// Info describes a stored file.
type Info struct {
	Name    string
	Size    int64
	ModTime time.Time
}
