package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// envRole, when "baseline", makes this binary the baseline server instead
// of the driver: the driver re-executes itself so that the baseline runs in
// a process of its own, as waiterd does.
const envRole = "WAITER_BENCH_ROLE"

// runBaseline is the plain Go server every row is compared with: one
// process, a goroutine per connection, the same greeting. It is the most
// this machine does in one process with Go's netpoller. It runs until
// killed.
func runBaseline(addr string, stderr io.Writer) int {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(stderr, "baseline: %v\n", err)
		if errors.Is(err, syscall.EADDRINUSE) {
			fmt.Fprintln(stderr, "baseline: address already in use")
			return 100
		}
		return 1
	}
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		fmt.Fprintf(stderr, "baseline: sd_notify: %v\n", err)
	}
	msg := []byte(greeting)
	for {
		c, err := l.Accept()
		if err != nil {
			// EMFILE and the like: back off a little, as net/http does.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		go func() {
			c.Write(msg)
			c.Close()
		}()
	}
}
