package pool_test

// The supervisor's reports, reproduced with real processes: each test is a
// case that failed on the master before the supervisor was rebuilt (see
// pool/README.md), run with the test binary as master and workers. Each
// logs its figures with t.Logf.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/waiter-go/waiter/config"
)

// procRSS sums VmRSS (KiB) of pid and its children.
func procRSS(pid int) int {
	total := 0
	for _, p := range append([]int{pid}, children(pid)...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				n, _ := strconv.Atoi(strings.Fields(v)[0])
				total += n
			}
		}
	}
	return total
}

// pings returns when each WATCHDOG=1 arrived.
func (ns *notifySocket) pings() []time.Time {
	var out []time.Time
	for _, m := range ns.all() {
		if m.text == "WATCHDOG=1" {
			out = append(out, m.at)
		}
	}
	return out
}

// maxGap is the longest wait between pings in [from, to], counting from
// from and up to to.
func maxGap(pings []time.Time, from, to time.Time) time.Duration {
	var gap time.Duration
	last := from
	for _, p := range pings {
		if p.Before(from) || p.After(to) {
			continue
		}
		gap = max(gap, p.Sub(last))
		last = p
	}
	return max(gap, to.Sub(last))
}

// readyAfterLastReloading reports whether the last RELOADING=1 was followed
// by a READY=1, and counts both.
func (ns *notifySocket) readyAfterLastReloading() (ok bool, reloading, ready int) {
	last := ""
	for _, m := range ns.all() {
		switch m.text {
		case "RELOADING=1":
			reloading++
			last = m.text
		case "READY=1":
			ready++
			last = m.text
		}
	}
	return last == "READY=1", reloading, ready
}

// gens asks a worker for the generation of every slot in use: the slots'
// count, and how many slots each generation has.
func gens(addr string) (int, map[int]int, error) {
	s, err := talk(addr, "gens")
	if err != nil {
		return 0, nil, err
	}
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, nil, fmt.Errorf("gens: %q", s)
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, nil, fmt.Errorf("gens: %q", s)
	}
	by := map[int]int{}
	for _, x := range f[1:] {
		g, _, _ := strings.Cut(x, ":")
		v, _ := strconv.Atoi(g)
		by[v]++
	}
	return n, by, nil
}

// stderrCount counts the lines of the server's stderr that contain s.
func (p *proc) stderrCount(s string) int {
	return strings.Count(p.stderr.String(), s)
}

// growBound bounds how long the pool may take to grow past the idle clients.
const growBound = 90 * time.Second

// holdAsync connects and asks to be held, without waiting for the reply: the
// connection may wait in the backlog until a worker takes it. held is
// called once the server said "held".
func holdAsync(addr string, held func()) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c, "hold\n"); err != nil {
		c.Close()
		return nil, err
	}
	go func() {
		buf := make([]byte, 5)
		c.SetReadDeadline(time.Now().Add(growBound + 10*time.Second))
		if _, err := io.ReadFull(c, buf); err == nil && string(buf) == "held\n" {
			held()
		}
		c.SetReadDeadline(time.Time{})
	}()
	return c, nil
}

