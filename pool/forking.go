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
//
// At maxfork the master stops accepting (pause): clients wait in the
// kernel's listen backlog, as they do in prefork mode, and are taken as
// workers finish. Only when the pool has stayed full for maxfork_wait does
// it accept again and hand each client to on_maxforked (shed), until a
// worker frees.

type acceptEv struct {
	fd      int
	ln      int // the listener's index
	err     error
	timeout bool
	at      time.Time // when it began to wait in the master (sv.waiting)
}

// forkAcceptor is the accept loop's handle. Its goroutine reads only what
// is here (the timeout is an atomic it owns a copy of), never the
// supervisor's state: a reload that changed the options raced with it once.
type forkAcceptor struct {
	acc     *acceptor
	out     chan acceptEv
	quit    atomic.Bool
	timeout atomic.Int64
	paused  atomic.Bool
	resume  chan struct{} // cap 1: a pause ended, or the stop
	closed  bool          // the supervisor's: out was closed and drained
}

func startForkAcceptor(fds []int, timeout time.Duration) (*forkAcceptor, error) {
	acc, err := newAcceptor(fds)
	if err != nil {
		return nil, err
	}
	fa := &forkAcceptor{acc: acc, out: make(chan acceptEv, 16), resume: make(chan struct{}, 1)}
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
		if fa.paused.Load() {
			<-fa.resume // the pool is full: clients wait in the backlog
			continue
		}
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
func (fa *forkAcceptor) stop()                      { fa.quit.Store(true); fa.acc.wake(); fa.kick() }
func (fa *forkAcceptor) finished()                  { fa.closed = true }

// setPaused stops or resumes accepting. A pause ends a wait in accept at
// once (the wake pipe); a client it had already taken still comes.
func (fa *forkAcceptor) setPaused(p bool) {
	if fa.paused.Swap(p) == p {
		return
	}
	if p {
		fa.acc.wake()
	} else {
		fa.kick()
	}
}

func (fa *forkAcceptor) kick() {
	select {
	case fa.resume <- struct{}{}:
	default:
	}
}

// maxQueued bounds the clients the master holds at maxfork: those the
// accept loop took before its pause (its channel's 16 and one in hand) and
// slack. Past it a client is shed at once, a bound and not a path.
const maxQueued = 64

// pace pauses the accept loop while the pool is full and resumes it when a
// worker frees, or when the pool has been full for maxfork_wait (to shed).
func (sv *supervisor) pace(now time.Time) {
	if sv.mode != modeForking {
		return
	}
	full := !sv.stopping && sv.census().serving+len(sv.waiting) >= sv.cur.opts.o.Maxfork
	switch {
	case !full && !sv.fullSince.IsZero() && !sv.stopping && sv.backlogged():
		// A worker freed, and clients wait in the kernel's queue: the
		// next one fills the pool again. The overload goes on, and so
		// does its maxfork_wait (reset at each free, a steady stream of
		// clients never reached it and waited without bound).
	case !full:
		if sv.shedding && !sv.stopping {
			sv.log.Infof("waiter: a worker is free again: queueing clients at maxfork, no more shedding")
		}
		sv.fullSince, sv.shedding = time.Time{}, false
	case sv.fullSince.IsZero():
		sv.fullSince = now
	case !sv.shedding && now.Sub(sv.fullSince) >= sv.cur.opts.o.MaxforkWait.D():
		sv.shedding = true
		sv.log.Warnf("waiter: maxfork (%d) workers busy for %s (maxfork_wait): handing new clients to on_maxforked until one frees",
			sv.cur.opts.o.Maxfork, sv.cur.opts.o.MaxforkWait)
	}
	sv.accPaused = full && !sv.shedding
	if sv.acc != nil {
		sv.acc.setPaused(sv.accPaused)
	}
	if sv.shedding {
		sv.shedWaiting(now)
	}
}

// backlogged says whether clients wait in a listener's accept queue (the
// kernel's TCP_INFO; a unix socket cannot say, and counts as not).
func (sv *supervisor) backlogged() bool {
	for _, sk := range sv.s.sockets {
		if n, _, err := sk.Queue(); err == nil && n > 0 {
			return true
		}
	}
	return false
}

// shedWaiting hands to on_maxforked, while the master sheds, the clients
// it holds that have waited maxfork_wait (counted from the overload's start
// for those taken during it): no held client waits past the bound that
// the kernel's queue has.
func (sv *supervisor) shedWaiting(now time.Time) {
	keep := sv.waiting[:0]
	for _, a := range sv.waiting {
		if now.Sub(a.at) >= sv.cur.opts.o.MaxforkWait.D() {
			sv.shedClient(a, nil)
		} else {
			keep = append(keep, a)
		}
	}
	clear(sv.waiting[len(keep):])
	sv.waiting = keep
}

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
		// Accepted before the loop saw the stop: taken from the kernel's
		// queue, so nobody else will serve it. It waits for a start like
		// the clients held at maxfork, within graceful_timeout.
		if len(sv.waiting) >= maxQueued {
			unix.Close(fd)
			if ok, _ := sv.warn.allow("drain"); ok {
				sv.log.Warnf("waiter: stopping: %d accepted clients already wait for a worker: closing another unserved", maxQueued)
			}
			return
		}
		sv.waiting = append(sv.waiting, a)
		sv.startWaiting()
		return
	}
	var c net.Conn
	// With PROXY, the client's address is known only once its worker read
	// the header: on_accept_ok runs there.
	if sv.s.hk.HasAcceptOK() && !sv.cur.opts.o.ProxyProtocol {
		if c = viewConn(fd); c != nil {
			sv.s.accepted(c)
		}
	}
	// How long it has waited is unknown (the kernel's queue keeps no
	// times): one taken while the pool is full may have queued since the
	// overload began, and is counted from then.
	a.at = sv.env.now()
	full := sv.census().serving+len(sv.waiting) >= sv.cur.opts.o.Maxfork
	if full && !sv.fullSince.IsZero() {
		a.at = sv.fullSince
	}
	if full && !sv.shedding && len(sv.waiting) < maxQueued {
		// The pool is full and this client was accepted before the pause
		// took effect: it waits here for a worker (startWaiting checks
		// maxfork), never started past it.
		if c != nil {
			c.Close()
		}
		sv.waiting = append(sv.waiting, a)
		return
	}
	if !full {
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
		// Every start slot is taken (a burst), or the pool is full and
		// this client was accepted before the pause: it waits here
		// (startWaiting), not refused.
		sv.waiting = append(sv.waiting, a)
		return
	}
	sv.shedClient(a, c)
}

