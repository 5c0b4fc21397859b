package main

import (
	"testing"

	"github.com/waiter-go/waiter/internal/racecheck"
)

// failOnRace fails t when a waiterd's stderr (its workers' too) holds a
// race report (see internal/racecheck).
func failOnRace(t *testing.T, who string, stderr string) {
	t.Helper()
	racecheck.Report(t, who, stderr)
}
