package pool_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/config"
)

// workers reads the pool size as the scoreboard shows it from inside a worker.
func workers(t *testing.T, addr string) (busy, all int) {
	t.Helper()
	s := mustTalk(t, addr, "busy")
	if _, err := fmt.Sscanf(s, "busy=%d all=%d", &busy, &all); err != nil {
		t.Fatalf("busy: %q: %v", s, err)
	}
	return busy, all
}

func prefork(n, max int, mut func(*config.Options)) config.Options {
	return opts(func(o *config.Options) {
		o.Prefork, o.Maxfork = n, max
		if mut != nil {
			mut(o)
		}
	})
}

func TestPreforkStartsPreforkWorkers(t *testing.T) {
	p := start(t, prefork(4, 8, nil))
	eventually(t, 5*time.Second, "4 workers ready", func() bool { return p.count("on_child_start") == 4 })
	busy, all := workers(t, p.addr)
	if busy != 1 || all != 4 {
		t.Fatalf("BusyKidsCount in a worker's on_process: want (1, 4), have (%d, %d)", busy, all)
	}
	time.Sleep(300 * time.Millisecond) // the master must not grow an idle pool
	if n := len(children(p.pid())); n != 4 {
		t.Fatalf("want 4 workers, have %d", n)
	}
	if have := mustTalk(t, p.addr, "busy"); !strings.Contains(have, "child=true") {
		t.Fatalf("IsChild in a worker: want true, have %q", have)
	}
}

// Held clients grow the pool up to maxfork and no further; the next client
// waits in the backlog (not refused) and is served when a worker frees.
func TestPreforkGrowsToMaxforkThenBacklog(t *testing.T) {
	p := start(t, prefork(2, 5, nil))
	eventually(t, 5*time.Second, "2 workers", func() bool { return len(children(p.pid())) == 2 })
	var held []net.Conn
	for i := 0; i < 5; i++ {
		held = append(held, hold(t, p.addr))
	}
	if n := len(children(p.pid())); n != 5 {
		t.Fatalf("with 5 clients held: want 5 workers, have %d", n)
	}
	// A sixth client: connected by the kernel, not served yet.
	type res struct {
		s   string
		err error
	}
	got := make(chan res, 1)
	go func() { s, err := talk(p.addr, "hello"); got <- res{s, err} }()
	select {
	case r := <-got:
		t.Fatalf("the sixth client was answered while 5 of 5 were busy: %q %v", r.s, r.err)
	case <-time.After(700 * time.Millisecond):
	}
	if n := len(children(p.pid())); n != 5 {
		t.Fatalf("beyond maxfork: want 5 workers, have %d", n)
	}
	held[0].Close()
	select {
	case r := <-got:
		if r.err != nil || r.s != "hello world\n" {
			t.Fatalf("the waiting client: want hello world, have %q %v", r.s, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting client was not served after a worker freed")
	}
}

func TestPreforkShrinksAfterPxIdle(t *testing.T) {
	p := start(t, prefork(2, 6, func(o *config.Options) {
		o.PxIdle = config.Duration(time.Second)
		o.Timeout = config.Duration(200 * time.Millisecond)
	}))
	eventually(t, 5*time.Second, "2 workers", func() bool { return len(children(p.pid())) == 2 })
	var held []net.Conn
	for i := 0; i < 5; i++ {
		held = append(held, hold(t, p.addr))
	}
	for _, c := range held {
		c.Close()
	}
	if n := len(children(p.pid())); n < 5 {
		t.Fatalf("want at least 5 workers after 5 held clients, have %d", n)
	}
	eventually(t, 8*time.Second, "the pool back to 2 after px_idle", func() bool { return len(children(p.pid())) == 2 })
	time.Sleep(1500 * time.Millisecond)
	if n := len(children(p.pid())); n != 2 {
		t.Fatalf("the pool must stay at prefork: want 2, have %d", n)
	}
	if p.count("on_prefork_child_idle") == 0 {
		t.Fatal("on_prefork_child_idle never ran")
	}
}

func TestFixedPoolNeverGrows(t *testing.T) {
	o := prefork(-2, 0, nil)
	o.Maxfork = 0
	p := start(t, o)
	eventually(t, 5*time.Second, "2 workers", func() bool { return len(children(p.pid())) == 2 })
	hold(t, p.addr)
	hold(t, p.addr)
	time.Sleep(400 * time.Millisecond)
	if n := len(children(p.pid())); n != 2 {
		t.Fatalf("negative prefork is a fixed pool: want 2 workers, have %d", n)
	}
}

func TestPreforkPropagatesUSR1(t *testing.T) {
	p := start(t, prefork(3, 3, func(o *config.Options) { o.PropSigusr = true }))
	eventually(t, 5*time.Second, "3 workers ready", func() bool { return p.count("on_child_start") == 3 })
	p.signal(syscall.SIGUSR1)
	eventually(t, 5*time.Second, "on_child_sig_usr1 in 3 workers", func() bool { return p.count("on_child_sig_usr1") == 3 })
	if n := p.count("on_sig_usr1"); n != 1 {
		t.Fatalf("on_sig_usr1 in the master: want 1, have %d", n)
	}
	pids := map[string]bool{}
	for _, e := range p.readEvents() {
		if f := strings.Fields(e); f[0] == "on_child_sig_usr1" {
			pids[f[1]] = true
		}
	}
	if len(pids) != 3 {
		t.Fatalf("want the hook in 3 distinct workers, have %v", pids)
	}
}

func TestPreforkGracefulStopLosesNoBusyClient(t *testing.T) {
	p := start(t, prefork(3, 3, nil))
	var held []net.Conn
	for i := 0; i < 3; i++ {
		held = append(held, hold(t, p.addr))
	}
	p.signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	select {
	case <-p.done:
		t.Fatal("the master exited while clients were busy")
	default:
	}
	for i, c := range held {
		// The worker still serves: it echoes nothing, but the connection is
		// open and ends cleanly when we close our side.
		if _, err := c.Write([]byte("more\n")); err != nil {
			t.Fatalf("client %d cut during the stop: %v", i, err)
		}
		c.(*net.TCPConn).CloseWrite()
		buf := make([]byte, 16)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(buf); n != 0 || err == nil || !strings.Contains(err.Error(), "EOF") {
			t.Fatalf("client %d: want a clean EOF from the worker, have %q %v", i, buf[:n], err)
		}
	}
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code: want 0, have %d", code)
	}
	if n := p.count("on_close"); n != 3 {
		t.Fatalf("on_close: want 3, have %d", n)
	}
	if p.count("on_server_close") != 1 {
		t.Fatal("on_server_close did not run")
	}
}

// A busy worker that does not finish is killed after graceful_timeout (the
// Perl module sent TERM for 8 s and never KILLed).
func TestStopKillsAfterGracefulTimeout(t *testing.T) {
	p := start(t, prefork(1, 1, func(o *config.Options) { o.GracefulTimeout = config.Duration(500 * time.Millisecond) }))
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("block\n"))
	buf := make([]byte, 9)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	kids := children(p.pid())
	t0 := time.Now()
	p.signal(syscall.SIGTERM)
	if code := p.wait(5 * time.Second); code != 0 {
		t.Fatalf("exit code: want 0, have %d", code)
	}
	if d := time.Since(t0); d < 400*time.Millisecond || d > 3*time.Second {
		t.Fatalf("want the stop to take about graceful_timeout (500ms), took %s", d)
	}
	for _, k := range kids {
		if alive(k) {
			t.Fatalf("worker %d survived the stop", k)
		}
	}
	if !strings.Contains(p.stderr.String(), "graceful_timeout") {
		t.Fatalf("want the kill logged:\n%s", p.stderr.String())
	}
}

