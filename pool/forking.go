package pool

import (
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Forking mode: the master accepts, on its own locked thread, and the
// supervisor hands each client to a spare or starts a worker with it.

type acceptEv struct {
	fd      int
	ln      int // the listener's index
	err     error
	timeout bool
}

// forkAcceptor is the accept loop's handle. Its goroutine reads only what
// is here (the timeout is an atomic it owns a copy of), never the
// supervisor's state: a reload that changed the options raced with it once.
type forkAcceptor struct {
	acc     *acceptor
	out     chan acceptEv
	quit    atomic.Bool
	timeout atomic.Int64
	closed  bool // the supervisor's: out was closed and drained
}

func startForkAcceptor(fds []int, timeout time.Duration) (*forkAcceptor, error) {
	acc, err := newAcceptor(fds)
	if err != nil {
		return nil, err
	}
	fa := &forkAcceptor{acc: acc, out: make(chan acceptEv, 16)}
	fa.timeout.Store(int64(timeout))
	go fa.loop()
	return fa, nil
}

// loop sends every client, timeout and error to the supervisor, which
// alone runs hooks. It ends when told to stop, closing out.
func (fa *forkAcceptor) loop() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(fa.out)
	defer fa.acc.close()
	for !fa.quit.Load() {
		fd, _, err := fa.acc.accept(time.Duration(fa.timeout.Load()))
		switch {
		case err == nil:
			fa.out <- acceptEv{fd: fd, ln: fa.acc.last}
		case err == errTimeout:
			fa.out <- acceptEv{fd: -1, timeout: true}
		case err == errWoken:
		case err == errShutdown:
			return
		default:
			fa.out <- acceptEv{fd: -1, err: err}
		}
	}
}

func (fa *forkAcceptor) setTimeout(d time.Duration) { fa.timeout.Store(int64(d)) }
func (fa *forkAcceptor) stop()                      { fa.quit.Store(true); fa.acc.wake() }
func (fa *forkAcceptor) finished()                  { fa.closed = true }

// accepted hands a forking-mode client to a spare, or to a new worker, or
// refuses it at maxfork (on_maxforked, on_close).
func (sv *supervisor) accepted(a acceptEv) {
	switch {
	case a.timeout:
		sv.s.hk.ForkingIdle()
		return
	case a.err != nil:
		sv.s.acceptFailed(a.err)
		return
	}
	fd := a.fd
	if sv.stopping {
		unix.Close(fd) // accepted as the stop began: nobody will serve it
		return
	}
	var c net.Conn
	if sv.s.hk.HasAcceptOK() {
		if c = viewConn(fd); c != nil {
			sv.s.accepted(c)
		}
	}
	if sv.census().serving+len(sv.waiting) < sv.cur.opts.o.Maxfork {
		if c != nil {
			c.Close() // the master's view only; the worker has its own fd
		}
		if sv.handToSpare(a) {
			return
		}
		if sv.room(sv.census()) > 0 {
			sv.addOneshot(a)
			return
		}
		// Below maxfork but every start slot is taken (a burst): the
		// client waits here for one (startWaiting), not refused.
		sv.waiting = append(sv.waiting, a)
		return
	}
	if ok, held := sv.warn.allow("maxfork"); ok {
		msg := fmt.Sprintf("waiter: maxfork (%d) workers busy: refusing a client", sv.cur.opts.o.Maxfork)
		if held > 0 {
			msg += fmt.Sprintf(" (and %d more since the last line)", held)
		}
		sv.log.Warn(msg)
	}
	if c == nil && sv.s.hk.HasMaxforked() {
		c = viewConn(fd)
	}
	if c != nil {
		sv.s.hk.Maxforked(c)
		sv.s.closeClient(c)
	}
	unix.Close(fd)
}

// startWaiting starts a worker for each client that waits for a start
// slot, as room allows; at a stop they are closed.
func (sv *supervisor) startWaiting() {
	for len(sv.waiting) > 0 {
		if sv.stopping {
			unix.Close(sv.waiting[0].fd)
		} else if sv.room(sv.census()) > 0 {
			sv.addOneshot(sv.waiting[0])
		} else {
			return
		}
		sv.waiting = sv.waiting[1:]
	}
}

// addOneshot starts a worker with the client; the slot learns its listener
// for the per-listener counts (the worker counts it when done).
func (sv *supervisor) addOneshot(a acceptEv) {
	k := sv.add(kindOneshot, a.fd)
	sv.sb.Slot(k.slot).setListener(a.ln)
}

// handToSpare passes the client to a waiting spare; false when none took it.
func (sv *supervisor) handToSpare(a acceptEv) bool {
	fd := a.fd
	for _, k := range sv.waitingSpares() {
		sv.sb.Slot(k.slot).setListener(a.ln)
		err := sendFD(k.handoff, fd)
		sv.closeHandoff(k)
		if err != nil {
			sv.log.Warnf("waiter: handing a client to spare pid %d: %v", k.pid, err)
			sv.retire(k, sv.env.now().Add(sv.cur.opts.o.GracefulTimeout.D()))
			continue
		}
		k.client = true
		unix.Close(fd)
		return true // its replacement: see want()
	}
	return false
}

// waitingSpares are the spares ready for a client: of the current
// generation, or of the serving one while a reload starts its spares.
func (sv *supervisor) waitingSpares() []*kid {
	var out []*kid
	for _, k := range sv.kids {
		if k.kind == kindSpare && !k.client && k.state == kReady && k.handoff >= 0 {
			out = append(out, k)
		}
	}
	return out
}

// viewConn is a net.Conn on a duplicate of fd, for hooks that run in the
// master; fd itself stays the worker's.
func viewConn(fd int) net.Conn {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	c, err := fdConn(d)
	if err != nil {
		return nil
	}
	return c
}
