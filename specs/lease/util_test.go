package lease_test

import (
	"strconv"
	"strings"
	"time"
)

// parseDate reads "sec.nsec" as `date +%s.%N` prints it.
func parseDate(s string) (time.Time, error) {
	a, b, _ := strings.Cut(strings.TrimSpace(s), ".")
	sec, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	var nsec int64
	if b != "" {
		if nsec, err = strconv.ParseInt(b, 10, 64); err != nil {
			return time.Time{}, err
		}
	}
	return time.Unix(sec, nsec), nil
}
