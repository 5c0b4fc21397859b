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

	"github.com/waiter-go/waiter/config"
)

func forking(spares, max int, mut func(*config.Options)) config.Options {
	return opts(func(o *config.Options) {
		o.Prefork, o.Spares, o.Maxfork = 0, spares, max
		if mut != nil {
			mut(o)
		}
	})
}

func TestForkingEachClientInItsOwnProcess(t *testing.T) {
	for _, spares := range []int{0, 2} {
		t.Run(map[int]string{0: "no spares", 2: "2 spares"}[spares], func(t *testing.T) {
			p := start(t, forking(spares, 16, nil))
			pids := map[string]bool{}
			for i := 0; i < 10; i++ {
				s := strings.TrimSpace(mustTalk(t, p.addr, "pid"))
				if s == "" || s == "0" || pids[s] {
					t.Fatalf("client %d: pid %q reused or empty (have %v)", i, s, pids)
				}
				pids[s] = true
			}
			if pids[strings.TrimSpace(strconv.Itoa(p.pid()))] {
				t.Fatal("the master served a client itself")
			}
			eventually(t, 5*time.Second, "no zombie and only the spares left", func() bool {
				return zombies(p.pid()) == 0 && len(children(p.pid())) == spares
			})
		})
	}
}

func TestForkingHookOrder(t *testing.T) {
	// A long accept timeout: on_forking_idle must not interleave.
	p := start(t, forking(0, 4, func(o *config.Options) { o.Timeout = config.Duration(time.Minute) }))
	if s := mustTalk(t, p.addr, "hello"); s != "hello world\n" {
		t.Fatalf("have %q", s)
	}
	eventually(t, 5*time.Second, "on_sig_child", func() bool { return p.count("on_sig_child") == 1 })
	master := strconv.Itoa(p.pid())
	var seq []string
	for _, e := range p.readEvents() {
		f := strings.Fields(e)
		if !strings.HasPrefix(f[0], "on_") {
			continue
		}
		where := "worker"
		if f[1] == master {
			where = "master"
		}
		seq = append(seq, f[0]+"@"+where)
	}
	want := "on_server_begin@master on_listen_ok@master on_accept_ok@master on_fork_ok@master on_child_start@worker on_process@worker on_close@worker on_child_exit@worker on_sig_child@master"
	if have := strings.Join(seq, " "); have != want {
		t.Fatalf("hook order:\nwant %s\nhave %s", want, have)
	}
}

func TestForkingMaxforked(t *testing.T) {
	p := start(t, forking(1, 2, func(o *config.Options) { o.MaxforkWait = config.Duration(100 * time.Millisecond) }))
	hold(t, p.addr)
	hold(t, p.addr)
	if s := mustTalk(t, p.addr, "hello"); s != "busy, try later\n" {
		t.Fatalf("beyond maxfork: want on_maxforked's reply, have %q", s)
	}
	if p.count("on_maxforked") != 1 {
		t.Fatalf("on_maxforked: want 1, have %d", p.count("on_maxforked"))
	}
	// on_close runs for the refused client too, in the master.
	master := strconv.Itoa(p.pid())
	found := false
	for _, e := range p.readEvents() {
		if strings.HasPrefix(e, "on_close "+master) {
			found = true
		}
	}
	if !found {
		t.Fatal("on_close did not run in the master for the refused client")
	}
}

// Net::Waiter's per-connection children kept the listening socket open.
func TestForkingWorkerHoldsNoListener(t *testing.T) {
	for _, spares := range []int{0, 2} {
		p := start(t, forking(spares, 4, nil))
		if s := mustTalk(t, p.addr, "listeners"); s != "0\n" {
			t.Fatalf("spares %d: a forking worker holds %q listening sockets, want 0", spares, s)
		}
	}
}

