package pool_test

import (
	"testing"

	"github.com/waiter-go/waiter/internal/racecheck"
)

// failOnRace fails t when a child process's stderr holds a race report
// (see internal/racecheck); who names the process in the message.
func failOnRace(t *testing.T, who string, stderr string) {
	t.Helper()
	racecheck.Report(t, who, stderr)
}
