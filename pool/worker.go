package pool

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/waiter-go/waiter/config"
)

// worker is the serving side of the pool: what a worker process runs, and
// what the one in-process worker of nofork and Accept=yes runs in the
// master. Both are driven the same way: the supervisor starts it, it reports
// ready (and asks to grow) through report, it is told to stop with stopNow,
// and its signals arrive on sigs. Only the code that creates it differs
// (worker_proc.go, inproc.go).
type worker struct {
	s    *Server
	o    config.Options
	tls  *tls.Config // nil: plain TCP
	log  *logrus.Entry
	sb   *scoreboard
	slot sbSlot
	// report tells the supervisor evReady or evGrow.
	report func(ev byte)
	// inproc is true for the worker that runs inside the master.
	inproc bool

	stop atomic.Bool
	ctx  *stopCtx                 // cancelled by stopNow: each client's context's parent
	cctx context.Context          // ctx with the server, for OnProcess
	acc  atomic.Pointer[acceptor] // set while accepting, so stopNow can wake it
	conn atomic.Pointer[connBox]  // the client being served, for a forced end
	sigs chan syscall.Signal      // HUP, USR1, USR2: the on_child_sig_* hooks
	// proxyFrom is proxy_from, parsed once (Validate checked it).
	proxyFrom []netip.Prefix
	// readProxy's buffer and go-proxyproto's reader of it, reused from
	// client to client.
	proxyBuf []byte
	proxyHdr bytes.Reader
	proxyRd  *bufio.Reader
}

// Messages a worker sends the supervisor: 4 bytes on the event pipe (atomic,
// < PIPE_BUF), or the same value on a channel from the in-process worker;
// the kind is in the top byte and the slot in the rest.
const (
	evReady = 1 // the worker can take clients
	evGrow  = 2 // the last idle prefork worker just took a client
)

// evWord packs an event: the kind (4 bits), the slot's epoch (8 bits: a
// stale event from the slot's previous worker is told apart) and the slot
// (20 bits: more than any scoreboard has).
func evWord(kind byte, sl sbSlot) uint32 {
	return uint32(kind)<<28 | (sl.Epoch()&0xff)<<20 | uint32(sl.Index())&0xfffff
}

func evParts(w uint32) (kind byte, epoch uint32, slot int) {
	return byte(w >> 28), (w >> 20) & 0xff, int(w & 0xfffff)
}

func newWorker(s *Server, o config.Options, cfg *tls.Config, log *logrus.Entry, sb *scoreboard, slot sbSlot, settings any) *worker {
	w := &worker{
		s: s, o: o, tls: cfg, log: log, sb: sb, slot: slot,
		ctx:  newStopCtx(),
		sigs: make(chan syscall.Signal, 8),
	}
	w.cctx = context.WithValue(context.WithValue(w.ctx, serverKey{}, s), settingsKey{}, settings)
	for _, f := range o.ProxyFrom {
		if p, err := config.ParseSource(f); err == nil {
			w.proxyFrom = append(w.proxyFrom, p)
		}
	}
	return w
}

// stopNow asks the worker to finish its client and end: safe from any
// goroutine, idempotent. An idle worker's wait ends at once.
func (w *worker) stopNow() {
	w.stop.Store(true)
	// The master kills a retiring worker graceful_timeout after it told it.
	w.ctx.stop(time.Now().Add(w.o.GracefulTimeout.D()))
	if a := w.acc.Load(); a != nil {
		a.wake()
	}
}

// abort ends the current client by closing its connection: the forced end
// of an in-process worker that did not finish in time (a process would be
// killed). The hook's next read or write fails.
func (w *worker) abort() {
	w.stopNow()
	if b := w.conn.Load(); b != nil {
		b.c.Close()
	}
}

// signal passes a signal to the worker's signal loop without blocking the
// sender: a flood of USR1 drops what the worker has not caught up with.
func (w *worker) signal(sig syscall.Signal) {
	if sig == syscall.SIGTERM {
		w.stopNow()
		return
	}
	select {
	case w.sigs <- sig:
	default:
	}
}

// signalLoop runs the on_child_sig_* hooks, on their own goroutine beside
// on_process, until done is closed.
func (w *worker) signalLoop(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case sig := <-w.sigs:
			switch sig {
			case syscall.SIGUSR1:
				w.s.hk.ChildSigUSR1()
			case syscall.SIGUSR2:
				w.s.hk.ChildSigUSR2()
			case syscall.SIGHUP:
				w.s.hk.ChildSigHUP()
			}
		}
	}
}

// childStart and childExit run on_child_start and on_child_exit: the one
// call site of each, for worker processes and the in-process worker alike.
// A failed on_child_start is logged by the first worker of a run of
// failures only (a flag in the scoreboard, which the master clears when a
// worker becomes ready), so that a broken set-up gives one line, not one a
// worker; the master backs off between starts meanwhile.
func (w *worker) childStart() error {
	err := w.s.hk.ChildStart()
	if err == nil {
		return nil
	}
	if w.sb.claimStartFailure() {
		w.log.WithField("HOOK", "on_child_start").Errorf("waiter: on_child_start failed: %v (workers are retried with a back-off; this is logged once until one starts)", err)
	} else {
		w.log.WithField("HOOK", "on_child_start").Debugf("waiter: on_child_start failed: %v", err)
	}
	return err
}

