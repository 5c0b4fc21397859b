package pool

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/activation"
)

// Messages a worker writes on the event pipe: 4 bytes, atomic (< PIPE_BUF),
// the kind in the top byte and the slot in the rest.
const (
	evReady = 1 // the worker can take clients
	evGrow  = 2 // the last idle prefork worker just took a client
)

func sendEvent(kind byte, slot int) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(kind)<<24|uint32(slot)&0xffffff)
	unix.Write(fdEvents, b[:])
}

// runWorker is the whole life of a worker process. It never returns.
func (s *Server) runWorker() {
	wi, err := readWorkerInfo()
	if err != nil {
		fmt.Fprintf(os.Stderr, "waiter: %v\n", err)
		os.Exit(ExitConfig)
	}
	s.child = true
	s.master = wi.master
	nameProcess()
	s.Options = wi.opts
	s.setupLog()
	if s.Carry != nil && wi.carry != "" {
		if err := json.Unmarshal([]byte(wi.carry), s.Carry); err != nil {
			s.exitWorker(ExitConfig, fmt.Sprintf("%s: %v", envCarry, err))
		}
	}
	// The inherited fds must not leak into programs a hook may start.
	for fd := fdScoreboard; fd < fdFirst+max(1, len(wi.names)); fd++ {
		unix.CloseOnExec(fd)
	}
	go s.watchLifeline()
	sb, err := OpenScoreboard(fdScoreboard)
	if err != nil {
		s.exitWorker(ExitConfig, err.Error())
	}
	s.sb = sb
	s.slot = sb.Slot(wi.slot)
	s.slot.SetPID(os.Getpid())
	s.tlsFd = wi.tlsFd
	if err := s.loadTLS(); err != nil {
		s.exitWorker(ExitConfig, err.Error())
	}
	// INT reaches workers too when a terminal's ^C hits the process group:
	// the master turns it into a graceful stop, so workers ignore it.
	// TTIN/TTOU are the master's (resize); their default action would stop
	// a worker that `systemctl kill -s TTIN` reached by mistake.
	signal.Ignore(syscall.SIGINT, syscall.SIGPIPE, syscall.SIGTTIN, syscall.SIGTTOU)
	var stop atomic.Bool
	var wake func()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		for sig := range sigs {
			switch sig {
			case syscall.SIGTERM:
				stop.Store(true)
				if wake != nil {
					wake()
				}
			case syscall.SIGUSR1:
				s.hk.ChildSigUSR1()
			case syscall.SIGUSR2:
				s.hk.ChildSigUSR2()
			case syscall.SIGHUP:
				s.hk.ChildSigHUP()
			}
		}
	}()
	s.hk.ChildStart()
	switch wi.role {
	case roleWorker:
		runtime.LockOSThread() // the acceptor waits in epoll_wait on this thread
		acc, err := newAcceptor(s.inheritListeners(wi.names))
		if err != nil {
			s.exitWorker(ExitConfig, err.Error())
		}
		wake = acc.wake
		acc.wasted = s.slot.Wasted
		acc.raw = true // this thread does nothing else while it waits (see acceptor.wait)
		s.onBreak(acc.wake)
		s.preforkLoop(acc, &stop)
	case roleOneshot:
		s.oneshot(wi.handoff)
	default:
		s.exitWorker(ExitConfig, fmt.Sprintf("%s=%q: unknown role", envRole, wi.role))
	}
	s.exitWorker(0, "")
}

// nameProcess gives the worker the program's name in /proc/PID/comm (what
// top, pgrep and journald's _COMM show): exec of /proc/self/exe named it
// "exe". /proc/self/comm is the thread group leader's.
func nameProcess() {
	name := os.Args[0]
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	if len(name) > 15 {
		name = name[:15]
	}
	os.WriteFile("/proc/self/comm", []byte(name), 0)
}

// exitWorker ends a worker: the one place a worker exits. on_child_exit runs
// on a normal end; a worker that cannot start or whose master is gone exits
// without it.
func (s *Server) exitWorker(code int, why string) {
	if s.sb != nil {
		s.slot.Exiting()
	}
	if why != "" {
		s.log.Errorf("waiter: worker exits: %s", why)
	} else {
		s.hk.ChildExit()
	}
	os.Exit(code)
}

// watchLifeline exits the worker when the master is gone: the pipe's write
// end lives only in the master, so EOF means it has exited, however it died.
// (Pdeathsig is the backstop.)
func (s *Server) watchLifeline() {
	var b [1]byte
	for {
		n, err := unix.Read(fdLifeline, b[:])
		if err == unix.EINTR {
			continue
		}
		if n == 0 || err != nil {
			s.exitWorker(1, "the master is gone")
		}
	}
}

