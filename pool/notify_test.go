package pool_test

import (
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/waiter-go/waiter/config"
)

// notifySocket is a fake systemd: it reads every sd_notify datagram.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []notifyMsg
}

type notifyMsg struct {
	at   time.Time
	text string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	ns := &notifySocket{path: filepath.Join(t.TempDir(), "notify")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := c.ReadFromUnix(buf)
			if err != nil {
				return
			}
			ns.mu.Lock()
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				ns.msgs = append(ns.msgs, notifyMsg{time.Now(), line})
			}
			ns.mu.Unlock()
		}
	}()
	return ns
}

func (ns *notifySocket) all() []notifyMsg {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return append([]notifyMsg(nil), ns.msgs...)
}

func (ns *notifySocket) count(prefix string) int {
	n := 0
	for _, m := range ns.all() {
		if strings.HasPrefix(m.text, prefix) {
			n++
		}
	}
	return n
}

func (ns *notifySocket) texts() string {
	var out []string
	for _, m := range ns.all() {
		out = append(out, m.text)
	}
	return strings.Join(out, " | ")
}

func TestNotifyReadyAfterWorkersStatusStopping(t *testing.T) {
	ns := newNotifySocket(t)
	p := start(t, prefork(4, 8, nil), "NOTIFY_SOCKET="+ns.path)
	var readyAt time.Time
	eventually(t, 5*time.Second, "READY=1", func() bool {
		for _, m := range ns.all() {
			if m.text == "READY=1" {
				readyAt = m.at
				return true
			}
		}
		return false
	})
	if n := p.count("on_child_start"); n != 4 {
		t.Fatalf("READY=1 came when %d of 4 workers had started", n)
	}
	eventually(t, 3*time.Second, "a STATUS line", func() bool { return ns.count("STATUS=prefork: 4 workers") > 0 })
	mustTalk(t, p.addr, "hello")
	eventually(t, 3*time.Second, "STATUS counting the client", func() bool { return ns.count("STATUS=prefork: 4 workers, 0 busy, 1 served, 0 failed") > 0 })
	p.signal(syscall.SIGTERM)
	p.wait(5 * time.Second)
	if ns.count("STOPPING=1") != 1 {
		t.Fatalf("want STOPPING=1 once, have: %s", ns.texts())
	}
	_ = readyAt
	// Workers never talk to systemd: every datagram came from the master
	// (the socket's peer credentials are not checked here, but a worker has
	// no NOTIFY_SOCKET at all: see TestWorkerEnvironment).
}

func TestNotifyReloading(t *testing.T) {
	ns := newNotifySocket(t)
	p := start(t, prefork(2, 4, nil), "NOTIFY_SOCKET="+ns.path)
	eventually(t, 5*time.Second, "READY=1", func() bool { return ns.count("READY=1") == 1 })
	p.signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "READY=1 after RELOADING=1", func() bool { return ns.count("READY=1") == 2 })
	var seq []string
	for _, m := range ns.all() {
		if m.text == "READY=1" || m.text == "RELOADING=1" || strings.HasPrefix(m.text, "MONOTONIC_USEC=") {
			seq = append(seq, strings.SplitN(m.text, "=", 2)[0])
		}
	}
	if have := strings.Join(seq, " "); have != "READY RELOADING MONOTONIC_USEC READY" {
		t.Fatalf("want READY RELOADING MONOTONIC_USEC READY, have %s", have)
	}
}

func TestWatchdogPingsAndStopsWhenWedged(t *testing.T) {
	ns := newNotifySocket(t)
	p := start(t, prefork(1, 1, nil), "NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=400000", "WAITERTEST_WEDGE=1")
	eventually(t, 5*time.Second, "READY=1", func() bool { return ns.count("READY=1") == 1 })
	time.Sleep(1200 * time.Millisecond)
	var pings []time.Time
	for _, m := range ns.all() {
		if m.text == "WATCHDOG=1" {
			pings = append(pings, m.at)
		}
	}
	// WATCHDOG_USEC 400ms: a ping every 200ms, about 6 in 1.2s.
	if len(pings) < 4 || len(pings) > 8 {
		t.Fatalf("want about 6 pings in 1.2s, have %d", len(pings))
	}
	for i := 1; i < len(pings); i++ {
		if gap := pings[i].Sub(pings[i-1]); gap > 400*time.Millisecond {
			t.Fatalf("a gap of %s between pings (WATCHDOG_USEC is 400ms)", gap)
		}
	}
	p.signal(syscall.SIGUSR2) // the scenario's hook wedges the loop
	eventually(t, 2*time.Second, "on_sig_usr2", func() bool { return p.count("on_sig_usr2") == 1 })
	before := ns.count("WATCHDOG=1")
	time.Sleep(time.Second)
	if after := ns.count("WATCHDOG=1"); after > before+1 {
		t.Fatalf("the wedged loop still pinged: %d pings after the wedge", after-before)
	}
	// The workers still serve: only the supervisor is stuck, and systemd is
	// who must act (it would kill and restart the service).
	if s := mustTalk(t, p.addr, "hello"); s != "hello world\n" {
		t.Fatalf("have %q", s)
	}
}

// When workers cannot start, the pings stop (systemd restarts the service).
func TestWatchdogStopsWhenWorkersCannotStart(t *testing.T) {
	ns := newNotifySocket(t)
	start(t, prefork(2, 2, nil), "NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=400000", "WAITERTEST_WORKER_FAILS=1")
	time.Sleep(2500 * time.Millisecond)
	n := ns.count("WATCHDOG=1")
	if ns.count("READY=1") != 0 {
		t.Fatal("READY=1 sent though no worker started")
	}
	time.Sleep(time.Second)
	if m := ns.count("WATCHDOG=1"); m != n {
		t.Fatalf("pings go on while every worker fails: %d then %d", n, m)
	}
}

func TestWorkerEnvironment(t *testing.T) {
	p := start(t, prefork(1, 1, nil), "NOTIFY_SOCKET=/nonexistent", "WATCHDOG_USEC=1000000000", "LISTEN_FDNAMES=stale")
	s := mustTalk(t, p.addr, "env")
	for _, bad := range []string{"NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_", "WAITER_"} {
		if strings.Contains(s, bad) {
			t.Fatalf("a worker's environment has %s: %s", bad, s)
		}
	}
	if !strings.Contains(s, "GOTRACEBACK=all") {
		t.Fatalf("want GOTRACEBACK=all in a worker: %s", s)
	}
}

var _ = config.Default
