// Package hooks is the set of functions a waiter user registers, one per
// event of Net::Waiter's life cycle, and the one place that calls them.
//
// A user fills a Set; the server wraps it in an internal/hookrun.Runner. Every field of Set is
// called by exactly one Runner method, and every Runner method is called from
// exactly one place in package pool (a test checks both), so the call site of
// any hook is found with one search for its Runner method.
//
// Where a hook runs: "master" is the process that owns the listeners; a
// "worker" is the same binary re-executed by the master. In nofork mode the
// master serves clients itself and runs the worker-side hooks too.
package hooks

import (
	"context"
	"errors"
	"net"
	"syscall"

	"github.com/sirupsen/logrus"
)

// Set holds the hook functions. A nil field does nothing, except OnProcess:
// a server refuses to start without it.
type Set struct {
	// OnServerBegin runs in the master before any listen socket is opened.
	OnServerBegin func()
	// OnListenOK runs in the master when the listen sockets are ready and no
	// client is accepted yet.
	OnListenOK func()
	// OnAcceptError runs in the process that called accept when it failed
	// (not for the timeouts that drive the idle hooks).
	OnAcceptError func(err error)
	// OnAcceptOK runs in the process that accepted the client: the master in
	// nofork and forking modes, the worker in prefork mode.
	OnAcceptOK func(c net.Conn)
	// OnForkOK runs in the master when a worker process has been started.
	OnForkOK func(pid int)
	// OnProcess serves one client; it is the only hook that must be set.
	// An error it returns counts the client as failed, and the worker goes
	// on; ErrStopWorker (no warning), an error wrapped with Fatal, or a
	// panic end the worker after this client. An I/O error the client
	// caused (reset, EOF, broken pipe, client_timeout) is logged at debug.
	//
	// ctx is cancelled when the worker is told to stop (a stop, a reload,
	// px_idle, TTOU), and its deadline is then when the worker will be
	// killed (graceful_timeout): a long session can tell its client it is
	// going away. See waiter.ServerFrom for the
	// server and the program's settings.
	OnProcess func(ctx context.Context, c net.Conn) error
	// OnPreforkChildIdle runs in a prefork worker each time the accept
	// timeout passes with no client.
	OnPreforkChildIdle func()
	// OnForkingIdle runs in the forking-mode master each time the accept
	// timeout passes with no client, and only then.
	OnForkingIdle func()
	// OnMaxforked runs in the forking-mode master when a client arrives while
	// maxfork workers are busy; the client is closed right after (OnClose
	// runs too). c is the TCP connection as accepted: with TLS, before any
	// handshake (one in the master would let a slow client stall it), so
	// what is written there is not TLS; with PROXY, its address is the
	// balancer's (the header is read only in a worker).
	OnMaxforked func(c net.Conn)
	// OnSourceLimited runs in the serving process when a client's address
	// (after PROXY) already has max_per_source clients served across the
	// pool; the client is closed right after (OnClose runs too), and the
	// others are served. c.RemoteAddr() is the limited address. With TLS it
	// runs after the handshake, with the *tls.Conn.
	OnSourceLimited func(c net.Conn)
	// OnChildStart runs in a worker after its set-up, before it serves. An
	// error ends the worker before it takes a client; the master backs off
	// before the next start (100 ms doubling to 5 s), and the error is
	// logged once per run of failures, not once per worker.
	OnChildStart func() error
	// OnChildExit runs in a worker just before it exits.
	OnChildExit func()
	// OnClose runs right before a client connection is closed.
	OnClose func(c net.Conn)
	// OnServerClose runs in the master right before the listen sockets are
	// closed; it is the last hook of Run.
	OnServerClose func()
	// OnSSLError runs where a TLS handshake failed; err is a *TLSError with
	// the peer address.
	OnSSLError func(err error)
	// OnSigChild runs in the master each time a worker has exited and been
	// reaped, with its pid and wait status.
	OnSigChild func(pid int, status syscall.WaitStatus)
	// OnSigUSR1, OnSigUSR2 and OnSigHUP run in the master on those signals
	// (HUP also reloads).
	OnSigUSR1, OnSigUSR2, OnSigHUP func()
	// OnChildSigUSR1, OnChildSigUSR2 and OnChildSigHUP run in a worker on
	// those signals (with prop_sigusr, the master forwards USR1/USR2).
	OnChildSigUSR1, OnChildSigUSR2, OnChildSigHUP func()

	// Log and LogDebug, when set, receive waiter's own log lines instead of
	// logrus (LogDebug only when debug is on). Setting Log alone silences
	// debug lines unless LogDebug is set too.
	Log      func(level logrus.Level, msg string, fields logrus.Fields)
	LogDebug func(msg string, fields logrus.Fields)
}

// ErrStopWorker, returned by OnProcess, ends a prefork worker after this
// client without logging a warning.
var ErrStopWorker = errors.New("hooks: on_process asked the worker to stop")

// ErrFatal marks an error from OnProcess that must end the worker after
// this client (its state is broken: a lost database handle, a corrupt
// cache). Wrap an error with Fatal, or with fmt.Errorf("...: %w", ErrFatal).
// Any other error is counted as the client's failure and the worker goes on.
var ErrFatal = errors.New("hooks: fatal to the worker")

// Fatal wraps err so that it ends the worker (errors.Is(err, ErrFatal)),
// keeping err for errors.Is and errors.As.
func Fatal(err error) error {
	if err == nil {
		return nil
	}
	return fatalError{err}
}

type fatalError struct{ err error }

func (e fatalError) Error() string   { return e.err.Error() }
func (e fatalError) Unwrap() []error { return []error{e.err, ErrFatal} }

// ErrNoProcess is returned when a Set without OnProcess is run.
var ErrNoProcess = errors.New("hooks: on_process is not set: a server needs it to serve clients")

// TLSError is what OnSSLError receives: the handshake error and the peer.
type TLSError struct {
	Peer net.Addr
	Err  error
}

func (e *TLSError) Error() string {
	peer := "unknown peer"
	if e.Peer != nil {
		peer = e.Peer.String()
	}
	return "tls handshake with " + peer + ": " + e.Err.Error()
}

func (e *TLSError) Unwrap() error { return e.Err }