func (s *Server) inheritListeners(names []string) []int {
	fds := make([]int, len(names))
	for i, n := range names {
		fds[i] = fdFirst + i
		unix.CloseOnExec(fds[i])
		s.sockets = append(s.sockets, &activation.Socket{Fd: fds[i], Name: n, Listening: true, Inherited: true})
	}
	return fds
}

// retireAfter staggers max_requests by up to 10% per worker, so that workers
// started together do not all retire together (gunicorn's jitter).
func retireAfter(max int) uint64 {
	if max <= 0 {
		return 0
	}
	return uint64(max + rand.IntN(max/10+1))
}

// preforkLoop accepts and serves clients one at a time until a stop, a
// reload (TERM from the master), px_idle, max_requests or on_process's error
// ends it.
func (s *Server) preforkLoop(acc *acceptor, stop *atomic.Bool) {
	o := &s.Options
	limit := retireAfter(o.MaxRequests)
	fixed := o.FixedPool()
	s.slot.Idle()
	sendEvent(evReady, s.slot.Index())
	idleSince := time.Now()
	var served uint64
	for !stop.Load() && !s.broken.Load() {
		fd, _, err := acc.accept(o.Timeout.D())
		switch {
		case err == nil:
		case errors.Is(err, errTimeout):
			s.slot.Beat()
			s.hk.PreforkIdle()
			if !fixed && time.Since(idleSince) >= o.PxIdle.D() {
				if _, all := s.sb.Counts(); all > s.sb.target() {
					s.log.Debugf("waiter: idle for %s: exiting", o.PxIdle)
					return
				}
				idleSince = time.Now()
			}
			continue
		case errors.Is(err, errWoken):
			continue
		default:
			s.acceptFailed(err)
			continue
		}
		if s.slot.Busy() {
			sendEvent(evGrow, s.slot.Index())
		}
		c, err := fdConn(fd)
		if err != nil {
			s.acceptFailed(fmt.Errorf("accepted socket: %w", err))
			s.slot.Done(true)
			s.slot.Idle()
			continue
		}
		more, failed := s.serve(c, true)
		s.slot.Done(failed)
		served++
		if !more {
			return
		}
		if limit > 0 && served >= limit {
			s.log.Debugf("waiter: served %d clients (max_requests): exiting", served)
			return
		}
		s.slot.Idle()
		idleSince = time.Now()
	}
}

// oneshot serves exactly one client, the forking mode's worker. A spare
// (handoff) starts ahead of need and waits for the master to pass it the
// client over a socket; it runs on_child_start before waiting, so a user's
// per-process set-up is hidden from the client too.
func (s *Server) oneshot(handoff bool) {
	fd := fdFirst
	if handoff {
		s.slot.Idle()
		sendEvent(evReady, s.slot.Index())
		var err error
		fd, err = waitClient(fdFirst)
		if err != nil {
			if errors.Is(err, errNoClient) {
				return // retired by the master (stop, reload)
			}
			s.exitWorker(1, err.Error())
		}
	}
	s.slot.Busy()
	c, err := fdConn(fd)
	if err != nil {
		s.slot.Done(true)
		s.exitWorker(1, "client socket: "+err.Error())
	}
	_, failed := s.serve(c, false)
	s.slot.Done(failed)
}

var errNoClient = errors.New("pool: handoff closed with no client")

// waitClient waits for the client on the hand-off socket in the netpoller
// and closes the socket. Not in a blocking recvmsg(2): a goroutine back from
// a system call that blocked for long is preempted at once by sysmon and
// moved to another thread, on the client's time. The socket is this
// process's alone (the master closed its copy after the fork), so its
// O_NONBLOCK is ours to set.
func waitClient(sock int) (int, error) {
	if err := unix.SetNonblock(sock, true); err != nil {
		return -1, fmt.Errorf("pool: handoff socket: %w", err)
	}
	f := os.NewFile(uintptr(sock), "handoff")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("pool: handoff socket: %w", err)
	}
	fd := -1
	var rerr error
	if err := rc.Read(func(s uintptr) bool {
		fd, rerr = recvFD(int(s))
		return !errors.Is(rerr, unix.EAGAIN)
	}); err != nil {
		return -1, fmt.Errorf("pool: handoff socket: %w", err)
	}
	return fd, rerr
}

// recvFD waits for one fd sent with SCM_RIGHTS on sock.
func recvFD(sock int) (int, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("pool: handoff recvmsg: %w", err)
		}
		if n == 0 && oobn == 0 {
			return -1, errNoClient
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			return -1, fmt.Errorf("pool: handoff: no fd in the message")
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			return -1, fmt.Errorf("pool: handoff: want one fd, have %d", len(fds))
		}
		return fds[0], nil
	}
}

// sendFD passes fd to a spare.
func sendFD(sock, fd int) error {
	return unix.Sendmsg(sock, []byte{1}, unix.UnixRights(fd), nil, 0)
}
