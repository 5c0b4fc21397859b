package pool_test

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/waiter-go/waiter/config"
	"github.com/waiter-go/waiter/hooks"
	"github.com/waiter-go/waiter/pool"
)

func TestNoforkHelloAndHookOrder(t *testing.T) {
	p := start(t, opts(func(o *config.Options) { o.Nofork = true }))
	if have := mustTalk(t, p.addr, "hello"); have != "hello world\n" {
		t.Fatalf("want hello world, have %q", have)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code: want 0, have %d", code)
	}
	var hooks []string
	for _, e := range p.readEvents() {
		if h := strings.Fields(e)[0]; strings.HasPrefix(h, "on_") {
			hooks = append(hooks, h)
		}
	}
	// nofork is a pool of one in-process worker: it runs the worker-side
	// hooks too, on_child_start before its first client.
	want := "on_server_begin on_listen_ok on_child_start on_accept_ok on_process on_close on_child_exit on_server_close"
	if have := strings.Join(hooks, " "); have != want {
		t.Fatalf("hook order:\nwant %s\nhave %s", want, have)
	}
}

func TestNoforkPanicDoesNotStopServer(t *testing.T) {
	p := start(t, opts(func(o *config.Options) { o.Nofork = true }))
	if have, _ := talk(p.addr, "panic"); have != "" {
		t.Fatalf("a panicking client: want nothing, have %q", have)
	}
	if have := mustTalk(t, p.addr, "hello"); have != "hello world\n" {
		t.Fatalf("after a panic: want hello world, have %q", have)
	}
	if n := strings.Count(p.stderr.String(), "hook on_process panicked: scenario panic"); n != 1 {
		t.Fatalf("want the panic logged once, have %d times:\n%s", n, p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "STACK=") {
		t.Fatalf("want the panic's stack in the log:\n%s", p.stderr.String())
	}
	if p.count("on_close") != 2 {
		t.Fatalf("want on_close for both clients, have %d", p.count("on_close"))
	}
}

// Net::Waiter's nofork server died of SIGPIPE when a client reset and the
// server then wrote twice.
func TestNoforkClientResetThenTwoWrites(t *testing.T) {
	p := start(t, opts(func(o *config.Options) { o.Nofork = true }))
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("reset\n"))
	buf := make([]byte, 6)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).SetLinger(0) // close with RST
	c.Close()
	eventually(t, 5*time.Second, "the server to write twice after the reset", func() bool { return p.count("reset_survived") == 1 })
	if have := mustTalk(t, p.addr, "hello"); have != "hello world\n" {
		t.Fatalf("after a reset: want hello world, have %q", have)
	}
}

func TestMissingOnProcessIsRefused(t *testing.T) {
	// The scenario always sets OnProcess; this checks Run's guard directly.
	o := opts(func(o *config.Options) { o.Nofork = true; o.Listen = "127.0.0.1:0" })
	srv := newServerNoProcess(o)
	err := srv.Run()
	if !errors.Is(err, pool.ErrConfig) || !errors.Is(err, hooks.ErrNoProcess) || pool.ExitCode(err) != 1 {
		t.Fatalf("want ErrConfig wrapping hooks.ErrNoProcess (exit code 1) without on_process, have %v (%d)", err, pool.ExitCode(err))
	}
}

func TestPortInUseGives100(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := startWith(t, opts(func(o *config.Options) { o.Nofork = true; o.Listen = ln.Addr().String() }), nil)
	if code := p.wait(10 * time.Second); code != 100 {
		t.Fatalf("want exit code 100, have %d", code)
	}
	log := p.stderr.String()
	if n := strings.Count(strings.TrimSpace(log), "\n") + 1; n != 1 || !strings.Contains(log, "address already in use") {
		t.Fatalf("want one clear line about the address in use, have %d:\n%s", n, log)
	}
}

// With no socket given, the server binds its own (the fallback).
func TestNoforkOnItsOwnSocket(t *testing.T) {
	addr := freeAddr(t)
	p := startWith(t, opts(func(o *config.Options) { o.Nofork = true; o.Listen = addr }), nil)
	if s := talkRetry(t, addr, "hello"); s != "hello world\n" {
		t.Fatalf("want hello world, have %q", s)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
