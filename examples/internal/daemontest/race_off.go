//go:build !race

package daemontest

// RaceEnabled is true when the test binary is built with -race: the daemon
// Build compiles is then built with -race too.
const RaceEnabled = false
