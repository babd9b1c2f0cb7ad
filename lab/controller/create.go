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

// storeLease queues l for the next create transaction and waits for it.
// A burst of requests then costs a few etcd revisions instead of one
// each: every revision is a watch event each replica must process before
// it can answer, and a slow watcher falls back to etcd's 100 ms resync.
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
	}
}

// commitCreates stores queued leases: whatever queued while the previous
// transaction was in flight goes into the next one.
func (c *Controller) commitCreates() {
	for {
		var batch []*createReq
		select {
		case r := <-c.creates:
			batch = append(batch, r)
		case <-c.ctx.Done():
			return
		}
	drain:
		for len(batch) < maxCreates {
			select {
			case r := <-c.creates:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		if err := c.createTxn(batch); err == errCollided {
			// An id collided: let each compare decide.
			for _, r := range batch {
				c.createTxn([]*createReq{r})
			}
		}
	}
}

// createTxn stores batch in one transaction and answers every request of
// it, except on a failed compare of a batch of several.
func (c *Controller) createTxn(batch []*createReq) error {
	ls := make([]*store.Lease, 0, len(batch))
	for _, r := range batch {
		ls = append(ls, r.l)
	}
	rev, err := c.st.CreateLeases(c.ctx, ls)
	if errors.Is(err, store.ErrChanged) {
		return errCollided
	}
	for _, r := range batch {
		r.rev = rev
		r.done <- err
	}
	return err
}

var errCollided = fmt.Errorf("a lease id collided")
