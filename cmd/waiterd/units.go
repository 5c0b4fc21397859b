package main

import (
	"fmt"
	"io"
)

// unitsMain writes systemd units for a daemon built on waiter. (Filled in by
// the units work; see units/.)
func unitsMain(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "waiterd units: not built yet")
	return 2
}