// on_forking_idle runs on accept timeouts only; Net::Waiter ran it on every
// signal too.
func TestForkingIdleOnlyOnTimeouts(t *testing.T) {
	p := start(t, forking(0, 4, func(o *config.Options) { o.Timeout = config.Duration(400 * time.Millisecond) }))
	eventually(t, 10*time.Second, "the server listening", func() bool { return p.count("on_listen_ok") == 1 })
	for i := 0; i < 20; i++ {
		p.signal(syscall.SIGUSR1)
		time.Sleep(30 * time.Millisecond)
	}
	time.Sleep(1000*time.Millisecond - 600*time.Millisecond)
	// About 1 s has passed: two or three timeouts, whatever the signals.
	n := p.count("on_forking_idle")
	if n < 1 || n > 3 {
		t.Fatalf("on_forking_idle: want 1 to 3 in ~1s with a 400ms timeout, have %d (on_sig_usr1: %d)", n, p.count("on_sig_usr1"))
	}
}

func TestForkingGracefulStopAndKillMaster(t *testing.T) {
	p := start(t, forking(2, 8, nil))
	c := hold(t, p.addr)
	p.signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	if _, err := c.Write([]byte("x\n")); err != nil {
		t.Fatalf("the busy client was cut by the stop: %v", err)
	}
	c.Close()
	if code := p.wait(5 * time.Second); code != 0 {
		t.Fatalf("exit: %d", code)
	}

	q := start(t, forking(2, 8, nil))
	hold(t, q.addr)
	eventually(t, 5*time.Second, "3 workers (2 spares, 1 busy)", func() bool { return len(children(q.pid())) == 3 })
	kids := children(q.pid())
	q.signal(syscall.SIGKILL)
	eventually(t, time.Second, "every worker gone within 1s", func() bool {
		for _, k := range kids {
			if alive(k) {
				return false
			}
		}
		return true
	})
}

func TestAcceptErrorCallsHookAndDoesNotSpin(t *testing.T) {
	p := start(t, opts(func(o *config.Options) { o.Nofork = true }), "WAITERTEST_EMFILE=1")
	eventually(t, 5*time.Second, "the fd limit set", func() bool { return p.count("emfile_set") == 1 })
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eventually(t, 5*time.Second, "on_accept_error", func() bool { return p.count("on_accept_error") > 0 })
	time.Sleep(time.Second)
	if n := p.count("on_accept_error"); n > 20 {
		t.Fatalf("accept errors spin: %d in about a second", n)
	}
	if !strings.Contains(p.readEvents()[len(p.readEvents())-1], "too_many_open_files") {
		t.Fatalf("want EMFILE in the hook's error: %v", p.readEvents())
	}
	if !alive(p.pid()) {
		t.Fatal("the server died")
	}
	_ = os.Getpid
}

func TestForkingReloadUnderLoadFailsNothing(t *testing.T) {
	p := start(t, forking(2, 16, nil))
	stop := make(chan struct{})
	ok, failed, errs, done := steadyLoad(p.addr, 4, stop)
	// By count, not time: a race-enabled worker starts slowly here.
	eventually(t, 15*time.Second, "10 clients before the reload", func() bool { return ok.Load() >= 10 })
	p.signal(syscall.SIGHUP)
	eventually(t, 20*time.Second, "the reload done", func() bool { return strings.Contains(p.stderr.String(), "reloaded: generation 2") })
	before := ok.Load()
	eventually(t, 15*time.Second, "10 clients after the reload", func() bool { return ok.Load() >= before+10 })
	close(stop)
	done.Wait()
	if failed.Load() != 0 {
		var list []string
		errs.Range(func(k, _ any) bool { list = append(list, k.(string)); return true })
		t.Fatalf("%d of %d clients failed across the reload: %v", failed.Load(), ok.Load()+failed.Load(), list)
	}
	if ok.Load() < 20 {
		t.Fatalf("too little load to judge: %d", ok.Load())
	}
	eventually(t, 5*time.Second, "no zombie, the spares back", func() bool {
		return zombies(p.pid()) == 0 && len(children(p.pid())) == 2
	})
}

