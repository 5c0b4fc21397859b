package pool_test

// Hostile conditions, the fast part (make test); the long runs are in
// soak_test.go (make soak). Each test prints its figures with t.Logf.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/waiter-go/waiter/config"
)

// outcome classifies one client's fate.
func outcome(s string, err error) string {
	switch {
	case err == nil && s == "hello world\n":
		return "ok"
	case err == nil:
		return "wrong reply"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, os.ErrDeadlineExceeded) || strings.Contains(err.Error(), "timeout"):
		return "timeout"
	}
	return "other: " + err.Error()
}

type tally struct {
	mu sync.Mutex
	m  map[string]int
}

func (t *tally) add(k string) {
	t.mu.Lock()
	if t.m == nil {
		t.m = map[string]int{}
	}
	t.m[k]++
	t.mu.Unlock()
}

func (t *tally) get(k string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[k]
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprint(t.m)
}

// 2,000 clients at once against maxfork 32: nothing crashes; the kernel's
// backlog holds them and every one that connected is served.
func TestBurstOf2000(t *testing.T) {
	p := start(t, prefork(8, 32, nil))
	eventually(t, 5*time.Second, "8 workers", func() bool { return p.count("on_child_start") == 8 })
	var res tally
	var wg sync.WaitGroup
	var maxKids atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				if n := int64(len(children(p.pid()))); n > maxKids.Load() {
					maxKids.Store(n)
				}
			}
		}
	}()
	t0 := time.Now()
	for i := 0; i < 2000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := talk(p.addr, "hello")
			res.add(outcome(s, err))
		}()
	}
	wg.Wait()
	close(stop)
	t.Logf("2000 at once: %v in %s; at most %d workers", res.String(), time.Since(t0).Round(time.Millisecond), maxKids.Load())
	if res.get("ok")+res.get("refused")+res.get("timeout") != 2000 || res.get("ok") == 0 {
		t.Fatalf("clients that connected were not served: %v", res.String())
	}
	if maxKids.Load() > 32 {
		t.Fatalf("the pool passed maxfork: %d workers", maxKids.Load())
	}
	if !alive(p.pid()) || strings.Contains(p.stderr.String(), "panic") {
		t.Fatalf("the server crashed:\n%s", p.stderr.String())
	}
}

// kill -9 of random workers under load: only the clients they held fail,
// each exit is logged with its signal, and the pool refills.
func TestKill9WorkersUnderLoad(t *testing.T) {
	p := start(t, prefork(-6, 0, nil))
	eventually(t, 5*time.Second, "6 workers", func() bool { return p.count("on_child_start") == 6 })
	stop := make(chan struct{})
	ok, failed, _, done := steadyLoad(p.addr, 6, stop)
	kills := 0
	for i := 0; i < 5; i++ {
		time.Sleep(200 * time.Millisecond)
		kids := children(p.pid())
		if len(kids) == 0 {
			continue
		}
		if syscall.Kill(kids[rand.IntN(len(kids))], syscall.SIGKILL) == nil {
			kills++
		}
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	done.Wait()
	t.Logf("%d workers killed under load: %d clients served, %d failed", kills, ok.Load(), failed.Load())
	if failed.Load() > int64(kills) {
		t.Fatalf("more clients failed (%d) than workers were killed (%d)", failed.Load(), kills)
	}
	eventually(t, 5*time.Second, "the pool refilled", func() bool { return len(children(p.pid())) == 6 })
	if n := strings.Count(p.stderr.String(), "killed by signal 9 (SIGKILL)"); n != kills {
		t.Fatalf("want each of %d kills logged with its signal, have %d:\n%s", kills, n, p.stderr.String())
	}
}

// Hooks that misbehave: each costs its own client, is logged once, and the
// server goes on.
func TestMisbehavingHooks(t *testing.T) {
	p := start(t, prefork(2, 2, nil))
	eventually(t, 5*time.Second, "2 workers", func() bool { return p.count("on_child_start") == 2 })
	for _, cmd := range []string{"panic", "exit", "closeit"} {
		talk(p.addr, cmd)
		if s := mustTalk(t, p.addr, "hello"); s != "hello world\n" {
			t.Fatalf("after %s: %q", cmd, s)
		}
	}
	log := p.stderr.String()
	if n := strings.Count(log, "hook on_process panicked"); n != 1 {
		t.Fatalf("the panic: want one log line, have %d:\n%s", n, log)
	}
	eventually(t, 3*time.Second, "the os.Exit logged", func() bool {
		return strings.Count(p.stderr.String(), "exited abnormally: exit status 3") == 1
	})
	if strings.Contains(log, "closeit") || strings.Count(log, "level=error") > 1 {
		t.Fatalf("closing the connection in the hook is not an error:\n%s", log)
	}
}

// A client on the plain port that speaks TLS, or resets mid-greeting: the
// server logs and goes on.
func TestBadBytesOnTheWire(t *testing.T) {
	p := start(t, prefork(1, 1, func(o *config.Options) { o.ClientTimeout = config.Duration(500 * time.Millisecond) }))
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err == nil {
		t.Fatal("a TLS handshake with a plain server succeeded")
	}
	c.Close()
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "reset\n")
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	if s := mustTalk(t, p.addr, "hello"); s != "hello world\n" {
		t.Fatalf("after the bad clients: %q\n%s", s, p.stderr.String())
	}
}

