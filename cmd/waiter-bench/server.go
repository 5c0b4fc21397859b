package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// buildWaiterd builds cmd/waiterd the way it ships (static, stripped) into
// dir and returns the binary's path.
func buildWaiterd(ctx context.Context, root, dir string) (string, error) {
	out := filepath.Join(dir, "waiterd")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, "./cmd/waiterd")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building waiterd: %w\n%s", err, b)
	}
	return out, nil
}

// moduleRoot finds the waiter module's directory from the working directory.
func moduleRoot(ctx context.Context) (string, error) {
	b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the waiter module: run from the repository (or give -waiterd)")
	}
	return filepath.Dir(gomod), nil
}

// serverSpec is one way of running a server under test.
type serverSpec struct {
	Name string
	Exe  string
	// Args follow the exe; "{addr}" is replaced by the listen address,
	// "{control}" by a control socket's path of this start's own.
	Args []string
	// Env is added to the driver's environment (baseline role).
	Env []string
	// Watch: while the load runs, scrape its metrics and ask its control
	// socket for status (ops.go). Its Args turn both on.
	Watch bool
	// Proxy (1 or 2): its clients send a PROXY protocol header of that
	// version (proxy.go). Its Args turn the protocol on.
	Proxy int
	// Echo: its clients speak first, a line it echoes after the greeting
	// (echo.go). Its Args turn waiterd's echo on.
	Echo bool
}

func (s serverSpec) args(addr, control string) []string {
	out := make([]string, len(s.Args))
	for i, a := range s.Args {
		out[i] = strings.NewReplacer("{addr}", addr, "{control}", control).Replace(a)
	}
	return out
}

// server is a running server process (the master and, in its process group,
// its workers).
type server struct {
	spec    serverSpec
	cmd     *exec.Cmd
	addr    netip.AddrPort
	started time.Time // just before the fork
	ready   time.Time // READY=1 received
	first   time.Time // first client served (zero unless probed)
	exited  chan struct{}
	stderr  string
	control string // the control socket's path, when Args ask for one
	notify  *net.UnixConn

	stopOnce sync.Once
	stopErr  error
}

// The servers alive, so that a signal to the driver can kill them all.
var (
	liveMu sync.Mutex
	live   = map[*server]bool{}
)

func track(s *server, on bool) {
	liveMu.Lock()
	defer liveMu.Unlock()
	if on {
		live[s] = true
	} else {
		delete(live, s)
	}
}

// killAll kills every live server's process group at once: for ^C.
func killAll() {
	liveMu.Lock()
	defer liveMu.Unlock()
	for s := range live {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// freePort asks the kernel for a free loopback port. Another program may
// take it before the server binds it: startServer retries then.
func freePort() (netip.AddrPort, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).AddrPort(), nil
}

// serverEnv is the driver's environment without what a supervisor would
// pass (sockets, notify socket, watchdog, runtime directory: waiterd would
// open a control socket there) nor waiter's own variables.
func serverEnv(extra ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LISTEN_") || k == "NOTIFY_SOCKET" || strings.HasPrefix(k, "WATCHDOG_") ||
			strings.HasPrefix(k, "WAITER_") || k == "JOURNAL_STREAM" || k == "RUNTIME_DIRECTORY" {
			continue
		}
		out = append(out, kv)
	}
	return append(out, extra...)
}

var notifySeq int

// startServer starts spec on a free loopback port and waits for READY=1 on
// a notify socket of its own. With probe, it also connects in a loop from
// the start to time the first served client.
func startServer(ctx context.Context, spec serverSpec, dir string, probe bool) (*server, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s, err := startOnce(ctx, spec, dir, probe)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	return nil, lastErr
}

var errPortTaken = errors.New("port taken")

