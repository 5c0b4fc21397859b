// Package daemontest is what the examples' tests share: build the example's
// binary (with -race when the test binary has it), start it as a real
// process on 127.0.0.1, wait for it in bounded loops, and fail the test if
// any of its processes (the master and its workers share its stderr)
// reported a data race. It is cmd/waiterd's test pattern, in one place for
// the three examples; a copy of an example can take this file with it.
package daemontest

import (
	"bytes"
	"debug/buildinfo"
	"fmt"
	"github.com/waiter-go/waiter/internal/racecheck"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build compiles the package in the current directory (a test's own: go
// test runs in it) and returns the binary's path: with -race when this test
// binary has it (the detector needs cgo), static otherwise, as users build
// it for packaging. It builds once per test binary, in a directory that
// Main removes at the end.
func Build(t *testing.T) string {
	t.Helper()
	built.Lock()
	defer built.Unlock()
	if built.bin != "" {
		return built.bin
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if built.dir == "" {
		if built.dir, err = os.MkdirTemp("", "daemontest-"); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(built.dir, filepath.Base(wd))
	args := []string{"build", "-o", bin}
	cgo := "CGO_ENABLED=0"
	if RaceEnabled {
		args = append(args, "-race")
		cgo = "CGO_ENABLED=1"
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Env = append(os.Environ(), cgo)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	if RaceEnabled {
		bi, err := buildinfo.ReadFile(bin)
		if err != nil || !slices.Contains(bi.Settings, debug.BuildSetting{Key: "-race", Value: "true"}) {
			t.Fatalf("a race-enabled test built %s without -race: %v %v", bin, bi, err)
		}
	}
	built.bin = bin
	return bin
}

var built struct {
	sync.Mutex
	dir, bin string
}

// Main is a test package's TestMain: it runs the tests, then removes the
// binary Build made.
//
//	func TestMain(m *testing.M) { daemontest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// Daemon is a daemon process under test.
type Daemon struct {
	Cmd    *exec.Cmd
	Stderr *Buffer
	done   chan struct{}
	err    error // cmd.Wait's, once done is closed
}

// Start starts bin with args. At the end of the test it is killed if it
// still runs, and its stderr is checked for race reports: a race in the
// master or in any worker fails the test.
func Start(t *testing.T, bin string, args ...string) *Daemon {
	t.Helper()
	d := &Daemon{Cmd: exec.Command(bin, args...), Stderr: &Buffer{}, done: make(chan struct{})}
	d.Cmd.Stderr = d.Stderr
	d.Cmd.Stdout = d.Stderr
	if _, ok := os.LookupEnv("GORACE"); !ok {
		// A race-enabled process sleeps 1 s at exit by default.
		d.Cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	}
	// Workers hold stderr open until they see the master gone: do not wait
	// for them for ever after a kill.
	d.Cmd.WaitDelay = 10 * time.Second
	if err := d.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.Cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.Cmd.Process.Kill()
		<-d.done
		FailOnRace(t, fmt.Sprintf("%s (pid %d)", filepath.Base(bin), d.Cmd.Process.Pid), d.Stderr.String())
		if t.Failed() {
			out := d.Stderr.String()
			if len(out) > 20000 {
				out = "[...]\n" + out[len(out)-20000:]
			}
			t.Logf("%s's stderr:\n%s", filepath.Base(bin), out)
		}
	})
	return d
}

// Pid is the master's pid.
func (d *Daemon) Pid() int { return d.Cmd.Process.Pid }

// Signal sends sig to the master.
func (d *Daemon) Signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := d.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// Wait waits for the daemon to exit and returns cmd.Wait's error.
func (d *Daemon) Wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-d.done:
		return d.err
	case <-time.After(timeout):
		t.Fatalf("the daemon did not exit within %s", timeout)
	}
	return nil
}

// Exited reports whether the master has exited.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// Kids returns the pids of the master's child processes (its workers).
func (d *Daemon) Kids() []int {
	var kids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(d.Pid()) && f[0] != "Z" {
			kids = append(kids, pid)
		}
	}
	return kids
}

// WaitKids waits (up to 10 s) until the master has n workers.
func (d *Daemon) WaitKids(t *testing.T, n int) {
	t.Helper()
	if !Eventually(10*time.Second, func() bool { return len(d.Kids()) == n }) {
		t.Fatalf("want %d workers, have %v", n, d.Kids())
	}
}

// WaitLog waits (up to timeout) until stderr holds s, and returns stderr.
func (d *Daemon) WaitLog(t *testing.T, s string, timeout time.Duration) string {
	t.Helper()
	if !Eventually(timeout, func() bool { return strings.Contains(d.Stderr.String(), s) }) {
		t.Fatalf("after %s, no %q in the daemon's stderr", timeout, s)
	}
	return d.Stderr.String()
}

// Eventually polls cond every 20 ms until it holds (true) or timeout
// passes (false).
func Eventually(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// FreeAddr returns a 127.0.0.1 address that was free a moment ago.
func FreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Dial connects to addr, retrying for up to 10 s while the daemon starts,
// and gives the connection a 30 s deadline; it is closed at the test's end.
func Dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// Run runs bin with args to its end (for -check) and returns its combined
// output and exit status.
func Run(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s: %v", bin, err)
		}
		code = ee.ExitCode()
	}
	FailOnRace(t, filepath.Base(bin), string(out))
	return string(out), code
}

// Buffer is a running process's stderr that the test reads meanwhile.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// FailOnRace fails t when a process's output holds a race report (a
// worker's exit status never reaches the test, so its stderr is the only
// witness); who names the process. See internal/racecheck.
func FailOnRace(t *testing.T, who, stderr string) {
	t.Helper()
	racecheck.Report(t, who, stderr)
}
