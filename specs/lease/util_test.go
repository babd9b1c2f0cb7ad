package lease_test

import (
	"fmt"
	"os"
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

// readLine returns the first line of path once it is complete (ends in a
// newline), and an error while the file is missing or still being written.
func readLine(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	line, _, ok := strings.Cut(string(b), "\n")
	if !ok {
		return "", fmt.Errorf("%s: no complete line yet (%d bytes)", path, len(b))
	}
	return line, nil
}