func startOnce(ctx context.Context, spec serverSpec, dir string, probe bool) (*server, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	notifySeq++
	sock := filepath.Join(dir, fmt.Sprintf("notify-%d", notifySeq))
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	errPath := filepath.Join(dir, fmt.Sprintf("stderr-%d", notifySeq))
	ef, err := os.Create(errPath)
	if err != nil {
		nc.Close()
		return nil, err
	}
	defer ef.Close()
	ctl := filepath.Join(dir, fmt.Sprintf("control-%d", notifySeq))
	cmd := exec.Command(spec.Exe, spec.args(addr.String(), ctl)...)
	cmd.Env = serverEnv(append([]string{"NOTIFY_SOCKET=" + sock}, spec.Env...)...)
	cmd.Stderr = ef // a file, not a pipe: no copying goroutine that a straggler could hold open
	// Its own process group, so that its workers go with it, and SIGKILL
	// if the driver dies (a backstop: killAll and stop are the real way).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	s := &server{spec: spec, cmd: cmd, addr: addr, exited: make(chan struct{}), stderr: errPath, control: ctl, notify: nc}

	readyc := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := nc.Read(buf)
			if err != nil {
				return
			}
			now := time.Now()
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				if line == "READY=1" {
					select {
					case readyc <- now:
					default:
					}
				}
			}
		}
	}()
	firstc := make(chan time.Time, 1)
	probeCtx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()

	s.started = time.Now()
	if err := cmd.Start(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: %w", spec.Name, err)
	}
	track(s, true)
	go func() {
		cmd.Wait()
		close(s.exited)
	}()
	if probe {
		go func() {
			once := rawClient(addr, time.Second, request{want: []byte(greeting)})
			for probeCtx.Err() == nil {
				if once() == nil {
					firstc <- time.Now()
					return
				}
				time.Sleep(100 * time.Microsecond)
			}
		}()
	}
	fail := func(err error) (*server, error) {
		s.stop()
		return nil, err
	}
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case s.ready = <-readyc:
	case <-s.exited:
		tail := s.stderrTail()
		if code := cmd.ProcessState.ExitCode(); code == 100 && strings.Contains(tail, "in use") {
			s.stop()
			return nil, fmt.Errorf("%s on %s: %w", spec.Name, addr, errPortTaken)
		}
		return fail(fmt.Errorf("%s exited before READY=1 (%s):\n%s", spec.Name, cmd.ProcessState, tail))
	case <-timer.C:
		return fail(fmt.Errorf("%s: no READY=1 within 10s:\n%s", spec.Name, s.stderrTail()))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	if probe {
		select {
		case s.first = <-firstc:
		case <-timer.C:
			return fail(fmt.Errorf("%s: no client served within 10s:\n%s", spec.Name, s.stderrTail()))
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
	return s, nil
}

func (s *server) stderrTail() string {
	b, _ := os.ReadFile(s.stderr)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// stop ends the server: TERM to the master (a graceful stop), KILL to the
// whole process group after 3s or once the master is gone (stragglers), then
// it waits until no process of the group is left. It returns an error if
// one is. Later calls return the first one's result.
func (s *server) stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.doStop() })
	return s.stopErr
}

func (s *server) doStop() error {
	defer track(s, false)
	defer s.notify.Close()
	pid := s.cmd.Process.Pid
	select {
	case <-s.exited:
	default:
		syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(3 * time.Second):
		}
	}
	syscall.Kill(-pid, syscall.SIGKILL)
	<-s.exited
	for i := 0; i < 200; i++ {
		reapOrphans()
		left := groupMembers(pid)
		if len(left) == 0 {
			return nil
		}
		if i == 199 {
			return fmt.Errorf("%s: processes left in group %d: %v", s.spec.Name, pid, left)
		}
		syscall.Kill(-pid, syscall.SIGKILL)
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// procStat is what /proc/PID/stat says about a process.
type procStat struct {
	pid, ppid, pgrp int
	state           byte
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	// The command name is in parentheses and may hold spaces: parse after
	// the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 {
		return procStat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	pgrp, _ := strconv.Atoi(f[2])
	return procStat{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0][0]}, true
}

func allProcs() []procStat {
	ents, _ := os.ReadDir("/proc")
	var out []procStat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok {
			out = append(out, st)
		}
	}
	return out
}

// groupMembers lists the live (not zombie) processes of process group pgid.
func groupMembers(pgid int) []int {
	var out []int
	for _, p := range allProcs() {
		if p.pgrp == pgid && p.state != 'Z' {
			out = append(out, p.pid)
		}
	}
	return out
}

// reapOrphans reaps the zombies that were reparented to the driver (it is a
// child subreaper) after their master was killed. Each is waited for by pid,
// so no status of a process os/exec waits for is taken.
func reapOrphans() {
	liveMu.Lock()
	mine := map[int]bool{}
	for s := range live {
		mine[s.cmd.Process.Pid] = true
	}
	liveMu.Unlock()
	self := os.Getpid()
	for _, p := range allProcs() {
		if p.ppid == self && p.state == 'Z' && !mine[p.pid] {
			var ws syscall.WaitStatus
			syscall.Wait4(p.pid, &ws, syscall.WNOHANG, nil)
		}
	}
}

