package pool

import (
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// inprocHost is the supervisor's env.start and env.signal in nofork and
// Accept=yes: the pool's one worker is a goroutine of the master, locked to
// its own thread, running the same worker code a worker process runs. So
// nofork has the same readiness, STATUS, watchdog, reload, stop and
// timeouts as every other mode, from the same supervisor.
type inprocHost struct {
	s  *Server
	sb *scoreboard
	ev *events
	// connected is Accept=yes's one client socket; -1 in nofork.
	connected int
	// failed: the last worker's on_child_start failed (its exit status).
	failed atomic.Bool
}

func (h *inprocHost) start(k *kid) {
	g := k.gen.opts
	// A private copy of the generation's settings, as a worker process
	// gets: nothing the master loads later is shared with this worker.
	var settings any
	if h.s.Decode != nil && g.carry != "" {
		var err error
		if settings, err = h.s.Decode([]byte(g.carry)); err != nil {
			h.ev.spawned <- spawnRes{slot: k.slot, err: fmt.Errorf("pool: settings for the in-process worker: %w", err)}
			return
		}
	}
	w := newWorker(h.s, g.o, g.tls, h.s.log, h.sb, h.sb.Slot(k.slot), settings)
	w.inproc = true
	slot := h.sb.Slot(k.slot)
	w.report = func(ev byte) { h.ev.workers <- evWord(ev, slot) }
	k.w = w
	done := make(chan struct{})
	h.ev.spawned <- spawnRes{slot: k.slot, pid: os.Getpid(), wait: func() syscall.WaitStatus {
		<-done
		if h.failed.Swap(false) {
			return syscall.WaitStatus(exitStartFailed << 8) // as a process's exit status
		}
		return 0
	}}
	go h.run(w, done)
}

func (h *inprocHost) run(w *worker, done chan struct{}) {
	defer close(done)
	runtime.LockOSThread() // the acceptor waits in epoll_wait on this thread
	defer runtime.UnlockOSThread()
	sigDone := make(chan struct{})
	defer close(sigDone)
	go w.signalLoop(sigDone)
	h.s.onBreak(w.stopNow)
	if err := w.childStart(); err != nil {
		w.slot.Exiting()
		h.failed.Store(true)
		return
	}
	if h.connected >= 0 {
		h.serveConnected(w)
	} else {
		// Waiting without the scheduler's knowledge keeps this thread's P
		// (acceptor.wait); with one P the supervisor would wait for it.
		w.acceptLoop(h.s.listenFds(), runtime.GOMAXPROCS(0) > 1)
	}
	w.slot.Exiting()
	h.s.childExit()
}

// serveConnected serves the one client systemd passed (Accept=yes, inetd
// style); the supervisor then stops, and systemd starts one instance per
// connection.
func (h *inprocHost) serveConnected(w *worker) {
	fd, err := unix.FcntlInt(uintptr(h.connected), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		w.log.Errorf("waiter: connected socket: %v", err)
		return
	}
	w.slot.Idle()
	w.report(evReady)
	w.slot.Busy()
	_, failed := w.serveFd(fd, nil, true)
	w.slot.Done(failed)
}

func (h *inprocHost) signal(k *kid, sig syscall.Signal) {
	switch sig {
	case syscall.SIGKILL:
		k.w.abort()
	case syscall.SIGQUIT:
		// A process would write every goroutine's stack and die; here the
		// stacks are logged and the client closed, which ends most hooks.
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		h.s.log.WithField("STACK", string(buf[:n])).Error("waiter: request_timeout: goroutine stacks of the in-process worker")
		k.w.abort()
	default:
		k.w.signal(sig)
	}
}