// A burst past maxfork waits in the backlog and is served, as in prefork
// mode: 64 clients that connect, ask and read to EOF, again and again for
// 5 s, against maxfork 32. (The old master accepted them all and closed
// nine in ten through on_maxforked.)
func TestForkingQueuesAtMaxfork(t *testing.T) {
	for _, spares := range []int{0, 4} {
		t.Run(fmt.Sprintf("spares=%d", spares), func(t *testing.T) {
			// maxfork_wait well past the burst and its drain: the pool is
			// full and clients wait in the backlog from its start to its
			// end, which on a loaded machine under the race detector can
			// pass the default's 10 s.
			p := start(t, forking(spares, 32, func(o *config.Options) { o.MaxforkWait = config.Duration(time.Minute) }))
			talkRetry(t, p.addr, "hello")
			var mu sync.Mutex
			ok, unanswered := 0, map[string]int{}
			stop := time.Now().Add(5 * time.Second)
			var wg sync.WaitGroup
			for i := 0; i < 64; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Now().Before(stop) {
						// A patient client: under the race detector a
						// worker takes ~100 ms of CPU to start, and 64
						// clients queue for 32 of them on 2 CPUs.
						s, err := talkWithin(p.addr, "hello", 60*time.Second)
						mu.Lock()
						switch {
						case err != nil:
							unanswered[err.Error()]++
						case s != "hello world\n":
							unanswered[fmt.Sprintf("reply %q", s)]++
						default:
							ok++
						}
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			bad := 0
			for _, n := range unanswered {
				bad += n
			}
			t.Logf("spares %d: %d served, %d unanswered %v, on_maxforked %d", spares, ok, bad, unanswered, p.count("on_maxforked"))
			if total := ok + bad; ok == 0 || float64(bad) > 0.01*float64(total) {
				t.Fatalf("want at most 1%% of %d clients unanswered, have %d: %v", total, bad, unanswered)
			}
			if n := p.count("on_maxforked"); n != 0 {
				t.Fatalf("on_maxforked ran %d times in a 5 s burst (maxfork_wait is a minute)", n)
			}
		})
	}
}

// Sustained overload: once the pool has been full for maxfork_wait, the
// master takes waiting clients and hands them to on_maxforked, until a
// worker frees.
func TestForkingShedsAfterMaxforkWait(t *testing.T) {
	wait := 600 * time.Millisecond
	p := start(t, forking(0, 2, func(o *config.Options) { o.MaxforkWait = config.Duration(wait) }))
	a := hold(t, p.addr)
	full := time.Now() // the pool is full once the second client is accepted, before it is held
	b := hold(t, p.addr)
	type res struct {
		s   string
		err error
		at  time.Duration
	}
	got := make(chan res, 1)
	go func() {
		s, err := talk(p.addr, "hello")
		got <- res{s, err, time.Since(full)}
	}()
	if left := time.Until(full.Add(wait / 2)); left > 0 { // a slow start may have used it up
		time.Sleep(left)
		if n := p.count("on_maxforked"); n != 0 {
			t.Fatalf("on_maxforked after %s of a full pool (maxfork_wait %s)", wait/2, wait)
		}
	}
	r := <-got
	t.Logf("the third client: %q %v after %s", r.s, r.err, r.at.Round(time.Millisecond))
	if r.err != nil || r.s != "busy, try later\n" || r.at < wait-200*time.Millisecond {
		t.Fatalf("want on_maxforked's reply after maxfork_wait (%s), have %q %v after %s", wait, r.s, r.err, r.at)
	}
	if !strings.Contains(p.stderr.String(), "(maxfork_wait): handing new clients to on_maxforked") {
		t.Fatalf("the shedding is not logged:\n%s", p.stderr.String())
	}
	a.Close()
	b.Close()
	eventually(t, 10*time.Second, "a client served once workers freed", func() bool {
		s, err := talk(p.addr, "hello")
		return err == nil && s == "hello world\n"
	})
}

// A burst past maxfork never runs more than maxfork workers with a client:
// those the accept loop took before its pause wait in the master.
func TestForkingBurstNeverPastMaxfork(t *testing.T) {
	o := forking(2, 4, func(o *config.Options) { o.MaxforkWait = config.Duration(time.Hour) })
	path := withControl(t, &o)
	p := start(t, o)
	talkRetry(t, p.addr, "hello")
	var conns []net.Conn
	for i := 0; i < 24; i++ {
		c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "hold\n")
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	most := 0
	for i := 0; i < 30; i++ {
		if n := len(busyWorkers(status(t, path))); n > most {
			most = n
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("24 held clients on maxfork 4: at most %d busy", most)
	if most != 4 {
		t.Fatalf("want exactly maxfork (4) workers busy, at most %d", most)
	}
}

// Clients the master took from the kernel before a stop (held at maxfork)
// are served during the stop, not closed: they are in no queue any more.
func TestForkingStopServesHeldClients(t *testing.T) {
	o := forking(0, 2, func(o *config.Options) {
		o.MaxforkWait = config.Duration(time.Hour)
		o.GracefulTimeout = config.Duration(20 * time.Second)
	})
	path := withControl(t, &o)
	p := start(t, o)
	talkRetry(t, p.addr, "hello")
	// A burst: 2 served at once, some taken by the accept loop before its
	// pause (they wait in the master), the rest in the kernel's queue.
	const n = 12
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
			if err != nil {
				return
			}
			io.WriteString(c, "hold\n")
			conns[i] = c
		}()
	}
	wg.Wait()
	var queued int
	eventually(t, 5*time.Second, "2 busy and clients waiting in the master", func() bool {
		st := status(t, path)
		queued = st.Queued
		return len(busyWorkers(st)) == 2 && queued > 0
	})
	p.signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	// Each client that is served reads "held" and closes, which frees its
	// worker for the next one waiting.
	var served atomic.Int32
	for _, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			b := make([]byte, 5)
			if _, err := io.ReadFull(c, b); err == nil && string(b) == "held\n" {
				served.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d clients: 2 busy and %d waiting in the master at the stop; %d served", n, queued, served.Load())
	if int(served.Load()) < 2+queued {
		t.Fatalf("want the 2 busy and the %d waiting in the master served, have %d served", queued, served.Load())
	}
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit: %d", code)
	}
	if strings.Contains(p.stderr.String(), "closed unserved") {
		t.Fatalf("clients closed unserved:\n%s", p.stderr.String())
	}
}

// Past graceful_timeout the clients still waiting in the master are closed,
// said in the log, and the master exits.
func TestForkingStopClosesWaitingAtGracefulTimeout(t *testing.T) {
	o := forking(0, 2, func(o *config.Options) {
		o.MaxforkWait = config.Duration(time.Hour)
		o.GracefulTimeout = config.Duration(time.Second)
	})
	path := withControl(t, &o)
	p := start(t, o)
	talkRetry(t, p.addr, "hello")
	var conns []net.Conn
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "hold\n")
		conns = append(conns, c)
	}
	eventually(t, 5*time.Second, "2 busy and clients waiting in the master", func() bool {
		st := status(t, path)
		return len(busyWorkers(st)) == 2 && st.Queued > 0
	})
	t0 := time.Now()
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit: %d", code)
	}
	if took := time.Since(t0); took > 5*time.Second {
		t.Fatalf("the stop took %s with graceful_timeout 1s", took)
	}
	if !strings.Contains(p.stderr.String(), "accepted clients closed unserved") {
		t.Fatalf("want the unserved clients logged:\n%s", p.stderr.String())
	}
}

