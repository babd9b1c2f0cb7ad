package lease

import (
	"slices"
	"sort"
	"time"
)

// Request is a waiting lease as the queue sees it.
type Request struct {
	ID string
	// Priority orders the queue (higher first); Seq breaks ties (lower,
	// i.e. earlier, first).
	Priority int
	Seq      int64
	// Begin defers the request; zero means now.
	Begin time.Time
	// Selector or Name (or both) say which exporters can serve it; Policy
	// is what the client may lease at all.
	Selector Selector
	Name     string
	Policy   Selector
}

// Exporter is an exporter as the queue sees it.
type Exporter struct {
	Name   string
	Labels map[string]string
	// Available means online, enabled and not leased.
	Available bool
}

// Grant gives an exporter to a lease.
type Grant struct {
	Lease    string
	Exporter string
}

// Matches reports whether e could serve r.
func (r *Request) Matches(e *Exporter) bool {
	if r.Name != "" && r.Name != e.Name {
		return false
	}
	return r.Selector.Matches(e.Labels) && r.Policy.Matches(e.Labels)
}

// Sort puts requests in service order: priority, then arrival.
func Sort(reqs []Request) {
	sort.SliceStable(reqs, func(i, j int) bool {
		if reqs[i].Priority != reqs[j].Priority {
			return reqs[i].Priority > reqs[j].Priority
		}
		return reqs[i].Seq < reqs[j].Seq
	})
}

// Schedule decides which requests get which available exporters now:
// requests are served in order, each taking the first (by name) available
// exporter it matches, so a later request only ever gets an exporter no
// earlier one could use.
func Schedule(now time.Time, reqs []Request, exps []Exporter) []Grant {
	Sort(reqs)
	free := make([]*Exporter, 0, len(exps))
	for i := range exps {
		if exps[i].Available {
			free = append(free, &exps[i])
		}
	}
	sort.Slice(free, func(i, j int) bool { return free[i].Name < free[j].Name })
	var grants []Grant
	for i := range reqs {
		if len(free) == 0 {
			break
		}
		r := &reqs[i]
		if r.Begin.After(now) {
			continue
		}
		for j, e := range free {
			if r.Matches(e) {
				grants = append(grants, Grant{Lease: r.ID, Exporter: e.Name})
				free = slices.Delete(free, j, j+1)
				break
			}
		}
	}
	return grants
}

// Positions counts, for each request, the requests served before it that
// compete for at least one of the same exporters.
func Positions(reqs []Request, exps []Exporter) map[string]int {
	Sort(reqs)
	words := (len(exps) + 63) / 64
	sets := make([][]uint64, len(reqs))
	for i := range reqs {
		sets[i] = make([]uint64, words)
		for j := range exps {
			if reqs[i].Matches(&exps[j]) {
				sets[i][j/64] |= 1 << (j % 64)
			}
		}
	}
	out := make(map[string]int, len(reqs))
	for i := range reqs {
		n := 0
		for k := 0; k < i; k++ {
			for w := range words {
				if sets[i][w]&sets[k][w] != 0 {
					n++
					break
				}
			}
		}
		out[reqs[i].ID] = n
	}
	return out
}
