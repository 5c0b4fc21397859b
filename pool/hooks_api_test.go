package pool_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/waiter-go/waiter/config"
)

// IsWorker and IsChild agree with each other in every mode, inside hooks:
// true in worker processes, false in nofork (no worker process).
func TestIsWorkerInEveryMode(t *testing.T) {
	for _, m := range []struct {
		name string
		o    config.Options
		want string
	}{
		{"prefork", prefork(2, 2, nil), "IsWorker=true IsChild=true\n"},
		{"forking", forking(1, 4, nil), "IsWorker=true IsChild=true\n"},
		{"nofork", opts(func(o *config.Options) { o.Nofork = true }), "IsWorker=false IsChild=false\n"},
	} {
		t.Run(m.name, func(t *testing.T) {
			p := start(t, m.o)
			if have := mustTalk(t, p.addr, "isworker"); have != m.want {
				t.Fatalf("want %q, have %q", m.want, have)
			}
		})
	}
}

// OnChildStart failing in every worker: workers exit before serving, the
// master backs off (starts per second bounded), and the error is logged
// once, not once per worker.
func TestChildStartFailingDoesNotSpin(t *testing.T) {
	p := start(t, prefork(4, 4, nil), "WAITERTEST_CHILD_START_FAILS=1")
	time.Sleep(3 * time.Second)
	starts := p.count("on_child_start")
	logged := strings.Count(p.stderr.String(), "on_child_start failed: scenario: the database is down")
	t.Logf("3 s of failing on_child_start on a pool of 4: %d starts, the error logged %d times", starts, logged)
	if starts > 40 {
		t.Fatalf("%d starts in 3 s: the master does not back off", starts)
	}
	if starts < 4 {
		t.Fatalf("only %d starts: the pool did not try", starts)
	}
	if logged != 1 {
		t.Fatalf("the error was logged %d times, want once\n%s", logged, p.stderr.String())
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// OnProcess's context is cancelled at a stop, with the kill time as its
// deadline, in every mode: the client hears it at once, not at
// graceful_timeout.
func TestProcessContextCancelledAtStop(t *testing.T) {
	for _, m := range []struct {
		name string
		o    config.Options
	}{
		{"prefork", prefork(2, 2, nil)},
		{"forking", forking(1, 4, nil)},
		{"nofork", opts(func(o *config.Options) { o.Nofork = true })},
	} {
		t.Run(m.name, func(t *testing.T) {
			m.o.GracefulTimeout = config.Duration(20 * time.Second)
			p := start(t, m.o)
			c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte("waitstop\n"))
			c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			if l, _ := r.ReadString('\n'); l != "waiting\n" {
				t.Fatalf("have %q", l)
			}
			t0 := time.Now()
			p.signal(syscall.SIGTERM)
			l, _ := r.ReadString('\n')
			if took := time.Since(t0); l != "stopping, killed in 20s\n" || took > time.Second {
				t.Fatalf("after TERM: %q after %s; want the stop with its deadline at once", l, took)
			}
			c.Close()
			if code := p.wait(10 * time.Second); code != 0 {
				t.Fatalf("exit code %d", code)
			}
		})
	}
}

// TestTERMAfterAStormOfSlowHUPs: 200 HUPs 1 ms apart, each reload taking
// 50 ms, fill the signal channel (32) many times over; a TERM sent in the
// middle must still stop the server (os/signal drops what does not fit,
// and a TERM behind HUPs was once lost).
func TestTERMAfterAStormOfSlowHUPs(t *testing.T) {
	p := start(t, prefork(2, 2, func(o *config.Options) { o.GracefulTimeout = config.Duration(3 * time.Second) }), "WAITERTEST_SLOW_RELOAD=1")
	eventually(t, 10*time.Second, "2 workers", func() bool { return p.count("on_child_start") >= 2 })
	var termAt time.Time
	for i := 0; i < 200; i++ {
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			break
		}
		if i == 100 {
			termAt = time.Now()
			p.signal(syscall.SIGTERM)
		}
		time.Sleep(time.Millisecond)
	}
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	t.Logf("stopped %s after the TERM, in a storm of 200 slow HUPs", time.Since(termAt).Round(time.Millisecond))
}

// TestForkingBurstPastTheAcceptQueue: 60 clients at once in forking mode,
// past the 16 accepted clients the master's accept loop can queue for the
// supervisor: the loop waits (the kernel's backlog holds the rest) and
// every client is served.
func TestForkingBurstPastTheAcceptQueue(t *testing.T) {
	p := start(t, forking(2, 64, nil))
	errs := make(chan error, 60)
	for i := 0; i < 60; i++ {
		go func() {
			s, err := talk(p.addr, "hello")
			if err == nil && s != "hello world\n" {
				err = fmt.Errorf("reply %q", s)
			}
			errs <- err
		}()
	}
	failed := 0
	for i := 0; i < 60; i++ {
		if err := <-errs; err != nil {
			failed++
			t.Log(err)
		}
	}
	if failed != 0 {
		t.Fatalf("%d of 60 clients failed", failed)
	}
}
