package main

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// build compiles waiterd for a test: with -race when this test binary has
// it (the race detector needs cgo), static otherwise, as the Makefile builds
// it.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "waiterd")
	args := []string{"build", "-o", bin}
	cgo := "CGO_ENABLED=0"
	if raceEnabled {
		args = append(args, "-race")
		cgo = "CGO_ENABLED=1"
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Env = append(os.Environ(), cgo)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	if raceEnabled {
		bi, err := buildinfo.ReadFile(bin)
		if err != nil || !slices.Contains(bi.Settings, debug.BuildSetting{Key: "-race", Value: "true"}) {
			t.Fatalf("a race-enabled test built a waiterd without -race: %v %v", bi, err)
		}
	}
	return bin
}

// daemon is a waiterd process under test.
type daemon struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{}
	err    error // cmd.Wait's, once done is closed
}

// startWaiterd starts bin with args. At the end of the test it is killed if
// it still runs, and its stderr, which its workers share, is checked for
// race reports (failOnRace): a race in the daemon fails the test.
func startWaiterd(t *testing.T, bin string, args ...string) *daemon {
	t.Helper()
	d := &daemon{cmd: exec.Command(bin, args...), stderr: &lockedBuffer{}, done: make(chan struct{})}
	d.cmd.Stderr = d.stderr
	if _, ok := os.LookupEnv("GORACE"); !ok {
		// A race-enabled process sleeps 1 s at exit by default.
		d.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	}
	// Workers hold stderr open until they see the master gone: do not wait
	// for them for ever after a kill.
	d.cmd.WaitDelay = 10 * time.Second
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
		failOnRace(t, fmt.Sprintf("waiterd (pid %d)", d.cmd.Process.Pid), d.stderr.String())
	})
	return d
}

// wait waits for the daemon to exit and returns cmd.Wait's error.
func (d *daemon) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-d.done:
		return d.err
	case <-time.After(timeout):
		t.Fatalf("waiterd did not exit within %s\n%s", timeout, d.stderr.String())
	}
	return nil
}

// lockedBuffer is a running process's stderr that the test reads meanwhile.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestBadConfigIsRefusedBeforeStart(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, yaml string
		args       []string
		want       string
	}{
		{"unknown key", "prefork: 2\nechoo: true\n", nil, `bad.yaml:2: key "echoo"`},
		{"maxfork below prefork", "prefork: 8\nmaxfork: 2\n", nil, `bad.yaml:2: key "maxfork": value "2": maxfork must not be less than prefork (8)`},
		{"bad flag", "prefork: 2\n", []string{"-timeout", "never"}, `flag -timeout: value "never"`},
		{"flag makes it impossible", "maxfork: 4\n", []string{"-prefork", "9"}, `key "maxfork": value "4": maxfork must not be less than prefork (9)`},
		{"empty file", "", nil, `bad.yaml: the file is empty`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "bad.yaml")
			os.WriteFile(p, []byte(tc.yaml), 0o600)
			var stderr bytes.Buffer
			code := run(append([]string{"-config", p}, tc.args...), io.Discard, &stderr)
			// The error is a log line (level=error): its quotes are escaped.
			if code != 1 || !strings.Contains(strings.ReplaceAll(stderr.String(), `\"`, `"`), tc.want) {
				t.Fatalf("want exit 1 and %q, have %d %q", tc.want, code, stderr.String())
			}
		})
	}
	var stderr bytes.Buffer
	if code := run([]string{"-config", filepath.Join(dir, "none.yaml")}, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "none.yaml") {
		t.Fatalf("missing file: %d %q", code, stderr.String())
	}
	if code := run([]string{"-config", dir}, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), dir) {
		t.Fatalf("a directory as the file: %d %q", code, stderr.String())
	}
}

