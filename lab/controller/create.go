package controller

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/lab/controller/store"
)

// maxCreates bounds the leases stored in one transaction (one compare and
// one put each, under etcd's default --max-txn-ops of 128).
const maxCreates = 64

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
	cmps := make([]clientv3.Cmp, 0, len(batch))
	ops := make([]clientv3.Op, 0, len(batch))
	for _, r := range batch {
		key := store.LeasesPrefix + r.l.ID
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		ops = append(ops, clientv3.OpPut(key, jsonString(r.l)))
	}
	tr, err := c.st.Client.Txn(c.ctx).If(cmps...).Then(ops...).Commit()
	switch {
	case err != nil:
		err = fmt.Errorf("store lease: %w", err)
	case !tr.Succeeded && len(batch) == 1:
		err = fmt.Errorf("lease id %s collided; try again: %w", batch[0].l.ID, errdefs.ErrExists)
	case !tr.Succeeded:
		return errCollided
	}
	for _, r := range batch {
		if err == nil {
			r.rev = tr.Header.Revision
		}
		r.done <- err
	}
	return err
}

var errCollided = fmt.Errorf("a lease id collided")