// steadyLoad runs clients in a loop until stop is closed and counts failures.
func steadyLoad(addr string, clients int, stop chan struct{}) (ok, failed *atomic.Int64, errs *sync.Map, done *sync.WaitGroup) {
	ok, failed, errs, done = &atomic.Int64{}, &atomic.Int64{}, &sync.Map{}, &sync.WaitGroup{}
	for i := 0; i < clients; i++ {
		done.Add(1)
		go func() {
			defer done.Done()
			for n := 0; n < 100000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				s, err := talk(addr, "hello")
				if err == nil && s == "hello world\n" {
					ok.Add(1)
				} else {
					failed.Add(1)
					errs.Store(fmt.Sprintf("%q %v", s, err), true)
				}
			}
		}()
	}
	return
}

func TestPreforkReloadUnderLoadFailsNothing(t *testing.T) {
	p := start(t, prefork(4, 8, nil))
	eventually(t, 5*time.Second, "4 workers ready", func() bool { return p.count("on_child_start") == 4 })
	before := children(p.pid())
	stop := make(chan struct{})
	ok, failed, errs, done := steadyLoad(p.addr, 4, stop)
	time.Sleep(300 * time.Millisecond)
	p.signal(syscall.SIGHUP)
	time.Sleep(700 * time.Millisecond)
	p.signal(syscall.SIGHUP)
	time.Sleep(700 * time.Millisecond)
	close(stop)
	done.Wait()
	if failed.Load() != 0 {
		var list []string
		errs.Range(func(k, _ any) bool { list = append(list, k.(string)); return true })
		t.Fatalf("%d of %d clients failed across the reloads: %v", failed.Load(), ok.Load()+failed.Load(), list)
	}
	if ok.Load() < 50 {
		t.Fatalf("too little load to judge: %d clients", ok.Load())
	}
	eventually(t, 5*time.Second, "the old generation gone", func() bool {
		now := children(p.pid())
		for _, b := range before {
			for _, n := range now {
				if b == n {
					return false
				}
			}
		}
		return len(now) >= 4
	})
	if p.count("on_sig_hup") != 2 {
		t.Fatalf("on_sig_hup: want 2, have %d", p.count("on_sig_hup"))
	}
	t.Logf("%d clients served across two reloads", ok.Load())
}

