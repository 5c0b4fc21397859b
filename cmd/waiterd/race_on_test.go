//go:build race

package main

// raceEnabled is true when this test binary is built with -race: the
// waiterd it builds is then built with -race too.
const raceEnabled = true
