package pool

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/activation"
)

// acceptor waits for clients on raw listening sockets with its own epoll set,
// outside Go's netpoller, on the calling goroutine's OS thread.
//
// Why not net.Listener.Accept: every prefork worker waits on the same socket,
// and the netpoller registers it edge-triggered without EPOLLEXCLUSIVE, so
// each connection would wake every idle worker (the thundering herd measured
// in DESIGN.md: 0.60x with 8 workers, 0.33x with 32). EPOLLEXCLUSIVE makes
// the kernel wake one waiter per connection. The sockets stay non-blocking
// (O_NONBLOCK is shared by every copy of them, including systemd's), so no
// process ever depends on or changes their mode.
//
// A wake pipe is in the set too, so that a stop or reload ends the wait at
// once, with no client accepted and then dropped.
type acceptor struct {
	// wasted is called for a wake-up that found no client (EAGAIN).
	wasted  func()
	ep      int
	fds     []int
	wakeR   int
	wakeW   int
	events  []unix.EpollEvent
	pending []int // listener indexes reported ready, not yet tried
	raw     bool  // wait without the scheduler's knowledge (see wait)
	last    int   // the listener index of the last accepted client
	// pause grows after each accept error (EMFILE and the like) and is
	// slept before the next try: the listener stays readable, and without
	// it a level-triggered wait would spin and flood the log.
	pause time.Duration
}

var errWoken = errors.New("pool: acceptor woken")
var errTimeout = errors.New("pool: accept timed out")

// errShutdown: the listener no longer listens (the master shut a
// self-bound socket down at a stop). The caller stops accepting.
var errShutdown = errors.New("pool: the listener was shut down")

func newAcceptor(fds []int) (*acceptor, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("pool: epoll: %w", err)
	}
	a := &acceptor{ep: ep, fds: fds, events: make([]unix.EpollEvent, len(fds)+1)}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		unix.Close(ep)
		return nil, fmt.Errorf("pool: wake pipe: %w", err)
	}
	a.wakeR, a.wakeW = p[0], p[1]
	for i, fd := range fds {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(i)}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			a.close()
			return nil, fmt.Errorf("pool: epoll add listener fd %d: %w", fd, err)
		}
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, a.wakeR, &ev); err != nil {
		a.close()
		return nil, fmt.Errorf("pool: epoll add wake pipe: %w", err)
	}
	return a, nil
}

// wake ends the current or next wait with errWoken. Safe from any goroutine
// and from a signal-handling goroutine.
func (a *acceptor) wake() { unix.Write(a.wakeW, []byte{1}) }

// accept returns a connected, close-on-exec, blocking fd and the client's
// address; errTimeout when timeout passed with no client; errWoken after
// wake. Other errors are accept(2)'s, for on_accept_error; the caller goes on.
//
// The fd is left blocking on purpose: os.NewFile then does not register it in
// the netpoller, and net.FileConn registers the duplicate it makes.
func (a *acceptor) accept(timeout time.Duration) (int, net.Addr, error) {
	if a.pause > 0 {
		time.Sleep(a.pause)
	}
	deadline := time.Now().Add(timeout)
	for {
		for len(a.pending) > 0 {
			i := a.pending[0]
			a.pending = a.pending[1:]
			nfd, sa, err := unix.Accept4(a.fds[i], unix.SOCK_CLOEXEC)
			switch {
			case err == nil:
				a.pause = 0
				a.last = i
				return nfd, activation.SockaddrToAddr(sa), nil
			case err == unix.EAGAIN:
				// Another process took it: a wasted wake-up, counted so
				// the herd can be measured.
				if a.wasted != nil {
					a.wasted()
				}
				continue
			case err == unix.EINTR || err == unix.ECONNABORTED:
				continue // the client left before we took it
			case err == unix.EINVAL:
				a.pending = a.pending[:0]
				return -1, nil, errShutdown
			default:
				a.pause = min(max(2*a.pause, 5*time.Millisecond), time.Second)
				a.pending = a.pending[:0]
				return -1, nil, fmt.Errorf("accept on fd %d: %w", a.fds[i], err)
			}
		}
		// Rounded up: a sub-millisecond timeout must still wait (and look
		// for a client) once, not time out before it ever looked.
		left := time.Until(deadline)
		if left <= 0 {
			return -1, nil, errTimeout
		}
		ms := int((left + time.Millisecond - 1) / time.Millisecond)
		n, err := a.wait(ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, nil, fmt.Errorf("epoll_wait: %w", err)
		}
		woken := false
		for _, ev := range a.events[:n] {
			if ev.Fd < 0 {
				woken = true
				continue
			}
			a.pending = append(a.pending, int(ev.Fd))
		}
		if woken {
			var buf [64]byte
			unix.Read(a.wakeR, buf[:])
			a.pending = a.pending[:0]
			return -1, nil, errWoken
		}
	}
}

func (a *acceptor) close() {
	unix.Close(a.ep)
	unix.Close(a.wakeR)
	unix.Close(a.wakeW)
}

// wait is epoll_wait(2). With raw set it is made without telling the Go
// scheduler (no entersyscall): the thread keeps its P while it sleeps in the
// kernel, so that its return costs no P hand-off and does not wake sysmon,
// which otherwise polls every 20 µs for a while after each wake-up (measured
// at ~2 extra context switches per client). The runtime still preempts the
// thread with a signal when it needs to (GC, a 10 ms time slice): epoll_wait
// then returns EINTR, and the caller's loop gives the scheduler its safe
// point. Measured with waiter-bench on 2 cores, prefork 8..32 at c=64: 0.62-
// 0.67x the baseline's conn/s waiting through the scheduler, 0.79-0.86x
// raw. Only for a thread that has nothing else to do meanwhile (a prefork
// worker's, nofork's), not the forking master's acceptor, whose P the
// supervisor loop needs. With GODEBUG=asyncpreemptoff=1 a raw wait delays
// this process's GC until a client or the accept timeout ends it.
func (a *acceptor) wait(ms int) (int, error) {
	if !a.raw {
		return unix.EpollWait(a.ep, a.events, ms)
	}
	r, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(a.ep),
		uintptr(unsafe.Pointer(&a.events[0])), uintptr(len(a.events)), uintptr(ms), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
