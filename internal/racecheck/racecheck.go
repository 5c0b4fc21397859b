// Package racecheck finds the race detector's reports in a child process's
// output. Tests that start real processes (the master and its workers, which
// share its stderr) call Report at the end: a child built with -race that
// races must fail its test even when the test otherwise passes, since the
// child's exit status (66) is often not looked at and a worker's never
// reaches the test.
package racecheck

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// markers are what a race-enabled process prints when the detector finds a
// race, or fails on its own.
var markers = []string{"WARNING: DATA RACE", "ThreadSanitizer"}

// ReportLines is how much of the first report Report shows.
const ReportLines = 40

// T is the part of *testing.T that Report uses, so that a test can check
// the check without failing itself.
type T interface {
	Helper()
	Errorf(format string, args ...any)
}

// Report fails t when output holds a race report, showing its first lines;
// who names the process.
func Report(t T, who, output string) {
	t.Helper()
	first := -1
	for _, m := range markers {
		if i := strings.Index(output, m); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first < 0 {
		return
	}
	// From the start of the marker's line, the report's first lines.
	start := strings.LastIndexByte(output[:first], '\n') + 1
	lines := strings.SplitAfter(output[start:], "\n")
	more := ""
	if len(lines) > ReportLines {
		more = fmt.Sprintf("[... %d more lines]\n", len(lines)-ReportLines)
		lines = lines[:ReportLines]
	}
	t.Errorf("%s: the race detector reported on its stderr (WARNING: DATA RACE %d times):\n%s%s",
		who, strings.Count(output, "WARNING: DATA RACE"), strings.Join(lines, ""), more)
}

// Enabled reports whether this binary was built with -race.
func Enabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}
