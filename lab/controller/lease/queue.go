package lease

import (
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
	// taken marks free exporters granted this round; lo is the first not
	// taken, so a burst of requests any exporter serves costs O(n), not
	// O(n·exporters).
	taken := make([]bool, len(free))
	lo := 0
	var grants []Grant
	for i := range reqs {
		for lo < len(free) && taken[lo] {
			lo++
		}
		if lo == len(free) {
			break
		}
		r := &reqs[i]
		if r.Begin.After(now) {
			continue
		}
		for j := lo; j < len(free); j++ {
			if !taken[j] && r.Matches(free[j]) {
				grants = append(grants, Grant{Lease: r.ID, Exporter: free[j].Name})
				taken[j] = true
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
	// Requests mostly share a handful of selectors: match each distinct
	// (selector, name, policy) once, so a burst of n requests costs
	// O(n·groups) rather than O(n²·exporters).
	words := (len(exps) + 63) / 64
	groupOf := make([]int, len(reqs))
	index := map[string]int{}
	var sets [][]uint64
	for i := range reqs {
		r := &reqs[i]
		key := r.Selector.String() + "\x00" + r.Name + "\x00" + r.Policy.String()
		g, ok := index[key]
		if !ok {
			g = len(sets)
			index[key] = g
			set := make([]uint64, words)
			for j := range exps {
				if r.Matches(&exps[j]) {
					set[j/64] |= 1 << (j % 64)
				}
			}
			sets = append(sets, set)
		}
		groupOf[i] = g
	}
	// compete[g] lists the groups sharing an exporter with g.
	compete := make([][]int, len(sets))
	for g := range sets {
		for h := range sets {
			for w := range words {
				if sets[g][w]&sets[h][w] != 0 {
					compete[g] = append(compete[g], h)
					break
				}
			}
		}
	}
	seen := make([]int, len(sets))
	out := make(map[string]int, len(reqs))
	for i := range reqs {
		g := groupOf[i]
		n := 0
		for _, h := range compete[g] {
			n += seen[h]
		}
		out[reqs[i].ID] = n
		seen[g]++
	}
	return out
}
