package controller

import (
	"fmt"
	"testing"
)

func TestSelectorCacheBounded(t *testing.T) {
	c := newSelectorCache(8)
	hot := c.get("hot=yes")
	for i := range 100 {
		c.get(fmt.Sprintf("rack=%d", i))
		// Used all along, so never the least recently used.
		c.get("hot=yes")
		if n := c.len(); n > 8 {
			t.Fatalf("after %d selectors the cache holds %d, more than its 8", i+2, n)
		}
	}
	if _, ok := c.index["hot=yes"]; !ok {
		t.Error("the selector used all along was evicted")
	}
	if _, ok := c.index["rack=0"]; ok {
		t.Error("the least recently used selector was kept")
	}
	if got := c.get("hot=yes"); got.String() != hot.String() {
		t.Errorf("hot=yes parsed as %s, then %s", hot, got)
	}
	bad := c.get("=")
	if bad.Matches(map[string]string{"a": "b"}) || bad.Matches(nil) {
		t.Errorf("an unparsable selector %s matches", bad)
	}
}
