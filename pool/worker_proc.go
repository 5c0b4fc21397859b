package pool

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/activation"
)

// runWorker is the whole life of a worker process: the re-executed binary
// that reached Run with waiter's role variable set. It never returns.
func (s *Server) runWorker() {
	wi, err := readWorkerInfo()
	if err != nil {
		fmt.Fprintf(os.Stderr, "waiter: %v\n", err)
		os.Exit(ExitConfig)
	}
	s.child = true
	s.master = wi.master
	nameProcess()
	s.setupLog(wi.opts.Debug)
	var settings any
	switch {
	case s.Decode != nil && wi.carry != "":
		if settings, err = s.Decode([]byte(wi.carry)); err != nil {
			s.exitWorker(nil, ExitConfig, fmt.Sprintf("%s: %v", envCarry, err))
		}
	case s.Carry != nil && wi.carry != "":
		if err := json.Unmarshal([]byte(wi.carry), s.Carry); err != nil {
			s.exitWorker(nil, ExitConfig, fmt.Sprintf("%s: %v", envCarry, err))
		}
	}
	s.setCurrent(wi.opts, settings)
	// The inherited fds must not leak into programs a hook may start.
	for fd := fdScoreboard; fd < fdFirst+max(1, len(wi.names)); fd++ {
		unix.CloseOnExec(fd)
	}
	go s.watchLifeline()
	sb, err := openScoreboard(fdScoreboard)
	if err != nil {
		s.exitWorker(nil, ExitConfig, err.Error())
	}
	s.sb = sb
	slot := sb.Slot(wi.slot)
	slot.SetPID(os.Getpid())
	cfg := s.TLSConfig // the program's own, built by this process's main
	if cfg == nil {
		p, err := readTLSFd(wi.tlsFd, wi.opts.SSL)
		if err != nil {
			s.exitWorker(nil, ExitConfig, err.Error())
		}
		if cfg, err = tlsFromPEM(wi.opts, p); err != nil {
			s.exitWorker(nil, ExitConfig, err.Error())
		}
	}
	w := newWorker(s, wi.opts, cfg, s.log, sb, slot, settings)
	w.report = func(ev byte) {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], evWord(ev, slot))
		unix.Write(fdEvents, b[:])
	}
	s.onBreak(w.stopNow)
	// INT reaches workers too when a terminal's ^C hits the process group:
	// the master turns it into a graceful stop, so workers ignore it.
	// TTIN/TTOU are the master's (resize); their default action would stop
	// a worker that `systemctl kill -s TTIN` reached by mistake.
	signal.Ignore(syscall.SIGINT, syscall.SIGPIPE, syscall.SIGTTIN, syscall.SIGTTOU)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, sigStacks)
	go func() {
		for sig := range sigs {
			if sig == sigStacks {
				w.stacksAsked() // here, not behind a busy on_child_sig_* hook
				continue
			}
			w.signal(sig.(syscall.Signal))
		}
	}()
	go w.signalLoop(nil)
	if err := w.childStart(); err != nil {
		w.slot.Exiting()
		os.Exit(exitStartFailed)
	}
	switch wi.role {
	case roleWorker:
		runtime.LockOSThread() // the acceptor waits in epoll_wait on this thread
		w.acceptLoop(s.inheritListeners(wi.names), true)
	case roleOneshot:
		w.oneshot(wi.handoff)
	default:
		s.exitWorker(w, ExitConfig, fmt.Sprintf("%s=%q: unknown role", envRole, wi.role))
	}
	s.exitWorker(w, 0, "")
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

// exitWorker ends a worker process: the one place a worker exits. on_child_exit
// runs on a normal end; a worker that cannot start or whose master is gone
// exits without it.
func (s *Server) exitWorker(w *worker, code int, why string) {
	if w != nil {
		w.slot.Exiting()
	}
	if why != "" {
		s.log.Errorf("waiter: worker exits: %s", why)
	} else {
		s.childExit()
	}
	os.Exit(code)
}

// watchLifeline exits the worker when the master is gone: the pipe's write
// end lives only in the master, so EOF means it has exited, however it died.
// (Pdeathsig is the backstop.) The master made the pipe non-blocking, so
// the wait is in the netpoller: a goroutine blocked in read(2) would hold a
// thread of its own in every worker, a clone and its scheduling in each
// forking-mode worker's start (measured there: 6 threads instead of 7).
func (s *Server) watchLifeline() {
	f := os.NewFile(uintptr(fdLifeline), "waiter-lifeline")
	var b [1]byte
	for {
		n, err := f.Read(b[:])
		if n == 0 || err != nil {
			s.exitWorker(nil, 1, "the master is gone")
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

// oneshot serves exactly one client, the forking mode's worker. A spare
// (handoff) starts ahead of need and waits for the master to pass it the
// client over a socket; it runs on_child_start before waiting, so a user's
// per-process set-up is hidden from the client too.
func (w *worker) oneshot(handoff bool) {
	fd := fdFirst
	if handoff {
		w.slot.Idle()
		w.report(evReady)
		var err error
		fd, err = waitClient(fdFirst)
		if err != nil {
			if errors.Is(err, errNoClient) {
				return // retired by the master (stop, reload)
			}
			w.s.exitWorker(w, 1, err.Error())
		}
	}
	w.slot.Busy()
	if !handoff {
		w.report(evReady) // serving: its start is over (see the start timeout)
	}
	_, failed := w.serveFd(fd, nil, w.o.ProxyProtocol) // on_accept_ok: the master's, unless PROXY hides the address from it
	w.slot.setExitWhy(exitWhyClient)
	w.slot.Done(failed)
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
