package waiter

import (
	"context"

	"github.com/sirupsen/logrus"

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

// NewLogger is the logger a server uses when given none: text on stderr, or
// journald's native entries (PRIORITY from the level) under systemd. Use it
// to log before Run; set it as Server.Logger or App.Logger to share it.
func NewLogger(debug bool) *logrus.Logger { return pool.NewLogger(debug, hooks.Set{}) }

// ExitCode turns Run's error into Net::Waiter's exit status: 0, 1 (bad
// options or environment), 100 (the listen socket cannot be created).
func ExitCode(err error) int { return pool.ExitCode(err) }

// Run's errors wrap one of these; see pool.ErrConfig.
var (
	ErrConfig = pool.ErrConfig
	ErrListen = pool.ErrListen
	ErrStuck  = pool.ErrStuck
)

// ServerFrom returns the server serving OnProcess's context.
func ServerFrom(ctx context.Context) *Server { return pool.ServerFrom(ctx) }

// DefaultOptions returns Net::Waiter's defaults: forking mode on port 9123.
func DefaultOptions() Options { return config.Default() }

// New returns a server with the given options and hooks.
func New(opts Options, h Hooks) *Server { return pool.New(opts, h) }