func (s *Server) childExit() { s.hk.ChildExit() }

// exitStartFailed is a worker's exit status when on_child_start failed.
const exitStartFailed = 3

// retireAfter staggers max_requests by up to 10% per worker, so that workers
// started together do not all retire together (gunicorn's jitter).
func retireAfter(max int) uint64 {
	if max <= 0 {
		return 0
	}
	return uint64(max + rand.IntN(max/10+1))
}

// acceptLoop accepts and serves clients one at a time until it is told to
// stop (a stop, a reload, px_idle: all decided by the master), max_requests,
// or an on_process result that ends the worker. Prefork workers and the
// nofork in-process worker run it.
func (w *worker) acceptLoop(fds []int, raw bool) {
	acc, err := newAcceptor(fds)
	if err != nil {
		w.log.Errorf("waiter: %v", err)
		return
	}
	defer acc.close()
	acc.wasted = w.slot.Wasted
	acc.raw = raw
	w.acc.Store(acc)
	defer w.acc.Store(nil)
	limit := retireAfter(w.o.MaxRequests)
	w.slot.Idle()
	w.report(evReady)
	var served uint64
	for !w.stop.Load() && !w.s.broken.Load() {
		if w.slot.retireAsked() {
			w.slot.setExitWhy(exitWhyAsked)
			w.log.Debug("waiter: the master asked this worker to end (max_worker_rss): exiting")
			return
		}
		fd, sa, err := acc.accept(w.o.Timeout.D())
		switch {
		case err == nil:
		case errors.Is(err, errTimeout):
			w.slot.Beat()
			w.idleHook()
			continue
		case errors.Is(err, errWoken):
			continue
		case errors.Is(err, errShutdown):
			return // the master shut a self-bound listener: a stop
		default:
			if !w.stop.Load() {
				w.s.acceptFailed(err)
			}
			continue
		}
		w.slot.setListener(acc.last)
		if w.slot.Busy() && !w.inproc {
			w.report(evGrow)
		}
		more, failed := w.serveFd(fd, sa, true)
		w.slot.Done(failed)
		served++
		if !more {
			w.slot.setExitWhy(exitWhyHook)
			return
		}
		if limit > 0 && served >= limit {
			w.slot.setExitWhy(exitWhyMaxRequests)
			w.log.Debugf("waiter: served %d clients (max_requests): exiting", served)
			return
		}
		w.slot.Idle()
	}
}

// idleHook is on_prefork_child_idle for a prefork worker; the nofork
// worker has no idle hook of its own (Net::Waiter had none).
func (w *worker) idleHook() {
	if !w.inproc {
		w.s.hk.PreforkIdle()
	}
}

// serveFd serves one accepted client fd; sa is its address from accept, so
// that a client that reset before we looked still has a PEER in the logs.
func (w *worker) serveFd(fd int, sa net.Addr, runAcceptOK bool) (more, failed bool) {
	var from net.Addr
	var rest []byte
	var perr error
	if w.o.ProxyProtocol {
		// On the raw fd, before it is a net.Conn: a read (a poll when the
		// header comes in pieces) on this worker's own thread, not the
		// netpoller and a timer for every client.
		from, rest, perr = w.readProxy(fd, sa)
	}
	c, err := fdConn(fd)
	if err != nil {
		w.s.acceptFailed(fmt.Errorf("accepted socket: %w", err))
		return true, true
	}
	if c.RemoteAddr() == nil && sa != nil {
		c = &peerConn{Conn: c, peer: sa}
	}
	if perr != nil {
		w.slot.setPeer(addrPort(c.RemoteAddr()))
		w.warnf("proxy", c, "waiter: %v: closed", perr)
		c.Close()
		return true, true
	}
	if from != nil || len(rest) > 0 {
		if from == nil {
			from = c.RemoteAddr() // a LOCAL header: the balancer's own
		}
		c = &peerConn{Conn: c, peer: from, rest: rest}
	}
	return w.serve(c, runAcceptOK)
}

// peerConn supplies the address accept(2) returned when getpeername(2)
// no longer can (the client reset first), or the one a PROXY header
// carried; rest is what the client sent after that header in the reads
// that took it, which Read returns before the socket's.
type peerConn struct {
	net.Conn
	peer net.Addr
	rest []byte
}

func (c *peerConn) RemoteAddr() net.Addr { return c.peer }

// Unwrap gives the socket's own conn (to set its options): read through c,
// which returns rest first.
func (c *peerConn) Unwrap() net.Conn { return c.Conn }

func (c *peerConn) Read(b []byte) (int, error) {
	if len(c.rest) > 0 {
		n := copy(b, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