// shedClient refuses a client at maxfork: on_maxforked, on_close. c is the
// master's view of it when on_accept_ok made one.
func (sv *supervisor) shedClient(a acceptEv, c net.Conn) {
	fd := a.fd
	sv.shed++
	ok, held := sv.warn.allow("maxfork")
	if c == nil && (ok || sv.s.hk.HasMaxforked()) {
		c = viewConn(fd) // for the hook, or the log line's PEER= (a line a second)
	}
	if ok {
		msg := fmt.Sprintf("waiter: maxfork (%d) workers busy for over %s: refusing a client (on_maxforked)", sv.cur.opts.o.Maxfork, sv.cur.opts.o.MaxforkWait)
		if held > 0 {
			msg += fmt.Sprintf(" (and %d more since the last line)", held)
		}
		l := sv.log
		if c != nil {
			l = l.WithField("PEER", peer(c))
		}
		l.Warn(msg)
	}
	if c != nil {
		sv.s.hk.Maxforked(c)
		sv.s.closeClient(c)
	}
	unix.Close(fd)
}

// startWaiting starts a worker for each client that waits for a start
// slot, as room allows. At a stop they are still served (they left the
// kernel's queue: closing them would lose them), up to maxfork at once,
// until graceful_timeout; then endWaiting closes the rest.
func (sv *supervisor) startWaiting() {
	for len(sv.waiting) > 0 {
		c := sv.census()
		if c.serving >= sv.cur.opts.o.Maxfork {
			return // the pool is full: it waits for a worker to finish
		} else if !sv.stopping && sv.handToSpare(sv.waiting[0]) {
		} else if sv.room(c) > 0 {
			sv.addOneshot(sv.waiting[0])
		} else {
			return
		}
		sv.waiting = sv.waiting[1:]
	}
}

// endWaiting closes the clients still waiting when graceful_timeout ends a
// stop, and says how many were lost in the stop.
func (sv *supervisor) endWaiting() {
	for _, a := range sv.waiting {
		unix.Close(a.fd)
	}
	sv.log.Warnf("waiter: stopping: graceful_timeout (%s) passed: %d accepted clients closed unserved",
		sv.cur.opts.o.GracefulTimeout, len(sv.waiting))
	sv.waiting = nil
}

// addOneshot starts a worker with the client; the slot learns its listener
// for the per-listener counts (the worker counts it when done). One
// started during a stop is told of it as the workers busy at the stop were
// (SIGTERM once it reports: its client's context is cancelled, and the hook
// can say goodbye) and is killed at the stop's deadline.
func (sv *supervisor) addOneshot(a acceptEv) {
	k := sv.add(kindOneshot, a.fd)
	sv.sb.Slot(k.slot).setListener(a.ln)
	if sv.stopping {
		sv.retire(k, sv.deadline)
	}
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