func TestKillMasterLeavesNoWorker(t *testing.T) {
	p := start(t, prefork(4, 4, nil))
	eventually(t, 5*time.Second, "4 workers", func() bool { return len(children(p.pid())) == 4 })
	hold(t, p.addr) // a busy one too
	kids := children(p.pid())
	p.signal(syscall.SIGKILL)
	t0 := time.Now()
	eventually(t, time.Second, "every worker gone within 1s of the master's SIGKILL", func() bool {
		for _, k := range kids {
			if alive(k) {
				return false
			}
		}
		return true
	})
	t.Logf("workers gone %s after the master", time.Since(t0))
}

// The listening socket stays non-blocking in the master and in workers: no
// process flips it (the .File() trap) and the workers' acceptor never needs
// it blocking.
func TestListenerModeStaysNonBlocking(t *testing.T) {
	p := start(t, prefork(2, 2, nil))
	eventually(t, 5*time.Second, "2 workers", func() bool { return len(children(p.pid())) == 2 })
	mustTalk(t, p.addr, "hello")
	check := func(pid int) {
		t.Helper()
		found := 0
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd.Name()))
			if err != nil {
				continue
			}
			target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if !strings.HasPrefix(target, "socket:") || !isListener(pid, target) {
				continue
			}
			found++
			var flags int64
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "flags:"); ok {
					flags, _ = strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				}
			}
			if flags&unix.O_NONBLOCK == 0 {
				t.Fatalf("pid %d fd %s: the listener is blocking (flags %o)", pid, fd.Name(), flags)
			}
		}
		if found == 0 {
			t.Fatalf("pid %d holds no listener", pid)
		}
	}
	check(p.pid())
	for _, k := range children(p.pid()) {
		check(k)
	}
}

// isListener tells whether a socket inode is a listening TCP socket, from
// /proc/net/tcp (state 0A).
func isListener(pid int, target string) bool {
	inode := strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")
	for _, f := range []string{"tcp", "tcp6"} {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		for _, l := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(l)
			if len(fs) > 9 && fs[9] == inode && fs[3] == "0A" {
				return true
			}
		}
	}
	return false
}

func TestMaxRequestsRetiresWorkers(t *testing.T) {
	p := start(t, prefork(2, 2, func(o *config.Options) { o.MaxRequests = 5 }))
	eventually(t, 5*time.Second, "2 workers", func() bool { return len(children(p.pid())) == 2 })
	pids := map[string]bool{}
	for i := 0; i < 30; i++ {
		pids[strings.TrimSpace(mustTalk(t, p.addr, "pid"))] = true
	}
	// 30 clients, each worker retiring after 5 or 6: at least 5 workers.
	if len(pids) < 5 {
		t.Fatalf("max_requests 5: want at least 5 distinct workers for 30 clients, have %d", len(pids))
	}
	eventually(t, 5*time.Second, "the pool refilled to 2", func() bool { return len(children(p.pid())) == 2 })
}

func TestTTINAndTTOU(t *testing.T) {
	p := start(t, prefork(2, 6, nil))
	eventually(t, 5*time.Second, "2 workers", func() bool { return len(children(p.pid())) == 2 })
	p.signal(syscall.SIGTTIN)
	eventually(t, 5*time.Second, "3 workers after TTIN", func() bool { return len(children(p.pid())) == 3 })
	// Signals of one kind coalesce: wait for each to act before the next.
	p.signal(syscall.SIGTTOU)
	eventually(t, 5*time.Second, "2 workers after TTOU", func() bool { return len(children(p.pid())) == 2 })
	p.signal(syscall.SIGTTOU)
	eventually(t, 5*time.Second, "1 worker after two TTOU", func() bool { return len(children(p.pid())) == 1 })
	if s := mustTalk(t, p.addr, "hello"); s != "hello world\n" {
		t.Fatalf("after resizing: %q", s)
	}
}