// A full disk (stderr on /dev/full) or a closed stderr does not stop serving.
func TestStderrFullOrClosed(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip("no /dev/full")
	}
	defer full.Close()
	o := prefork(2, 4, func(o *config.Options) { o.Debug = true })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lf, _ := ln.(*net.TCPListener).File()
	addr := ln.Addr().String()
	ln.Close()
	defer lf.Close()
	r := startRaw(t, o, lf, full)
	for i := 0; i < 20; i++ {
		if s := mustTalk(t, addr, "hello"); s != "hello world\n" {
			t.Fatalf("with stderr on /dev/full: %q", s)
		}
	}
	talk(addr, "panic") // logs an error that cannot be written
	if s := mustTalk(t, addr, "hello"); s != "hello world\n" {
		t.Fatalf("after an unwritable error line: %q", s)
	}
	r.Kill()
	r.Wait()
	r = startRaw(t, o, lf, nil) // stderr closed
	for i := 0; i < 5; i++ {
		if s := mustTalk(t, addr, "hello"); s != "hello world\n" {
			t.Fatalf("with stderr closed: %q", s)
		}
	}
	r.Kill()
	r.Wait()
}

// startRaw starts the scenario server with the listener as fd 3 and stderr
// as given (nil: closed), through syscall.ForkExec, which can close fd 2.
func startRaw(t *testing.T, o config.Options, lf, stderr *os.File) *os.Process {
	t.Helper()
	errFd := ^uintptr(0) // closed
	if stderr != nil {
		errFd = stderr.Fd()
	}
	env := append(os.Environ(), (&proc{}).scenarioEnv(o)...)
	env = append(env, "WAITERTEST_FD=3")
	pid, err := syscall.ForkExec(os.Args[0], []string{os.Args[0], "-test.run=^$"}, &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{0, 1, errFd, lf.Fd()},
	})
	if err != nil {
		t.Fatal(err)
	}
	proc, _ := os.FindProcess(pid)
	t.Cleanup(func() { proc.Kill(); proc.Wait() })
	return proc
}

// 1,000 clients in forking mode: no zombie, the master's fds and goroutines
// where they were after warm-up. (10,000 in the soak.)
func TestForkingManyClientsNoLeak(t *testing.T) {
	forkingLeakCheck(t, 1000)
}

func forkingLeakCheck(t *testing.T, n int) {
	p := start(t, forking(2, 64, nil))
	var res tally
	run := func(count int) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for i := 0; i < count; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				s, err := talk(p.addr, "hello")
				res.add(outcome(s, err))
			}()
		}
		wg.Wait()
	}
	snapshot := func() (fds, goroutines int) {
		eventually(t, 10*time.Second, "the workers reaped", func() bool {
			return zombies(p.pid()) == 0 && len(children(p.pid())) == 2
		})
		ents, _ := os.ReadDir("/proc/" + strconv.Itoa(p.pid()) + "/fd")
		before := p.count("on_sig_usr1")
		p.signal(syscall.SIGUSR1)
		eventually(t, 5*time.Second, "the goroutine count", func() bool { return p.count("on_sig_usr1") > before })
		evs := p.readEvents()
		for i := len(evs) - 1; i >= 0; i-- {
			if f := strings.Fields(evs[i]); f[0] == "on_sig_usr1" {
				goroutines, _ = strconv.Atoi(f[2])
				break
			}
		}
		return len(ents), goroutines
	}
	run(100) // warm-up
	fds0, g0 := snapshot()
	t0 := time.Now()
	run(n)
	d := time.Since(t0)
	fds1, g1 := snapshot()
	t.Logf("%d forking clients in %s (%.0f/s): %v; master fds %d -> %d, goroutines %d -> %d",
		n, d.Round(time.Millisecond), float64(n)/d.Seconds(), res.String(), fds0, fds1, g0, g1)
	if res.get("ok") != n+100 {
		t.Fatalf("failed clients: %v", res.String())
	}
	if fds1 != fds0 {
		t.Fatalf("the master's fds grew: %d -> %d", fds0, fds1)
	}
	if g1 > g0+2 {
		t.Fatalf("the master's goroutines grew: %d -> %d", g0, g1)
	}
}