// A steady stream of clients that each keep their worker a while: workers
// free often, but the next client is always waiting, so the overload is
// one and maxfork_wait bounds it (it was reset at every free, and clients
// waited without bound, none shed).
func TestForkingMaxforkWaitBoundsASteadyStream(t *testing.T) {
	wait := time.Second
	p := start(t, forking(0, 2, func(o *config.Options) { o.MaxforkWait = config.Duration(wait) }))
	talkRetry(t, p.addr, "hello")
	var mu sync.Mutex
	held, busy, other := 0, 0, 0
	var longest time.Duration
	stop := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 30; i++ { // past the 17 the accept loop can take at once
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				t0 := time.Now()
				c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
				if err != nil {
					mu.Lock()
					other++
					mu.Unlock()
					continue
				}
				c.SetDeadline(time.Now().Add(20 * time.Second))
				io.WriteString(c, "hold\n")
				b := make([]byte, 5)
				_, err = io.ReadFull(c, b)
				took := time.Since(t0)
				if err == nil && string(b) == "held\n" {
					time.Sleep(800 * time.Millisecond) // keeps the worker
				}
				c.Close()
				mu.Lock()
				switch {
				case err == nil && string(b) == "held\n":
					held++
				case err == nil && string(b) == "busy,":
					busy++
				default:
					other++
				}
				longest = max(longest, took)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("30 clients for 5 s on maxfork 2, maxfork_wait %s: %d served, %d busy, %d other; the longest wait %s", wait, held, busy, other, longest.Round(time.Millisecond))
	if busy == 0 || held == 0 {
		t.Fatalf("want some served and some turned away after maxfork_wait: %d served, %d busy", held, busy)
	}
	if longest > wait+wait/2 { // a worker's start (slow under the race detector) on top
		t.Fatalf("a client waited %s with maxfork_wait %s", longest, wait)
	}
}

// 30 clients at once on maxfork 2, each keeping its worker 700 ms, with
// maxfork_wait 1 s: when the first two free, the accept loop takes a batch
// that waits in the master; those have queued since the overload began and
// are shed when it reaches maxfork_wait (they were given a fresh
// maxfork_wait at their accept, and waited up to 1.7 s).
func TestForkingMaxforkWaitCountsHeldClientsFromTheOverload(t *testing.T) {
	wait := time.Second
	p := start(t, forking(0, 2, func(o *config.Options) { o.MaxforkWait = config.Duration(wait) }))
	talkRetry(t, p.addr, "hello")
	type res struct {
		reply string
		took  time.Duration
	}
	out := make(chan res, 30)
	for i := 0; i < 30; i++ {
		go func() {
			t0 := time.Now()
			c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
			if err != nil {
				out <- res{err.Error(), 0}
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			io.WriteString(c, "hold\n")
			b := make([]byte, 5)
			_, err = io.ReadFull(c, b)
			r := res{string(b), time.Since(t0)}
			if err != nil {
				r.reply = err.Error()
			}
			if r.reply == "held\n" {
				time.Sleep(700 * time.Millisecond)
			}
			out <- r
		}()
	}
	served, busy := 0, 0
	var longest time.Duration
	for i := 0; i < 30; i++ {
		r := <-out
		switch r.reply {
		case "held\n":
			served++
		case "busy,":
			busy++
		default:
			t.Fatalf("a client: %q", r.reply)
		}
		longest = max(longest, r.took)
	}
	t.Logf("30 at once on maxfork 2, 700 ms each, maxfork_wait %s: %d served, %d busy; the longest wait %s", wait, served, busy, longest.Round(time.Millisecond))
	if served < 2 || busy == 0 {
		t.Fatalf("want some served and the rest turned away: %d served, %d busy", served, busy)
	}
	if longest > wait+wait/2 {
		t.Fatalf("a client waited %s with maxfork_wait %s", longest, wait)
	}
}
