package controller

import (
	"container/list"
	"sync"

	"github.com/pogolab/pogo/lab/controller/lease"
)

// maxSelectors bounds the parsed selectors a replica keeps: enough for
// every distinct selector of a busy lab's queue, small beside its state.
const maxSelectors = 4096

// selectorCache keeps the most recently used parsed selectors, so the
// scheduler does not parse the same text on every round and a stream of
// distinct selectors cannot grow the replica without bound.
type selectorCache struct {
	max int
	mu  sync.Mutex
	// lru holds *selectorEntry, most recently used at the front.
	lru   list.List
	index map[string]*list.Element
}

type selectorEntry struct {
	text string
	sel  lease.Selector
}

func newSelectorCache(max int) *selectorCache {
	return &selectorCache{max: max, index: map[string]*list.Element{}}
}

// get returns s parsed. Stored selectors were checked on the way in; one
// that fails now matches nothing rather than everything.
func (c *selectorCache) get(s string) lease.Selector {
	c.mu.Lock()
	if e, ok := c.index[s]; ok {
		c.lru.MoveToFront(e)
		sel := e.Value.(*selectorEntry).sel
		c.mu.Unlock()
		return sel
	}
	c.mu.Unlock()
	sel, err := lease.Parse(s)
	if err != nil {
		sel = lease.Selector{{Key: "pogo.invalid/selector", Op: lease.Exists}}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.index[s]; !ok {
		c.index[s] = c.lru.PushFront(&selectorEntry{text: s, sel: sel})
		for c.lru.Len() > c.max {
			old := c.lru.Back()
			c.lru.Remove(old)
			delete(c.index, old.Value.(*selectorEntry).text)
		}
	}
	return sel
}

// len is how many selectors are kept.
func (c *selectorCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
