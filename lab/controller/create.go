package controller

import (
	"context"
	"errors"
	"fmt"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/lab/controller/store"
)

// maxCreates bounds the leases stored in one transaction.
const maxCreates = store.MaxCreates

type createReq struct {
	l    *store.Lease
	done chan error
	rev  int64
}

// storeLease queues l for the scheduler, which grants it at once if it
// can and stores it either way, and waits for the revision that did. A
// burst of requests then costs a few etcd revisions instead of two each:
// every revision is a watch event each replica must process before it
// can answer, and a slow watcher falls back to etcd's 100 ms resync.
func (c *Controller) storeLease(ctx context.Context, l *store.Lease) (int64, error) {
	r := &createReq{l: l, done: make(chan error, 1)}
	select {
	case c.creates <- r:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-c.ctx.Done():
		return 0, fmt.Errorf("controller is shutting down: %w", errdefs.ErrUnavailable)
	}
	select {
	case err := <-r.done:
		return r.rev, err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-c.ctx.Done():
		return 0, fmt.Errorf("controller is shutting down: %w", errdefs.ErrUnavailable)
	}
}

// storeNew stores new requests as requested (pending or unsatisfiable),
// in transactions of at most maxCreates, answers each and returns the
// last revision written.
func (c *Controller) storeNew(batch []*createReq) int64 {
	var last int64
	for len(batch) > 0 {
		part := batch[:min(len(batch), maxCreates)]
		batch = batch[len(part):]
		if rev, err := c.createTxn(part); err == errCollided {
			// An id collided: let each compare decide.
			for _, r := range part {
				rev, _ := c.createTxn([]*createReq{r})
				last = max(last, rev)
			}
		} else {
			last = max(last, rev)
		}
	}
	return last
}

// createTxn stores batch in one transaction and answers every request of
// it, except on a failed compare of a batch of several.
func (c *Controller) createTxn(batch []*createReq) (int64, error) {
	ls := make([]*store.Lease, 0, len(batch))
	for _, r := range batch {
		ls = append(ls, r.l)
	}
	rev, err := c.st.CreateLeases(c.ctx, ls)
	if errors.Is(err, store.ErrChanged) {
		return 0, errCollided
	}
	if errors.Is(err, errdefs.ErrExists) {
		// A grant whose answer was lost (etcd timed out, then applied
		// it) may have stored this very request already.
		if l, _, gerr := c.st.GetLease(c.ctx, ls[0].ID); gerr == nil && l != nil && l.Client == ls[0].Client && l.Created.Equal(ls[0].Created) {
			rev, err = l.Mod, nil
		}
	}
	for _, r := range batch {
		r.rev = rev
		r.done <- err
	}
	return rev, err
}

var errCollided = fmt.Errorf("a lease id collided")
