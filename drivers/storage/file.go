package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/pogolab/pogo/api/errdefs"
)

// chunk is the unit of disk I/O and of messages on the wire.
const chunk = 1 << 20

// File is a disk kept in a raw image file.
type File struct {
	// Path is the image file.
	Path string
	// Guard, when set, is called before every access: it refuses the
	// access (the board runs) or returns a release to call afterwards.
	Guard func() (release func(), err error)
}

// Create makes sure the image exists with at least size bytes, creating
// it sparse (and its directory) when absent. It fails when the path cannot
// be written, so a bad path shows up before the board is started.
func (f *File) Create(size int64) error {
	if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
		return fmt.Errorf("create disk directory: %w", err)
	}
	fd, err := os.OpenFile(f.Path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open disk: %w", err)
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return fmt.Errorf("stat disk: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("disk %s is not a regular file", f.Path)
	}
	if st.Size() < size {
		if err := fd.Truncate(size); err != nil {
			return fmt.Errorf("size disk to %d bytes: %w", size, err)
		}
	}
	return nil
}

func (f *File) guard() (func(), error) {
	if f.Guard == nil {
		return func() {}, nil
	}
	return f.Guard()
}

// Info implements Disk.
func (f *File) Info(context.Context) (Info, error) {
	st, err := os.Stat(f.Path)
	if err != nil {
		return Info{}, fmt.Errorf("disk: %w", err)
	}
	in := Info{Size: st.Size(), Path: f.Path, Allocated: st.Size()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		in.Allocated = sys.Blocks * 512
	}
	if release, err := f.guard(); err != nil {
		in.Busy = true
	} else {
		release()
	}
	return in, nil
}

// Write implements Disk. The disk keeps its size: an image larger than the
// disk is refused, like on a real eMMC.
func (f *File) Write(ctx context.Context, r io.Reader, opts WriteOptions) (int64, error) {
	release, err := f.guard()
	if err != nil {
		return 0, err
	}
	defer release()
	fd, err := os.OpenFile(f.Path, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("open disk: %w", err)
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat disk: %w", err)
	}
	size := st.Size()
	if opts.Size < 0 || opts.Size > size {
		return 0, errdefs.Invalidf("image of %d bytes does not fit the disk of %d bytes", opts.Size, size)
	}
	if opts.Truncate {
		// Dropping the old contents leaves holes that read as zeros, so
		// zero blocks of the image need not be written either.
		if err := fd.Truncate(0); err != nil {
			return 0, fmt.Errorf("truncate disk: %w", err)
		}
	}
	n, werr := copyImage(ctx, fd, r, size, opts.Truncate)
	if opts.Truncate {
		if err := fd.Truncate(size); err != nil && werr == nil {
			werr = fmt.Errorf("restore disk size: %w", err)
		}
	}
	if werr != nil {
		return n, werr
	}
	if opts.Size != 0 && n != opts.Size {
		return n, errdefs.Invalidf("image stream ended after %d of the announced %d bytes", n, opts.Size)
	}
	if err := fd.Sync(); err != nil {
		return n, fmt.Errorf("sync disk: %w", err)
	}
	return n, nil
}

func copyImage(ctx context.Context, fd *os.File, r io.Reader, size int64, skipZeros bool) (int64, error) {
	buf := make([]byte, chunk)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return off, err
		}
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if off+int64(n) > size {
				return off, errdefs.Invalidf("image is larger than the disk of %d bytes", size)
			}
			if !(skipZeros && allZero(buf[:n])) {
				if _, err := fd.WriteAt(buf[:n], off); err != nil {
					return off, fmt.Errorf("write disk at %d: %w", off, err)
				}
			}
			off += int64(n)
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
				return off, nil
			}
			return off, fmt.Errorf("read image: %w", rerr)
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Read implements Disk.
func (f *File) Read(ctx context.Context, w io.Writer, offset, length int64) (int64, error) {
	release, err := f.guard()
	if err != nil {
		return 0, err
	}
	defer release()
	fd, err := os.Open(f.Path)
	if err != nil {
		return 0, fmt.Errorf("open disk: %w", err)
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat disk: %w", err)
	}
	if offset < 0 || offset > st.Size() || length < 0 || length > st.Size()-offset {
		return 0, errdefs.Invalidf("range %d+%d is outside the disk of %d bytes", offset, length, st.Size())
	}
	if length == 0 {
		length = st.Size() - offset
	}
	return io.CopyBuffer(ctxWriter{ctx, w}, io.NewSectionReader(fd, offset, length), make([]byte, chunk))
}

// ctxWriter stops a copy once ctx ends.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