// becomeSubreaper makes orphaned workers the driver's children rather than
// PID 1's (which, in a container, may never reap them).
func becomeSubreaper() {
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// memUse is the memory of a process tree, from smaps_rollup.
type memUse struct {
	Procs    int
	RSS, PSS int64 // bytes
}

// treeMemory sums Rss and Pss over pid and all its descendants.
func treeMemory(pid int) (memUse, error) {
	kids := map[int][]int{}
	for _, p := range allProcs() {
		kids[p.ppid] = append(kids[p.ppid], p.pid)
	}
	var m memUse
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		queue = append(queue, kids[p]...)
		rss, pss, err := smapsRollup(p)
		if err != nil {
			return m, err
		}
		m.Procs++
		m.RSS += rss
		m.PSS += pss
	}
	return m, nil
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's CPU times (100 on
// every Linux architecture Go runs on).
const clockTick = 10 * time.Millisecond

// treeCPU is the CPU time (user and system) pid and its descendants have
// used: each live process's own and its reaped children's (a master's
// cutime holds the workers it has waited for); and pid's own alone.
func treeCPU(pid int) (tree, own time.Duration, err error) {
	kids := map[int][]int{}
	for _, p := range allProcs() {
		kids[p.ppid] = append(kids[p.ppid], p.pid)
	}
	var sum time.Duration
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		queue = append(queue, kids[p]...)
		o, reaped, err := procCPU(p)
		if err != nil {
			if p == pid {
				return 0, 0, err
			}
			continue // a worker that ended since the scan: its master has it
		}
		if p == pid {
			own = o
		}
		sum += o + reaped
	}
	return sum, own, nil
}

// procCPU reads a process's own CPU time, utime+stime (fields 14 and 15
// of /proc/PID/stat), and its reaped children's, cutime+cstime (16, 17).
func procCPU(pid int) (own, reaped time.Duration, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	// After the name: state is field 3, so utime (14) is index 11.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var t [4]int64
	for k, s := range f[11:15] {
		if t[k], err = strconv.ParseInt(s, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
	}
	return time.Duration(t[0]+t[1]) * clockTick, time.Duration(t[2]+t[3]) * clockTick, nil
}

func smapsRollup(pid int) (rss, pss int64, err error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "Rss":
			rss = n * 1024
		case "Pss":
			pss = n * 1024
		}
	}
	return rss, pss, sc.Err()
}

// spawnRate execs exe -version from conc goroutines in a loop for d: the
// bare cost of starting and ending one process of this binary, the ceiling
// for forking mode, which starts one per client. With keep, the result
// keeps every latency (raw), for mergeResults.
func spawnRate(ctx context.Context, exe string, conc int, d time.Duration, keep bool) (loadResult, error) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return loadResult{}, err
	}
	defer null.Close()
	attr := &syscall.ProcAttr{
		Env:   []string{},
		Files: []uintptr{null.Fd(), null.Fd(), null.Fd()},
		Sys:   &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	}
	argv := []string{exe, "-version"}
	end := time.Now().Add(d)
	lats := make([][]time.Duration, conc)
	errs := make([]error, conc)
	var wg sync.WaitGroup
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				pid, err := syscall.ForkExec(exe, argv, attr)
				if err != nil {
					errs[i] = err
					return
				}
				var ws syscall.WaitStatus
				for {
					_, err := syscall.Wait4(pid, &ws, 0, nil)
					if err != syscall.EINTR {
						break
					}
				}
				t1 := time.Now()
				if t1.After(end) {
					return
				}
				if !ws.Exited() || ws.ExitStatus() != 0 {
					errs[i] = fmt.Errorf("%s -version: %v", exe, ws)
					return
				}
				lats[i] = append(lats[i], t1.Sub(t0))
			}
		}(i)
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return loadResult{}, err
	}
	for _, e := range errs {
		if e != nil {
			return loadResult{}, e
		}
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	r := loadResult{Conc: conc, Window: d, OK: len(all), Lat: summarize(all), PerSec: float64(len(all)) / d.Seconds()}
	if keep {
		r.raw = all // sorted by summarize
	}
	return r, nil
}
