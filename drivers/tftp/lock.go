package tftp

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// lockFile is an flock(2) held on a file. The kernel drops it when the
// holding process dies, which is what lets another process take over.
type lockFile struct {
	f    *os.File
	path string
}

// tryLock takes the exclusive lock on path without waiting; ok is false
// when another open file (in any process, this one included) holds it.
func tryLock(path string) (l *lockFile, ok bool, err error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, false, fmt.Errorf("open lock %s: %w", path, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, false, nil
			}
			return nil, false, fmt.Errorf("lock %s: %w", path, err)
		}
		// A holder that removes its lock file on release may have done so
		// between our open and flock; the lock is only ours if the path
		// still names the file we locked.
		fi, err1 := f.Stat()
		pi, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(fi, pi) {
			return &lockFile{f: f, path: path}, true, nil
		}
		f.Close()
	}
}

// writePID records the holder in the lock file, for messages naming it.
func (l *lockFile) writePID() {
	_ = l.f.Truncate(0)
	_, _ = l.f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
}

// unlock releases the lock, first removing the file when remove is set.
func (l *lockFile) unlock(remove bool) {
	if remove {
		_ = os.Remove(l.path)
	}
	l.f.Close()
}

// lockHolder reads the pid a lock file names, or 0.
func lockHolder(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	pid, _ := strconv.Atoi(f[0])
	return pid
}
