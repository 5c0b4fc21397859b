package pool

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// stopCtx is a worker's context, the parent of each client's: Done when
// the worker is told to stop (a stop, a reload, px_idle, TTOU), with the
// deadline by which the master will kill it. A context.WithCancel would
// do but for the deadline, which is known only when the stop comes.
type stopCtx struct {
	done     chan struct{}
	once     sync.Once
	deadline atomic.Int64 // unix ns; 0 while running
}

func newStopCtx() *stopCtx { return &stopCtx{done: make(chan struct{})} }

// stop cancels the context; the worker will be killed at killAt.
func (c *stopCtx) stop(killAt time.Time) {
	c.once.Do(func() {
		c.deadline.Store(killAt.UnixNano())
		close(c.done)
	})
}

func (c *stopCtx) Deadline() (time.Time, bool) {
	if d := c.deadline.Load(); d != 0 {
		return time.Unix(0, d), true
	}
	return time.Time{}, false
}

func (c *stopCtx) Done() <-chan struct{} { return c.done }

func (c *stopCtx) Err() error {
	select {
	case <-c.done:
		return context.Canceled
	default:
		return nil
	}
}

func (c *stopCtx) Value(any) any { return nil }

func (c *stopCtx) String() string { return "waiter worker context" }

// serverKey is the context key of the *Server serving a client.
type serverKey struct{}

// ServerFrom returns the server that is serving the client whose context
// ctx is (OnProcess's), or nil.
func ServerFrom(ctx context.Context) *Server {
	s, _ := ctx.Value(serverKey{}).(*Server)
	return s
}

// settingsKey is the context key of the worker's copy of the settings.
type settingsKey struct{}

// SettingsFrom returns the program's settings (Server.Load's, as decoded
// for this worker) from OnProcess's context, or nil.
func SettingsFrom(ctx context.Context) any { return ctx.Value(settingsKey{}) }
