package pool_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/waiter-go/waiter/config"
)

// syncBuffer collects a server's stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a server process under test.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	addr   string
	events string
	stderr *syncBuffer
	done   chan struct{}
	code   int
}

func opts(mut func(*config.Options)) config.Options {
	o := config.Default()
	o.Timeout = config.Duration(time.Second)
	o.GracefulTimeout = config.Duration(5 * time.Second)
	if mut != nil {
		mut(&o)
	}
	return o
}

// start runs the scenario server on a fresh listener on 127.0.0.1:0, passed
// to it as fd 3.
func start(t *testing.T, o config.Options, env ...string) *proc {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	defer f.Close()
	p := startWith(t, o, []*os.File{f}, append(env, "WAITERTEST_FD=3")...)
	p.addr = addr
	return p
}

// startWith runs the scenario server with the given extra files and env.
func startWith(t *testing.T, o config.Options, files []*os.File, env ...string) *proc {
	t.Helper()
	p := newProc(t)
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	p.cmd.Env = append(os.Environ(), p.scenarioEnv(o)...)
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.ExtraFiles = files
	p.launch()
	return p
}

func newProc(t *testing.T) *proc {
	return &proc{t: t, events: filepath.Join(t.TempDir(), "events"), stderr: &syncBuffer{}, done: make(chan struct{})}
}

// scenarioEnv is what makes the test binary the scenario server.
func (p *proc) scenarioEnv(o config.Options) []string {
	b, _ := json.Marshal(o)
	// GORACE: a race-enabled process sleeps 1 s at exit by default, which
	// would keep every forking worker alive a second after its client.
	return []string{envScenario + "=1", envOpts + "=" + string(b), envEvents + "=" + p.events, "GORACE=atexit_sleep_ms=0"}
}

// launch starts p.cmd, collects its exit code, and kills it at the end of
// the test, printing its stderr and events if the test failed.
func (p *proc) launch() {
	p.t.Helper()
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	p.t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		failOnRace(p.t, "server pid "+strconv.Itoa(p.pid()), p.stderr.String())
		if p.t.Failed() {
			p.t.Logf("server stderr:\n%s", p.stderr.String())
			p.t.Logf("events:\n%s", strings.Join(p.readEvents(), "\n"))
		}
	})
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// wait waits for the server to exit and returns its exit code.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(d):
		p.t.Fatalf("server did not exit within %s", d)
	}
	return -1
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

func (p *proc) readEvents() []string {
	b, _ := os.ReadFile(p.events)
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// count returns how many events of hook were recorded.
func (p *proc) count(hook string) int {
	n := 0
	for _, e := range p.readEvents() {
		if strings.HasPrefix(e, hook+" ") {
			n++
		}
	}
	return n
}

// talk sends one command line and reads the reply to EOF.
func talk(addr, cmd string) (string, error) { return talkWithin(addr, cmd, 10*time.Second) }

// talkWithin is talk with a deadline of d for the whole exchange.
func talkWithin(addr, cmd string, d time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

func mustTalk(t *testing.T, addr, cmd string) string {
	t.Helper()
	s, err := talk(addr, cmd)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return s
}

// hold opens a client that keeps a worker busy until closed; it returns once
// the server said "held".
func hold(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, "hold\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "held\n" {
		t.Fatalf("hold: have %q, %v", buf, err)
	}
	c.SetReadDeadline(time.Time{})
	return c
}

// eventually polls cond every 20ms until it is true or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("after %s: %s", d, what)
}

// children returns the pids of pid's child processes.
func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(s)
			out = append(out, n)
		}
	}
	return out
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] != 'Z'
}

// zombies counts pid's children that are zombies.
func zombies(pid int) int {
	n := 0
	for _, c := range children(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c))
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 && len(s) > i+2 && s[i+2] == 'Z' {
			n++
		}
	}
	return n
}
