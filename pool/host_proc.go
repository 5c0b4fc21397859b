package pool

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// procHost starts workers as processes: this binary re-executed, through
// the spawner's locked thread (spawn.go), with the fds and variables of
// env.go. It is the supervisor's env.start and env.signal in the modes
// that have worker processes.
type procHost struct {
	s       *Server
	sb      *scoreboard
	sp      *spawner
	ev      *events
	baseEnv []string
	names   string
	lifeR   int
	lifeW   int
	evR     int
	evW     int
	stW     int      // the workers' end of the stacks socket
	stR     *os.File // the master's end
	stacks  *stacksBroker
}

var errSpawnerFull = errors.New("pool: the spawner's queue is full (a supervisor bug: room() bounds it)")

func newProcHost(s *Server, sb *scoreboard, ev *events) (*procHost, error) {
	h := &procHost{s: s, sb: sb, ev: ev}
	var p [2]int
	// Non-blocking: every worker waits for its EOF in its netpoller
	// (watchLifeline). Nobody writes or reads it otherwise.
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("pool: lifeline pipe: %w", err)
	}
	h.lifeR, h.lifeW = p[0], p[1]
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		unix.Close(h.lifeR)
		unix.Close(h.lifeW)
		return nil, fmt.Errorf("pool: event pipe: %w", err)
	}
	h.evR, h.evW = p[0], p[1]
	str, stw, err := stacksSocket()
	if err != nil {
		for _, fd := range []int{h.lifeR, h.lifeW, h.evR, h.evW} {
			unix.Close(fd)
		}
		return nil, err
	}
	unix.SetNonblock(str, true) // before NewFile: in the netpoller
	h.stR, h.stW, h.stacks = os.NewFile(uintptr(str), "waiter-stacks"), stw, newStacksBroker()
	go readStacks(h.stR, h.stacks)
	// The master's environment, filtered once: every spawn only appends.
	h.baseEnv = workerEnv(os.Environ(), nil)
	if _, ok := os.LookupEnv("GOTRACEBACK"); !ok {
		h.baseEnv = append(h.baseEnv, "GOTRACEBACK=all") // request_timeout's SIGQUIT dumps every goroutine
	}
	names := make([]string, len(s.sockets))
	for i, sk := range s.sockets {
		names[i] = sk.Name
	}
	h.names = strings.Join(names, ":")
	h.sp = newSpawner(ev.spawned)
	go h.readEvents()
	return h, nil
}

// close runs once every worker is reaped: only then is shared state removed
// (Net::Waiter removed it while workers still ran).
func (h *procHost) close() {
	close(h.sp.reqs)
	unix.Close(h.lifeW)
	unix.Close(h.lifeR)
	unix.Close(h.evW) // ends readEvents
	unix.Close(h.stW)
	h.stR.Close() // ends readStacks
}

func (h *procHost) readEvents() {
	unix.SetNonblock(h.evR, true)
	f := os.NewFile(uintptr(h.evR), "waiter-events")
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		n, err := f.Read(buf)
		for i := 0; i+4 <= n; i += 4 {
			h.ev.workers <- uint32(buf[i]) | uint32(buf[i+1])<<8 | uint32(buf[i+2])<<16 | uint32(buf[i+3])<<24
		}
		if err != nil {
			return
		}
	}
}

// start builds a worker's environment and files and queues the spawn. It
// does not block: the supervisor keeps fewer than spawnInflight requests
// outstanding, and both channels hold that many.
func (h *procHost) start(k *kid) {
	g := k.gen.opts
	fail := func(err error) {
		h.ev.spawned <- spawnRes{slot: k.slot, err: err} // within the same bound
	}
	vars := map[string]string{
		envRole:    roleWorker,
		envSlot:    strconv.Itoa(k.slot),
		envGen:     strconv.Itoa(k.gen.n),
		envMaster:  strconv.Itoa(os.Getpid()),
		envOptions: g.optsJSON,
	}
	if g.carry != "" {
		vars[envCarry] = g.carry
	}
	files := []int{h.sb.Fd(), h.lifeR, h.evW, h.stW}
	var closeAfter []int
	switch k.kind {
	case kindWorker:
		vars[envNames] = h.names
		files = append(files, h.s.listenFds()...)
	case kindSpare:
		vars[envRole] = roleOneshot
		vars[envHandoff] = "spare"
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fail(fmt.Errorf("pool: handoff socket: %w", err))
			return
		}
		k.handoff = sp[0]
		files = append(files, sp[1])
		closeAfter = append(closeAfter, sp[1])
	case kindOneshot:
		vars[envRole] = roleOneshot
		files = append(files, k.clientFd)
		closeAfter = append(closeAfter, k.clientFd)
		k.clientFd = -1 // the spawner closes it after the fork
	}
	if g.o.SSL && g.tlsPEM != nil {
		// The files as the master last checked them, not as they are now: a
		// rotation is the master's to check, on HUP.
		fd, err := tlsMemfd(g.tlsPEM)
		if err != nil {
			for _, fd := range closeAfter {
				unix.Close(fd)
			}
			fail(err)
			return
		}
		files = append(files, fd) // after the listeners, the client or the handoff at fdFirst
		closeAfter = append(closeAfter, fd)
		vars[envTLS] = strconv.Itoa(3 + len(files) - 1)
	}
	r := spawnReq{slot: k.slot, env: withVars(h.baseEnv, vars), files: files, closeAfter: closeAfter}
	select {
	case h.sp.reqs <- r:
	default:
		for _, fd := range closeAfter {
			unix.Close(fd)
		}
		fail(errSpawnerFull)
	}
}

// signal goes through the kid's pidfd when it has one: a pid alone could
// name another process once the kid exited and its pid was reused, before
// the supervisor read the exit.
func (h *procHost) signal(k *kid, sig syscall.Signal) {
	switch {
	case k.pidf != nil:
		unix.PidfdSendSignal(int(k.pidf.Fd()), sig, nil, 0)
	case k.pid > 0:
		syscall.Kill(k.pid, sig)
	}
}