// 330 idle clients once wedged the master: growth queued more than 64
// starts, and the spawner's request queue and the master's result queue
// (64 each) waited on each other. Now the pool grows, the watchdog keeps
// being pinged, a further client is served, and a stop ends within
// graceful_timeout with every idle client still connected.
//
// Each worker is the race-enabled test binary: on 2 CPUs one starts in
// about 180 ms of CPU and 24 MiB of RSS, so growing to 331 workers takes
// 30 to 50 s and 8 GiB; growBound allows for that.
func TestProcIdleClientsDoNotWedgeTheMaster(t *testing.T) {
	const idle = 330
	ns := newNotifySocket(t)
	p := start(t, prefork(8, 400, func(o *config.Options) { o.GracefulTimeout = config.Duration(3 * time.Second) }),
		"NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=1000000")
	eventually(t, 10*time.Second, "READY=1", func() bool { return ns.count("READY=1") == 1 })

	var held atomic.Int64
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	t0 := time.Now()
	for i := 0; i < idle; i++ {
		c, err := holdAsync(p.addr, func() { held.Add(1) })
		if err != nil {
			t.Fatalf("idle client %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	// One more client, behind the idle ones in the backlog.
	extra := make(chan error, 1)
	var extraTook atomic.Int64
	go func() {
		t1 := time.Now()
		err := func() error {
			c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			// It waits in the backlog behind the idle clients until the
			// pool has grown past them.
			c.SetDeadline(time.Now().Add(growBound))
			io.WriteString(c, "hello\n")
			b, err := io.ReadAll(c)
			if err == nil && string(b) != "hello world\n" {
				err = fmt.Errorf("have %q", b)
			}
			return err
		}()
		extraTook.Store(int64(time.Since(t1)))
		extra <- err
	}()
	maxKids, maxRSS := 0, 0
	milestones := []int{32, 64, 128, 256, idle + 1}
	var marks []string
	var extraErr error
	extraDone := false
	deadline := time.Now().Add(growBound)
	for time.Now().Before(deadline) && (!extraDone || held.Load() < idle) {
		select {
		case extraErr = <-extra:
			extraDone = true
		case <-time.After(250 * time.Millisecond):
		}
		maxKids = max(maxKids, len(children(p.pid())))
		for len(marks) < len(milestones) && maxKids >= milestones[len(marks)] {
			marks = append(marks, fmt.Sprintf("%d at %s", milestones[len(marks)], time.Since(t0).Round(100*time.Millisecond)))
		}
		maxRSS = max(maxRSS, procRSS(p.pid()))
		if !alive(p.pid()) {
			t.Fatal("the master died")
		}
	}
	grown := time.Since(t0)
	pings := ns.pings()
	gap := maxGap(pings, t0, time.Now())
	t.Logf("%d idle clients, prefork 8 maxfork 400: %d held after %s, at most %d workers, tree RSS at most %d MiB (%d KiB a process); extra client served in %s (err %v); %d pings, longest gap %s",
		idle, held.Load(), grown.Round(time.Millisecond), maxKids, maxRSS/1024, maxRSS/max(1, maxKids+1),
		time.Duration(extraTook.Load()).Round(time.Millisecond), extraErr, len(pings), gap.Round(time.Millisecond))
	t.Logf("workers reached: %s", strings.Join(marks, ", "))
	if !extraDone || extraErr != nil {
		t.Fatalf("the extra client was not served: done %v, %v", extraDone, extraErr)
	}
	if held.Load() != idle {
		t.Fatalf("only %d of %d idle clients were taken by a worker", held.Load(), idle)
	}
	if maxKids < idle+1 || maxKids > 400 {
		t.Fatalf("want the pool to grow to between %d and 400 workers, have %d", idle+1, maxKids)
	}
	// WATCHDOG_USEC is 1 s: systemd kills a service that goes quiet that long.
	if gap >= time.Second {
		t.Fatalf("the watchdog went %s without a ping while the pool grew", gap)
	}

	t2 := time.Now()
	p.signal(syscall.SIGTERM)
	code := p.wait(10 * time.Second)
	stopTook := time.Since(t2)
	t.Logf("SIGTERM with %d idle clients connected: exit %d after %s (graceful_timeout 3s)", idle, code, stopTook.Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if stopTook > 3*time.Second+4*time.Second {
		t.Fatalf("the stop took %s, graceful_timeout is 3s", stopTook)
	}
	if ns.count("STOPPING=1") != 1 {
		t.Fatalf("want STOPPING=1 once: %s", ns.texts())
	}
}

// 150 workers at once: more starts than the old 64-entry queues, and at the
// stop more exits than the 64-entry exit channel.
func TestProcPreforkOf150ReadyAndStops(t *testing.T) {
	ns := newNotifySocket(t)
	t0 := time.Now()
	p := start(t, prefork(150, 150, nil), "NOTIFY_SOCKET="+ns.path)
	eventually(t, 30*time.Second, "READY=1 with 150 workers", func() bool { return ns.count("READY=1") == 1 })
	readyTook := time.Since(t0)
	kids := children(p.pid())
	starts := p.count("on_child_start")
	if s := mustTalk(t, p.addr, "hello"); s != "hello world\n" {
		t.Fatalf("have %q", s)
	}
	t1 := time.Now()
	p.signal(syscall.SIGTERM)
	code := p.wait(15 * time.Second)
	stopTook := time.Since(t1)
	t.Logf("prefork 150: READY=1 after %s (%d workers, %d started); TERM: exit %d after %s",
		readyTook.Round(time.Millisecond), len(kids), starts, code, stopTook.Round(time.Millisecond))
	if starts < 150 || len(kids) != 150 {
		t.Fatalf("READY=1 with %d children, %d started; want 150", len(kids), starts)
	}
	if code != 0 {
		t.Fatalf("exit code %d", code)
	}
	for _, k := range kids {
		if alive(k) {
			t.Fatalf("worker %d survived the stop", k)
		}
	}
	if n := p.count("on_child_exit"); n != 150 {
		t.Fatalf("want on_child_exit from each of 150 workers, have %d", n)
	}
	if strings.Contains(p.stderr.String(), "killing") {
		t.Fatalf("an idle worker had to be killed at the stop:\n%s", p.stderr.String())
	}
}

// HUPs in quick succession once left generations behind until no
// scoreboard slot was free, and a RELOADING=1 without its READY=1.
func TestProcHUPsInQuickSuccession(t *testing.T) {
	t.Run("fixed4", func(t *testing.T) {
		ns := newNotifySocket(t)
		p := start(t, prefork(-4, 0, nil), "NOTIFY_SOCKET="+ns.path)
		eventually(t, 10*time.Second, "READY=1", func() bool { return ns.count("READY=1") == 1 })
		for i := 0; i < 4; i++ {
			p.signal(syscall.SIGHUP)
			time.Sleep(3 * time.Millisecond)
		}
		t0 := time.Now()
		var hups, slots int
		var by map[int]int
		eventually(t, 15*time.Second, "4 workers of the newest generation, READY=1 after the last RELOADING=1", func() bool {
			ok, _, _ := ns.readyAfterLastReloading()
			if !ok {
				return false
			}
			hups = p.count("on_sig_hup")
			newest := 1 + hups
			var err error
			if slots, by, err = gens(p.addr); err != nil {
				return false
			}
			return slots == 4 && by[newest] == 4 && len(children(p.pid())) == 4
		})
		_, reloading, ready := ns.readyAfterLastReloading()
		t.Logf("4 HUPs 3ms apart, fixed pool of 4: %d HUPs seen, %d RELOADING=1, %d READY=1; settled in %s with slots %v",
			hups, reloading, ready, time.Since(t0).Round(time.Millisecond), by)
		if reloading != hups || ready < 2 {
			t.Fatalf("want a RELOADING=1 per HUP (%d) and READY=1 after: %s", hups, ns.texts())
		}
		if strings.Contains(p.stderr.String(), "no free scoreboard slot") {
			t.Fatalf("slots ran out:\n%s", p.stderr.String())
		}
		if s := mustTalk(t, p.addr, "hello"); s != "hello world\n" {
			t.Fatalf("have %q", s)
		}
	})
	t.Run("prefork50", func(t *testing.T) {
		ns := newNotifySocket(t)
		p := start(t, prefork(50, 100, nil), "NOTIFY_SOCKET="+ns.path)
		eventually(t, 15*time.Second, "READY=1", func() bool { return ns.count("READY=1") == 1 })
		for i := 0; i < 5; i++ {
			p.signal(syscall.SIGHUP)
			time.Sleep(time.Millisecond)
		}
		t0 := time.Now()
		var hups int
		var by map[int]int
		eventually(t, 20*time.Second, "50 workers of the newest generation, READY=1 after the last RELOADING=1", func() bool {
			ok, _, _ := ns.readyAfterLastReloading()
			if !ok {
				return false
			}
			hups = p.count("on_sig_hup")
			var slots int
			var err error
			if slots, by, err = gens(p.addr); err != nil {
				return false
			}
			return slots == 50 && by[1+hups] == 50
		})
		_, reloading, ready := ns.readyAfterLastReloading()
		t.Logf("5 HUPs 1ms apart, prefork 50 maxfork 100: %d HUPs seen, %d RELOADING=1, %d READY=1; settled in %s",
			hups, reloading, ready, time.Since(t0).Round(time.Millisecond))
		if reloading != hups {
			t.Fatalf("want a RELOADING=1 per HUP (%d): %s", hups, ns.texts())
		}
		if strings.Contains(p.stderr.String(), "no free scoreboard slot") {
			t.Fatalf("slots ran out:\n%s", p.stderr.String())
		}
	})
}

// TTIN in forking mode once raised the spares past the scoreboard, and the
// next reload could not start its generation.
func TestProcForkingTTINThenHUP(t *testing.T) {
	ns := newNotifySocket(t)
	p := start(t, forking(2, 4, nil), "NOTIFY_SOCKET="+ns.path)
	eventually(t, 10*time.Second, "READY=1", func() bool { return ns.count("READY=1") == 1 })
	// Signals of one kind coalesce: each TTIN is sent once the last one
	// was handled (accepted or refused).
	handled := func() int { return p.stderrCount("SIGTTIN: ") }
	for i := 0; i < 20; i++ {
		before := handled()
		p.signal(syscall.SIGTTIN)
		eventually(t, 5*time.Second, fmt.Sprintf("TTIN %d handled", i+1), func() bool { return handled() > before })
	}
	refused := p.stderrCount("SIGTTIN: refused")
	spares := 0
	eventually(t, 15*time.Second, "18 spares", func() bool { spares = len(children(p.pid())); return spares == 18 })
	t0 := time.Now()
	p.signal(syscall.SIGHUP)
	eventually(t, 15*time.Second, "READY=1 after RELOADING=1", func() bool {
		ok, reloading, _ := ns.readyAfterLastReloading()
		return ok && reloading == 1
	})
	t.Logf("forking, spares 2: 20 TTIN: %d refused, %d spares; HUP: READY=1 after %s", refused, spares, time.Since(t0).Round(time.Millisecond))
	if refused != 4 || !strings.Contains(p.stderr.String(), "18 spares is the most this start has room for (spares + 16)") {
		t.Fatalf("want 4 TTIN refused past 18 spares:\n%s", p.stderr.String())
	}
	if s := mustTalk(t, p.addr, "hello"); s != "hello world\n" {
		t.Fatalf("after the reload: %q", s)
	}
	// The reload went back to the options' spares.
	eventually(t, 10*time.Second, "2 spares after the reload", func() bool { return len(children(p.pid())) == 2 })
}

// Clients that reset once cost a worker each (on_process's error ended it)
// and a warning each.
func TestProcClientResetsCostNoWorker(t *testing.T) {
	const clients = 300
	p := start(t, prefork(4, 8, func(o *config.Options) { o.Debug = true }))
	eventually(t, 10*time.Second, "4 workers", func() bool { return p.count("on_child_start") == 4 })
	var wg sync.WaitGroup
	var bad atomic.Int64
	var mu sync.Mutex
	var firstErr error
	work := make(chan int, clients)
	for i := 0; i < clients; i++ {
		work <- i
	}
	close(work)
	t0 := time.Now()
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				err := func() error {
					c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
					if err != nil {
						return err
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(5 * time.Second))
					io.WriteString(c, "echo\n")
					buf := make([]byte, 12)
					if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello world\n" {
						return fmt.Errorf("greeting %q: %v", buf, err)
					}
					c.(*net.TCPConn).SetLinger(0) // close with RST
					return nil
				}()
				if err != nil {
					bad.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	// Every reset client reached on_close.
	eventually(t, 10*time.Second, "on_close for every client", func() bool { return p.count("on_close") >= clients })
	forks := p.count("on_fork_ok")
	log := p.stderr.String()
	warnings := strings.Count(log, "level=warning")
	debugClient := strings.Count(log, "waiter: client:")
	t.Logf("%d echo clients that reset, prefork 4: %d failed on our side (first: %v) in %s; %d forks; %d warning lines, %d client debug lines",
		clients, bad.Load(), firstErr, time.Since(t0).Round(time.Millisecond), forks, warnings, debugClient)
	if bad.Load() != 0 {
		t.Fatalf("%d clients were not greeted: %v", bad.Load(), firstErr)
	}
	if forks > 8 {
		t.Fatalf("%d workers started for %d resetting clients (want at most 8)", forks, clients)
	}
	if warnings > 2 {
		t.Fatalf("%d warning lines for %d resetting clients:\n%s", warnings, clients, log)
	}
	if s := mustTalk(t, p.addr, "hello"); s != "hello world\n" {
		t.Fatalf("after the resets: %q", s)
	}
}

// nofork once had no watchdog, no STATUS, a reload that changed nothing,
// and a stop that waited for its idle client without a word to systemd.
func TestProcNoforkIsSupervised(t *testing.T) {
	ns := newNotifySocket(t)
	reload := filepath.Join(t.TempDir(), "reload.json")
	o := opts(func(o *config.Options) { o.Nofork = true; o.GracefulTimeout = config.Duration(2 * time.Second) })
	p := start(t, o, "NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=1000000", "WAITERTEST_RELOAD="+reload)
	eventually(t, 5*time.Second, "READY=1", func() bool { return ns.count("READY=1") == 1 })
	t0 := time.Now()
	time.Sleep(3 * time.Second)
	n := len(ns.pings())
	gap := maxGap(ns.pings(), t0, time.Now())
	if n < 3 || gap >= time.Second {
		t.Fatalf("want WATCHDOG=1 every 500ms in nofork: %d in 3s, longest gap %s: %s", n, gap, ns.texts())
	}
	if ns.count("STATUS=nofork: ") == 0 {
		t.Fatalf("want STATUS= in nofork: %s", ns.texts())
	}
	before := mustTalk(t, p.addr, "opts")

	// A HUP with a changed option: the next client sees it.
	o2 := o
	o2.ClientTimeout = config.Duration(7 * time.Second)
	b, _ := json.Marshal(o2)
	if err := os.WriteFile(reload, b, 0o600); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "READY=1 after RELOADING=1", func() bool {
		ok, reloading, _ := ns.readyAfterLastReloading()
		return ok && reloading == 1
	})
	after := mustTalk(t, p.addr, "opts")
	t.Logf("nofork: %d pings in 3s, longest gap %s; before HUP %q, after %q", n, gap.Round(time.Millisecond), strings.TrimSpace(before), strings.TrimSpace(after))
	if !strings.Contains(before, "gen=1 client_timeout=0s") || !strings.Contains(after, "gen=2 client_timeout=7s") {
		// Not fatal: the stop below is a case of its own.
		t.Errorf("the HUP did not take the changed option: want client_timeout 0s in generation 1, 7s in generation 2: before %q, after %q", before, after)
	}

	// A stop with an idle client: STOPPING=1 at once, the exit within
	// graceful_timeout.
	c := hold(t, p.addr)
	defer c.Close()
	t1 := time.Now()
	p.signal(syscall.SIGTERM)
	var stoppingAt time.Time
	eventually(t, 2*time.Second, "STOPPING=1", func() bool {
		for _, m := range ns.all() {
			if m.text == "STOPPING=1" {
				stoppingAt = m.at
				return true
			}
		}
		return false
	})
	code := p.wait(6 * time.Second)
	stopTook := time.Since(t1)
	t.Logf("nofork TERM with an idle client: STOPPING=1 after %s, exit %d after %s (graceful_timeout 2s)",
		stoppingAt.Sub(t1).Round(time.Millisecond), code, stopTook.Round(time.Millisecond))
	if d := stoppingAt.Sub(t1); d > 200*time.Millisecond {
		t.Fatalf("STOPPING=1 came %s after SIGTERM", d)
	}
	if code != 0 || stopTook > 2*time.Second+2*time.Second {
		t.Fatalf("exit %d after %s; want 0 within graceful_timeout (2s) and a margin", code, stopTook)
	}
}

// refusedWithin dials addr until a connect is refused, for up to d; it
// returns how long that took and how many connects were accepted first.
func refusedWithin(addr string, d time.Duration) (took time.Duration, accepted int, refused bool) {
	t0 := time.Now()
	for time.Since(t0) < d+500*time.Millisecond {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if errors.Is(err, syscall.ECONNREFUSED) {
			return time.Since(t0), accepted, true
		}
		if err == nil {
			accepted++
			c.Close()
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(t0), accepted, false
}

// checkHeldServed checks that a client held through a stop is still
// served: its worker reads on and ends it cleanly.
func checkHeldServed(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte("more\n")); err != nil {
		t.Fatalf("the held client was cut during the stop: %v", err)
	}
	c.(*net.TCPConn).CloseWrite()
	buf := make([]byte, 16)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("the held client: want a clean EOF, have %q %v", buf[:n], err)
	}
}

// A stop once left a self-bound listener open until the master exited:
// clients connected during the drain and were reset seconds later. Sockets
// passed in stay open (systemd holds them and queues clients for the next
// start).
func TestProcStopClosesOwnListener(t *testing.T) {
	t.Run("self-bound", func(t *testing.T) {
		addr := freeAddr(t)
		p := startWith(t, prefork(2, 4, func(o *config.Options) { o.Listen = addr }), nil)
		if s := talkRetry(t, addr, "hello"); s != "hello world\n" {
			t.Fatalf("have %q", s)
		}
		c := hold(t, addr)
		p.signal(syscall.SIGTERM)
		took, accepted, refused := refusedWithin(addr, 200*time.Millisecond)
		t.Logf("self-bound listener: refused %v %s after SIGTERM (%d connects accepted before)", refused, took.Round(time.Millisecond), accepted)
		if !refused || took > 200*time.Millisecond {
			t.Fatalf("want connect refused within 200ms of SIGTERM: refused %v after %s", refused, took)
		}
		if !alive(p.pid()) {
			t.Fatal("the master exited with a client held")
		}
		checkHeldServed(t, c)
		if code := p.wait(10 * time.Second); code != 0 {
			t.Fatalf("exit code %d", code)
		}
	})
	t.Run("passed-fd", func(t *testing.T) {
		p := start(t, prefork(2, 4, nil))
		if s := mustTalk(t, p.addr, "hello"); s != "hello world\n" {
			t.Fatalf("have %q", s)
		}
		c := hold(t, p.addr)
		p.signal(syscall.SIGTERM)
		time.Sleep(300 * time.Millisecond)
		q, err := net.DialTimeout("tcp", p.addr, time.Second)
		t.Logf("passed listener (WAITERTEST_FD): connect 300ms into the drain: %v", err)
		if err != nil {
			t.Fatalf("a socket passed in was shut down at the stop: connect: %v", err)
		}
		q.Close()
		checkHeldServed(t, c)
		if code := p.wait(10 * time.Second); code != 0 {
			t.Fatalf("exit code %d", code)
		}
	})
	t.Run("systemd", func(t *testing.T) {
		addr := freeAddr(t)
		p := activate(t, prefork(2, 4, nil), []string{"-l", addr})
		if s := talkRetry(t, addr, "hello"); s != "hello world\n" {
			t.Fatalf("have %q", s)
		}
		c := hold(t, addr)
		p.signal(syscall.SIGTERM)
		time.Sleep(300 * time.Millisecond)
		q, err := net.DialTimeout("tcp", addr, time.Second)
		t.Logf("systemd listener (LISTEN_FDS): connect 300ms into the drain: %v", err)
		if err != nil {
			t.Fatalf("systemd's socket was shut down at the stop: connect: %v", err)
		}
		q.Close()
		checkHeldServed(t, c)
		if code := p.wait(10 * time.Second); code != 0 {
			t.Fatalf("exit code %d", code)
		}
	})
}

// A hook that truncated fd 3 (the scoreboard) once killed the master with
// SIGBUS: the memfd is sealed against resizing.
func TestProcScoreboardIsSealed(t *testing.T) {
	p := start(t, prefork(2, 4, nil))
	eventually(t, 10*time.Second, "2 workers", func() bool { return p.count("on_child_start") == 2 })
	s := mustTalk(t, p.addr, "truncate")
	t.Logf("ftruncate(3, 0) in a worker: %q", strings.TrimSpace(s))
	if !strings.Contains(s, "ftruncate=operation not permitted") || strings.Contains(s, "size=0") {
		t.Fatalf("want EPERM and the size kept, have %q", s)
	}
	for i := 0; i < 5; i++ {
		if s := mustTalk(t, p.addr, "hello"); s != "hello world\n" {
			t.Fatalf("after the truncate: %q", s)
		}
	}
	// The master still reads the scoreboard: it grows and serves STATUS.
	p.signal(syscall.SIGTTIN)
	eventually(t, 10*time.Second, "3 workers after TTIN", func() bool { return len(children(p.pid())) == 3 })
	if !alive(p.pid()) || strings.Contains(p.stderr.String(), "SIGBUS") {
		t.Fatalf("the master died:\n%s", p.stderr.String())
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// request_timeout in nofork: the stacks are logged, the client closed, and
// since the hook never returns, Run returns 1 (systemd restarts).
func TestProcNoforkRequestTimeout(t *testing.T) {
	p := start(t, opts(func(o *config.Options) { o.Nofork = true; o.RequestTimeout = config.Duration(time.Second) }))
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t0 := time.Now()
	io.WriteString(c, "block\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	if n, _ := c.Read(buf); string(buf[:n]) != "blocking\n" {
		t.Fatalf("have %q", buf[:n])
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, rerr := c.Read(buf)
	closedAfter := time.Since(t0)
	if rerr == nil || errors.Is(rerr, os.ErrDeadlineExceeded) {
		t.Fatalf("the stuck client's connection was not closed: %v", rerr)
	}
	code := p.wait(8 * time.Second)
	exitAfter := time.Since(t0)
	log := p.stderr.String()
	t.Logf("nofork request_timeout 1s: client closed after %s (%v), exit %d after %s",
		closedAfter.Round(time.Millisecond), rerr, code, exitAfter.Round(time.Millisecond))
	for _, want := range []string{"request_timeout", "goroutine ", "scenarioBlock", "did not return"} {
		if !strings.Contains(log, want) {
			t.Fatalf("want %q in the log:\n%s", want, log)
		}
	}
	if code != 1 {
		t.Fatalf("want exit code 1 (a stuck in-process worker), have %d", code)
	}
	if closedAfter < 900*time.Millisecond || closedAfter > 3*time.Second {
		t.Fatalf("the client was closed after %s; request_timeout is 1s", closedAfter)
	}
}