func TestRequestTimeoutKillsAndLogsStacks(t *testing.T) {
	p := start(t, prefork(1, 1, func(o *config.Options) { o.RequestTimeout = config.Duration(300 * time.Millisecond) }))
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("block\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	if string(buf[:n]) != "blocking\n" {
		t.Fatalf("have %q", buf[:n])
	}
	// The blocked worker is killed: our connection ends.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err == nil {
		t.Fatal("the stuck client's connection was not ended")
	}
	eventually(t, 5*time.Second, "the kill logged", func() bool {
		return strings.Contains(p.stderr.String(), "stopped after request_timeout")
	})
	log := p.stderr.String()
	for _, want := range []string{"busy with one client for over 300ms (request_timeout)", "goroutine ", "main_test.go"} {
		if !strings.Contains(log, want) {
			t.Fatalf("want %q in the log:\n%s", want, log)
		}
	}
	if s := mustTalk(t, p.addr, "hello"); s != "hello world\n" {
		t.Fatalf("after the kill, a replacement serves: %q", s)
	}
}

// Net::Waiter woke every idle worker for every connection (6,339 of 6,566
// accepts were EAGAIN). With EPOLLEXCLUSIVE, serial clients cause few wasted
// wake-ups.
func TestIdleWorkersAreNotAHerd(t *testing.T) {
	p := start(t, prefork(8, 8, nil))
	eventually(t, 5*time.Second, "8 workers ready", func() bool { return p.count("on_child_start") == 8 })
	const n = 200
	for i := 0; i < n; i++ {
		mustTalk(t, p.addr, "hello")
	}
	var workers, wasted, served int
	fmt.Sscanf(mustTalk(t, p.addr, "stats"), "workers=%d wasted=%d served=%d", &workers, &wasted, &served)
	t.Logf("%d serial clients over %d idle workers: %d wasted wake-ups", n, workers, wasted)
	if wasted > n/4 {
		t.Fatalf("a herd: %d wasted wake-ups for %d clients", wasted, n)
	}
}

func TestOnProcessErrorEndsWorker(t *testing.T) {
	p := start(t, prefork(1, 1, nil))
	first := strings.TrimSpace(mustTalk(t, p.addr, "pid"))
	if s := mustTalk(t, p.addr, "stop"); s != "stopping\n" {
		t.Fatalf("have %q", s)
	}
	eventually(t, 5*time.Second, "a new worker after on_process returned an error", func() bool {
		s, err := talk(p.addr, "pid")
		return err == nil && strings.TrimSpace(s) != first && s != ""
	})
}

func TestPanicInWorkerCountsAsFailure(t *testing.T) {
	p := start(t, prefork(2, 2, nil))
	talk(p.addr, "panic")
	if s := mustTalk(t, p.addr, "hello"); s != "hello world\n" {
		t.Fatalf("after a panic: %q", s)
	}
	if !strings.Contains(p.stderr.String(), "hook on_process panicked") {
		t.Fatalf("the panic was not logged:\n%s", p.stderr.String())
	}
	talk(p.addr, "exit")
	talk(p.addr, "stop")
	mustTalk(t, p.addr, "hello")
	if n := p.count("run_returned"); n != 0 {
		t.Fatalf("Run returned %d times in workers (panic, os.Exit, on_process error)", n)
	}
	p.signal(syscall.SIGTERM)
	p.wait(10 * time.Second)
	if n := p.count("run_returned"); n != 1 {
		t.Fatalf("Run must return once, in the master: %d", n)
	}
}

// client_timeout frees a worker from a client that sends nothing, and the
// worker goes on serving (an idle-deadline wrapper once crashed workers when
// stored as the current client).
func TestClientTimeoutFreesWorker(t *testing.T) {
	p := start(t, prefork(1, 1, func(o *config.Options) { o.ClientTimeout = config.Duration(300 * time.Millisecond) }))
	first := strings.TrimSpace(mustTalk(t, p.addr, "pid"))
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t0 := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	// We send nothing: the worker's read times out (the scenario then says
	// "unknown command") and it closes the connection.
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("the silent client was not closed by the worker: %v (have %q)", err, b)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("the silent client was held %s with client_timeout 300ms", d)
	}
	if s := strings.TrimSpace(mustTalk(t, p.addr, "pid")); s != first {
		t.Fatalf("the same worker should serve on: first %s, now %s\n%s", first, s, p.stderr.String())
	}
}

// BusyKidsCount in a worker is the live figure from the scoreboard, not a
// copy taken when the worker started (Net::Waiter's was).
func TestBusyKidsCountIsLiveInWorkers(t *testing.T) {
	p := start(t, prefork(4, 4, nil))
	eventually(t, 5*time.Second, "4 workers ready", func() bool { return p.count("on_child_start") == 4 })
	for held := 0; held <= 2; held++ {
		// The previous asker's worker marks itself idle just after closing
		// our connection: allow it that moment.
		var busy, all int
		for i := 0; i < 50; i++ {
			if busy, all = workers(t, p.addr); busy == held+1 && all == 4 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if busy != held+1 || all != 4 {
			t.Fatalf("with %d clients held: want (%d, 4), have (%d, %d)", held, held+1, busy, all)
		}
		hold(t, p.addr)
	}
}
