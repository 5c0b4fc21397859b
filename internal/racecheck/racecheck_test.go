package racecheck

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestRacyHelperProcess is a deliberate data race, run as a child process
// by TestFailOnRaceFires.
func TestRacyHelperProcess(t *testing.T) {
	if os.Getenv("WAITERTEST_RACY") != "1" {
		t.Skip("a deliberate data race, run as a child by TestFailOnRaceFires")
	}
	var n int
	done := make(chan struct{})
	go func() {
		n++ // racyWrite
		close(done)
	}()
	n++
	<-done
	fmt.Fprintln(os.Stderr, "racy helper: done", n)
}

type fakeT struct {
	errors []string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Errorf(format string, args ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}

// The check fires on a real race report, from a child built with -race,
// and stays quiet on a clean stderr.
func TestFailOnRaceFires(t *testing.T) {
	var clean fakeT
	Report(&clean, "clean", "time=... level=info msg=\"waiter: prefork: 2 workers\"\nracy helper: done 2\n")
	if len(clean.errors) != 0 {
		t.Fatalf("a clean stderr was reported: %q", clean.errors)
	}
	var tsan fakeT
	Report(&tsan, "tsan", "starting\n==123==ERROR: ThreadSanitizer: failed to allocate 0x1000 bytes\n")
	if len(tsan.errors) != 1 || !strings.Contains(tsan.errors[0], "==123==ERROR: ThreadSanitizer: failed") {
		t.Fatalf("a ThreadSanitizer failure was not reported: %q", tsan.errors)
	}

	if !Enabled() {
		t.Skip("this test binary is not built with -race: no detector to make a real report (make unit runs with -race)")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRacyHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "WAITERTEST_RACY=1", "GORACE=atexit_sleep_ms=0")
	out, _ := cmd.CombinedOutput() // exits non-zero: the race fails the helper test
	var ft fakeT
	Report(&ft, "racy helper", string(out))
	if len(ft.errors) != 1 {
		t.Fatalf("want one error from a racy child, have %d: %q\nthe child's output:\n%s", len(ft.errors), ft.errors, out)
	}
	msg := ft.errors[0]
	t.Logf("what the test of a racy child shows:\n%s", msg)
	for _, want := range []string{"racy helper: the race detector reported", "WARNING: DATA RACE", "TestRacyHelperProcess"} {
		if !strings.Contains(msg, want) {
			t.Errorf("want %q in the report:\n%s", want, msg)
		}
	}
	if n := strings.Count(msg, "\n"); n > ReportLines+2 {
		t.Errorf("want at most %d lines of the report, have %d:\n%s", ReportLines, n, msg)
	}
	if !strings.HasPrefix(strings.SplitN(msg, "\n", 2)[1], "WARNING: DATA RACE") {
		t.Errorf("want the report to start at its first line:\n%s", msg)
	}
}