// The demo as a user runs it: flags over a file, echo mode, a reload that
// re-reads the file.
func TestWaiterdEchoAndReload(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "w.yaml")
	os.WriteFile(cfg, []byte("prefork: 2\nmaxfork: 4\necho: true\n"), 0o600)
	addr := freeAddr(t)
	d := startWaiterd(t, bin, "-config", cfg, "-listen", addr, "-prefork", "3")
	cmd, stderr := d.cmd, d.stderr
	var c net.Conn
	var err error
	for i := 0; i < 100; i++ {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "ping\n")
	c.(*net.TCPConn).CloseWrite()
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "hello world\nping\n" {
		t.Fatalf("echo: want greeting then ping, have %q", b)
	}
	kids := func() int {
		out, _ := exec.Command("pgrep", "-P", strconv.Itoa(cmd.Process.Pid)).Output()
		return len(strings.Fields(string(out)))
	}
	waitKids := func(n int) {
		for i := 0; i < 250 && kids() != n; i++ {
			time.Sleep(20 * time.Millisecond)
		}
		if kids() != n {
			t.Fatalf("want %d workers, have %d\n%s", n, kids(), stderr.String())
		}
	}
	waitKids(3) // the flag's 3, not the file's 2
	// A reload re-reads the file; the flag still wins for prefork, the
	// file's new echo: false takes effect.
	os.WriteFile(cfg, []byte("prefork: 2\nmaxfork: 4\necho: false\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(500 * time.Millisecond)
	waitKids(3)
	c, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, _ = io.ReadAll(c) // echo is off now: the greeting, then EOF
	c.Close()
	if string(b) != "hello world\n" {
		t.Fatalf("after the reload turned echo off: %q", b)
	}
	// A bad file on reload is refused and the server keeps serving.
	os.WriteFile(cfg, []byte("prefork: lots\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(300 * time.Millisecond)
	if !strings.Contains(stderr.String(), "reload refused") {
		t.Fatalf("want the bad reload refused:\n%s", stderr.String())
	}
	// Workers started after the refused reload (TTIN) still start: they take
	// their settings from the master, not from the broken file.
	cmd.Process.Signal(syscall.SIGTTIN)
	waitKids(4)
	c, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if line != "hello world\n" {
		t.Fatalf("after a refused reload: %q", line)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := d.wait(t, 40*time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, stderr.String())
	}
}

// TestReloadUnderLoadNoRace: a waiterd built with -race (when the tests
// are) in each mode, reloaded five times while 4 clients keep connecting,
// then stopped. Every process's race reports reach its stderr, which
// failOnRace checks at the end: the reload path once raced in the forking
// master, unseen because only the test process was checked.
func TestReloadUnderLoadNoRace(t *testing.T) {
	bin := build(t)
	for _, mode := range []struct{ name, yaml string }{
		{"prefork", "prefork: 2\nmaxfork: 4\n"},
		{"forking", "prefork: 0\nspares: 2\nmaxfork: 8\n"},
		{"nofork", "nofork: true\n"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "w.yaml")
			os.WriteFile(cfg, []byte(mode.yaml+"timeout: 1\n"), 0o600)
			addr := freeAddr(t)
			d := startWaiterd(t, bin, "-config", cfg, "-listen", addr)
			var ok, bad atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for i := 0; i < 4; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := 0; n < 5000; n++ {
						select {
						case <-stop:
							return
						default:
						}
						c, err := net.DialTimeout("tcp", addr, 2*time.Second)
						if err != nil {
							time.Sleep(10 * time.Millisecond)
							continue
						}
						c.SetDeadline(time.Now().Add(10 * time.Second))
						b, err := io.ReadAll(c)
						c.Close()
						if err == nil && string(b) == "hello world\n" {
							ok.Add(1)
						} else {
							bad.Add(1)
						}
					}
				}()
			}
			deadline := time.Now().Add(20 * time.Second)
			for ok.Load() < 5 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			for i := 0; i < 5; i++ {
				// A different timeout each time: the options change.
				os.WriteFile(cfg, []byte(fmt.Sprintf("%stimeout: %d\n", mode.yaml, i+2)), 0o600)
				d.cmd.Process.Signal(syscall.SIGHUP)
				time.Sleep(150 * time.Millisecond)
			}
			before := ok.Load()
			for ok.Load() < before+5 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			close(stop)
			wg.Wait()
			d.cmd.Process.Signal(syscall.SIGTERM)
			if err := d.wait(t, 40*time.Second); err != nil {
				t.Fatalf("exit: %v\n%s", err, d.stderr.String())
			}
			if n := strings.Count(d.stderr.String(), "reloading: starting generation"); n < 1 {
				t.Fatalf("no reload logged\n%s", d.stderr.String())
			}
			t.Logf("%s: %d clients served, %d failed, across 5 reloads", mode.name, ok.Load(), bad.Load())
			if bad.Load() != 0 {
				t.Fatalf("%d clients failed across the reloads\n%s", bad.Load(), d.stderr.String())
			}
		})
	}
}

// TestStopWithIdleEchoClient: a stop with an idle -echo client connected
// ends within a second, not at graceful_timeout: the stop reaches the hook
// through its context, and the client gets a goodbye, then EOF.
func TestStopWithIdleEchoClient(t *testing.T) {
	bin := build(t)
	for _, mode := range []string{"-prefork=2", "-nofork", "-prefork=0"} {
		t.Run(mode, func(t *testing.T) {
			addr := freeAddr(t)
			d := startWaiterd(t, bin, "-echo", mode, "-graceful-timeout", "20", "-listen", addr)
			var c net.Conn
			var err error
			for i := 0; i < 250; i++ {
				if c, err = net.Dial("tcp", addr); err == nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			r := bufio.NewReader(c)
			if l, _ := r.ReadString('\n'); l != "hello world\n" {
				t.Fatalf("greeting: %q", l)
			}
			t0 := time.Now()
			d.cmd.Process.Signal(syscall.SIGTERM)
			rest, err := io.ReadAll(r)
			took := time.Since(t0)
			if err != nil || string(rest) != "goodbye: this worker is ending (a stop or a reload)\n" {
				t.Fatalf("after the stop the idle client got %q, %v", rest, err)
			}
			if err := d.wait(t, 10*time.Second); err != nil {
				t.Fatalf("exit: %v", err)
			}
			total := time.Since(t0)
			t.Logf("%s: goodbye after %s, exit after %s (graceful_timeout 20s)", mode, took.Round(time.Millisecond), total.Round(time.Millisecond))
			if total > 2*time.Second {
				t.Fatalf("the stop took %s with an idle client", total)
			}
		})
	}
}

// A bad value given by a flag is named as the flag's, not blamed on the
// file's line of the same key.
func TestBadFlagIsNamedAsTheFlag(t *testing.T) {
	p := filepath.Join(t.TempDir(), "w.yaml")
	os.WriteFile(p, []byte("prefork: 2\nmaxfork: 16\n"), 0o600)
	var stderr bytes.Buffer
	code := run([]string{"-check", "-config", p, "-maxfork", "1"}, io.Discard, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), `flag -maxfork: option maxfork: value "1"`) || strings.Contains(stderr.String(), "w.yaml:2") {
		t.Fatalf("want the flag named, not w.yaml:2; have %d %q", code, stderr.String())
	}
}
