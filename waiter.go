package waiter

import (
	"github.com/waiter-go/waiter/config"
	"github.com/waiter-go/waiter/hooks"
	"github.com/waiter-go/waiter/pool"
)

// Server is a waiter server; see package pool for its methods.
type Server = pool.Server

// Options are a server's settings; see package config.
type Options = config.Options

// Hooks are the functions a server calls; see package hooks.
type Hooks = hooks.Set

// Exit codes of Run.
const (
	ExitOK     = pool.ExitOK
	ExitConfig = pool.ExitConfig
	ExitListen = pool.ExitListen
)

// ErrStopWorker, returned by OnProcess, ends a prefork worker after its
// client without a warning.
var ErrStopWorker = hooks.ErrStopWorker

// Fatal wraps an error from OnProcess so that it ends the worker after this
// client; any other error only counts the client as failed.
func Fatal(err error) error { return hooks.Fatal(err) }

// IsWorker reports whether this process is a worker; see pool.IsWorker.
func IsWorker() bool { return pool.IsWorker() }

// DefaultOptions returns Net::Waiter's defaults: forking mode on port 9123.
func DefaultOptions() Options { return config.Default() }

// New returns a server with the given options and hooks.
func New(opts Options, h Hooks) *Server { return pool.New(opts, h) }
