// Package waiter is a framework for network servers that systemd runs: the Go
// successor of Perl's Net::Waiter.
//
// A program is its settings and its hooks, handed to App.Main:
//
//	package main
//
//	import (
//		"context"
//		"fmt"
//		"net"
//
//		"github.com/waiter-go/waiter"
//	)
//
//	type settings struct {
//		Greeting string `yaml:"greeting"`
//	}
//
//	func main() {
//		app := &waiter.App[settings]{
//			Defaults: settings{Greeting: "hello world"},
//			Hooks: waiter.Hooks{
//				OnProcess: func(ctx context.Context, c net.Conn) error {
//					_, err := fmt.Fprintln(c, waiter.Settings[settings](ctx).Greeting)
//					return err
//				},
//			},
//		}
//		app.Main()
//	}
//
// Main reads waiter's options and the program's settings from -config FILE
// (one YAML file: prefork: 8, greeting: hi) and from flags (-prefork 8
// -greeting hi), checks them whole (-check does only that, and exits 0 or 1
// naming file, line, key and value), then serves: it takes the listening
// sockets from systemd (socket activation) or binds its own, and serves each
// client in a worker process, preforked (a pool between prefork and maxfork
// workers that accept by themselves), forked per client (with spare workers
// started ahead), or in this one process (nofork). On SIGHUP the master reads
// the configuration again and starts a new generation of workers with it, or
// refuses it whole and keeps serving.
//
// Workers are this same binary, re-executed: everything main does before
// Main (or Run), it does again in every worker. That is how a worker gets
// the hooks. Keep that code quick and free of side effects that must happen
// once (open files, start goroutines and connect to databases in
// OnChildStart instead); in a worker Main does not return. Workers never
// read the configuration: each gets a private copy of its generation's
// settings, which Settings returns.
//
// Where each hook runs: OnProcess, OnAcceptOK (prefork), OnClose,
// OnChildStart, OnChildExit, OnPreforkChildIdle and OnSSLError run in the
// worker, on its serving goroutine, one client at a time; OnChildSigUSR1/2
// and OnChildSigHUP on the worker's signal goroutine, beside OnProcess. The
// master's hooks (OnServerBegin, OnListenOK, OnForkOK, OnSigChild,
// OnSigUSR1/2, OnSigHUP, OnForkingIdle, OnMaxforked, OnAcceptOK in forking
// mode, OnServerClose) run on its supervisor goroutine, one at a time; one
// that blocks stops the supervisor, and the watchdog restarts the service.
// In nofork the worker is a goroutine of the master: both sets run, side by
// side.
//
// The lower level: New(Options, Hooks) and Server.Run, with Server.Load and
// Server.Decode for settings, or Server.Reload and Server.Carry.
//
// Packages: config (options, YAML, flags), hooks (the hook set and the one
// call site of each), activation (sockets from systemd or bound, TLS), pool
// (the server: supervisor, workers, scoreboard, signals; see its README).
package waiter
