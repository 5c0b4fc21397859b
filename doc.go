// Package waiter is a framework for network servers that systemd runs: the Go
// successor of Perl's Net::Waiter.
//
// A program is options, hook functions and Run:
//
//	package main
//
//	import (
//		"io"
//		"net"
//		"os"
//
//		"github.com/waiter-go/waiter"
//	)
//
//	func main() {
//		opts := waiter.DefaultOptions()
//		opts.Prefork, opts.Maxfork = 8, 32
//		srv := waiter.New(opts, waiter.Hooks{
//			OnProcess: func(c net.Conn) error {
//				_, err := io.WriteString(c, "hello world\n")
//				return err
//			},
//		})
//		os.Exit(srv.Run())
//	}
//
// Run takes the listening sockets from systemd (socket activation) or binds
// its own, then serves each client in a worker process: preforked (a pool
// between prefork and maxfork workers that accept by themselves), forked per
// client (with spare workers started ahead), or in this one process (nofork).
//
// Workers are this same binary, re-executed: everything main does before
// Run, it does again in every worker. That is how a worker gets the hooks.
// Keep that code quick and free of side effects that must happen once (open
// files, start goroutines and connect to databases in OnChildStart instead);
// in a worker Run never returns.
//
// Packages: config (options, YAML, flags), hooks (the hook set and their one
// call site each), activation (sockets from systemd or bound, TLS), pool (the
// server: master, workers, scoreboard, signals).
package waiter
