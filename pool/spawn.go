package pool

import (
	"fmt"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// spawner starts worker processes from one goroutine locked to its OS thread
// for the master's whole life.
//
// Why a locked thread: Pdeathsig fires when the *thread* that forked the
// child exits, not the process (golang/go#27505). Go may end an idle thread
// at any time unless a goroutine is locked to it, so every child is forked
// from this one thread, which lives as long as the master.
//
// Why syscall.ForkExec and not exec.Cmd: os.StartProcess calls Fd() on each
// *os.File it passes, which turns the shared socket description blocking for
// every process that holds it. Here fds are plain ints, and exec.Cmd's
// LookPath and goroutines are not needed.
type spawner struct {
	exe  string
	argv []string
	reqs chan spawnReq
	done chan spawnRes
}

type spawnReq struct {
	slot  int
	env   []string
	files []int // the child's fds 3, 4, 5, ... in order
	// closeAfter are master-side fds that belong to the child only (a
	// client's, the child's end of a handoff socket): closed after the fork.
	closeAfter []int
}

type spawnRes struct {
	slot int
	pid  int
	err  error
	// wait blocks until the kid exits and returns its status. The
	// supervisor calls it on a goroutine of its own once it has recorded
	// the pid, so that no exit can arrive before the start it ends.
	wait func() syscall.WaitStatus
	// pidf is the supervisor's own pidfd of the process (nil without one):
	// a signal through it cannot reach another process that reused the
	// pid after the exit, before the supervisor read it.
	pidf *os.File
}

func newSpawner(done chan spawnRes) *spawner {
	sp := &spawner{
		exe:  "/proc/self/exe", // the running binary, even if its file was replaced
		argv: os.Args,
		reqs: make(chan spawnReq, spawnInflight),
		done: done,
	}
	started := make(chan struct{})
	go sp.loop(started)
	<-started
	return sp
}

func (sp *spawner) loop(started chan struct{}) {
	runtime.LockOSThread()
	// Never unlocked: the thread must outlive every child (see above). The
	// goroutine ends when reqs is closed, at the very end of the master.
	close(started)
	for r := range sp.reqs {
		pid, pidfd, err := sp.start(r)
		for _, fd := range r.closeAfter {
			unix.Close(fd)
		}
		res := spawnRes{slot: r.slot, pid: pid, err: err}
		if err == nil {
			if pidfd >= 0 {
				if d, err := unix.FcntlInt(uintptr(pidfd), unix.F_DUPFD_CLOEXEC, 0); err == nil {
					res.pidf = os.NewFile(uintptr(d), "pidfd")
				}
			}
			res.wait = func() syscall.WaitStatus { return waitChild(pid, pidfd) }
		}
		sp.done <- res
	}
}

func (sp *spawner) start(r spawnReq) (pid, pidfd int, err error) {
	files := make([]uintptr, 0, 3+len(r.files))
	files = append(files, 0, 1, 2)
	for _, fd := range r.files {
		files = append(files, uintptr(fd))
	}
	pidfd = -1
	attr := &syscall.ProcAttr{
		Env:   r.env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Pdeathsig: syscall.SIGKILL,
			PidFD:     &pidfd,
		},
	}
	pid, err = syscall.ForkExec(sp.exe, sp.argv, attr)
	if err != nil {
		return 0, -1, fmt.Errorf("pool: start worker: %w", err)
	}
	return pid, pidfd, nil
}

// waitChild blocks until the child exits and reaps it, without a thread per
// child: the pidfd becomes readable when the child exits, and Go's netpoller
// waits for that. wait4 on the one pid never takes another child's status
// (a hook may run its own children in the master).
func waitChild(pid, pidfd int) syscall.WaitStatus {
	var ws syscall.WaitStatus
	reap := func() bool {
		for {
			got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
			if err == syscall.EINTR {
				continue
			}
			return got == pid || err != nil
		}
	}
	if pidfd >= 0 {
		if err := unix.SetNonblock(pidfd, true); err == nil {
			f := os.NewFile(uintptr(pidfd), "pidfd")
			if rc, err := f.SyscallConn(); err == nil {
				rc.Read(func(uintptr) bool { return reap() })
				f.Close()
				return ws
			}
			f.Close()
		} else {
			unix.Close(pidfd)
		}
	}
	// No pidfd (an old kernel): block this goroutine's thread in wait4.
	for {
		got, err := syscall.Wait4(pid, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if got == pid || err != nil {
			return ws
		}
	}
}

// describeStatus says how a worker ended, for the log.
func describeStatus(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		s := fmt.Sprintf("killed by signal %d (%s)", ws.Signal(), unix.SignalName(ws.Signal()))
		if ws.CoreDump() {
			s += ", core dumped"
		}
		return s
	}
	return fmt.Sprintf("status %#x", uint32(ws))
}
