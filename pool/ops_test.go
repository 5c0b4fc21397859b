package pool_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/waiter-go/waiter/config"
	"github.com/waiter-go/waiter/control"
)

// The operator's view, against real masters and workers: the control
// socket, metrics, the memory limits, the slow log and the overflow
// warning.

// withControl sets a control socket in a fresh directory.
func withControl(t *testing.T, o *config.Options) string {
	path := filepath.Join(t.TempDir(), "control")
	o.Control = path
	return path
}

// ctl sends one request and returns the reply; a transport error fails
// the test, an error reply does not.
func ctl(t *testing.T, path string, r control.Request) control.Reply {
	t.Helper()
	var c *control.Client
	var err error
	for i := 0; i < 100; i++ { // the socket appears once the master is up
		if c, err = control.Dial(path, time.Second); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rep, err := c.Do(r, 90*time.Second)
	if err != nil && rep.Error == "" {
		t.Fatalf("%s: %v", r.Cmd, err)
	}
	return rep
}

func status(t *testing.T, path string) *control.Status {
	t.Helper()
	rep := ctl(t, path, control.Request{Cmd: control.CmdStatus})
	if !rep.OK || rep.Status == nil {
		t.Fatalf("status: %+v", rep)
	}
	return rep.Status
}

func busyWorkers(st *control.Status) []control.Worker {
	var out []control.Worker
	for _, w := range st.Workers {
		if w.Peer != "" {
			out = append(out, w)
		}
	}
	return out
}

func TestOpsStatusShowsBusyWorkersAndTheirPeers(t *testing.T) {
	o := prefork(4, 8, nil)
	path := withControl(t, &o)
	p := start(t, o)
	mustTalk(t, p.addr, "hello")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("control socket: want a socket of mode 0600, have %v %v", fi.Mode(), err)
	}
	peers := map[string]bool{}
	for i := 0; i < 3; i++ {
		c := hold(t, p.addr)
		peers[c.LocalAddr().String()] = true
	}
	time.Sleep(300 * time.Millisecond)
	var st *control.Status
	eventually(t, 5*time.Second, "every worker's RSS sampled (once a second)", func() bool {
		st = status(t, path)
		for _, w := range st.Workers {
			if w.RSS == 0 {
				return false
			}
		}
		return true
	})
	if st.Mode != "prefork" || st.Maxfork != 8 || st.Prefork != 4 || st.PID != p.pid() || st.Generation != 1 || st.Serving != 1 {
		t.Fatalf("status header: %+v", st)
	}
	busy := busyWorkers(st)
	if len(busy) != 3 || len(st.Workers) < 4 {
		t.Fatalf("want 3 busy of at least 4 workers, have %d of %d: %+v", len(busy), len(st.Workers), st.Workers)
	}
	for _, w := range busy {
		if !peers[w.Peer] || w.State != "busy" || w.Busy.D() < 250*time.Millisecond || w.Busy.D() > time.Minute || w.RSS == 0 {
			t.Fatalf("busy worker: want one of %v, busy >= 250ms, an RSS: %+v", peers, w)
		}
	}
	if len(st.Listeners) != 1 || st.Listeners[0].Addr != p.addr || st.Listeners[0].Served != 1 || st.Listeners[0].MaxQueue <= 0 {
		t.Fatalf("listeners: %+v", st.Listeners)
	}
	// PSS on request.
	rep := ctl(t, path, control.Request{Cmd: control.CmdStatus, PSS: true})
	for _, w := range rep.Status.Workers {
		if w.PSS == 0 {
			t.Fatalf("asked for PSS, worker %d has none", w.PID)
		}
	}
}

// Clients past maxfork wait in the accept queue, and status shows it: its
// length near the backlog, and its maximum. The connections the kernel
// drops past it make the overflow warning and STATUS= say so.
func TestOpsAcceptQueuePastMaxforkAndOverflowWarning(t *testing.T) {
	addr := freeAddr(t)
	o := prefork(2, 8, func(o *config.Options) { o.Listen = addr; o.Backlog = 32 })
	path := withControl(t, &o)
	p := startWith(t, o, nil)
	talkRetry(t, addr, "hello")
	for i := 0; i < 8; i++ {
		hold(t, addr)
	}
	// 40 more: 33 fit the queue (backlog+1), the kernel drops the rest's
	// SYNs (and retries them later).
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err == nil {
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	t.Cleanup(func() {
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	var st *control.Status
	eventually(t, 10*time.Second, "the accept queue near its maximum of 32 in status", func() bool {
		st = status(t, path)
		l := st.Listeners[0]
		return l.MaxQueue == 32 && l.Queue >= 30
	})
	t.Logf("status: queue %d of %d, %d workers busy", st.Listeners[0].Queue, st.Listeners[0].MaxQueue, len(busyWorkers(st)))
	if n := len(busyWorkers(st)); n != 8 {
		t.Fatalf("want 8 busy workers (maxfork), have %d", n)
	}
	eventually(t, 5*time.Second, "the overflow warning", func() bool {
		return strings.Contains(p.stderr.String(), "connections on full accept queues in the last minute")
	})
	st = status(t, path)
	if st.ListenOverflowsMinute == 0 || !strings.Contains(st.Note, "dropped on full accept queues") {
		t.Fatalf("status after overflows: minute %d, note %q", st.ListenOverflowsMinute, st.Note)
	}
	if !strings.Contains(p.stderr.String(), "listen backlog 32 (net.core.somaxconn") {
		t.Fatalf("the backlog is not logged:\n%s", p.stderr.String())
	}
}

// A backlog above somaxconn is named in a warning.
func TestOpsBacklogAboveSomaxconnWarns(t *testing.T) {
	addr := freeAddr(t)
	p := startWith(t, prefork(1, 1, func(o *config.Options) { o.Listen = addr; o.Backlog = 1 << 20 }), nil)
	talkRetry(t, addr, "hello")
	if !regexp.MustCompile(`backlog 1048576 asked for, but the kernel allows \d+ \(net.core.somaxconn\)`).MatchString(p.stderr.String()) {
		t.Fatalf("no warning:\n%s", p.stderr.String())
	}
}

// A request from a uid other than the master's and root's is refused and
// logged; the socket's mode keeps it out before that.
func TestOpsControlRefusesOtherUIDs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed")
	}
	o := prefork(1, 2, nil)
	path := withControl(t, &o)
	p := start(t, o)
	mustTalk(t, p.addr, "hello")
	// The client: this test binary, copied where user nobody can run it.
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	for d := filepath.Dir(path); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // t.TempDir's directories are 0700
	}
	bin := filepath.Join(dir, "client")
	self, _ := os.Executable()
	if b, err := os.ReadFile(self); err != nil || os.WriteFile(bin, b, 0o755) != nil {
		t.Fatal(err)
	}
	asNobody := func() (string, error) {
		cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), "WAITERTEST_CTLCLIENT="+path)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, _ := asNobody()
	if !strings.Contains(out, "permission denied") {
		t.Fatalf("mode 0600: want the connect refused, have %q", out)
	}
	os.Chmod(path, 0o666) // past the first gate: SO_PEERCRED is the second
	out, _ = asNobody()
	if !strings.Contains(out, "uid 65534 may not use this control socket") {
		t.Fatalf("want a refusal naming the uid, have %q", out)
	}
	eventually(t, 3*time.Second, "the refusal logged", func() bool {
		return strings.Contains(p.stderr.String(), "refused a request from uid 65534")
	})
	if st := status(t, path); st.PID != p.pid() {
		t.Fatal("the owner is still answered")
	}
}

// ctlClientMain is the test binary as a control client (run as another
// user by TestOpsControlRefusesOtherUIDs).
func ctlClientMain(path string) {
	c, err := control.Dial(path, time.Second)
	if err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	_, err = c.Do(control.Request{Cmd: control.CmdStatus}, 5*time.Second)
	fmt.Println(err)
	os.Exit(1)
}

// A reload asked for on the control socket waits for its result: the new
// generation serving, or the reason it was refused.
func TestOpsReloadWaitsForItsResult(t *testing.T) {
	o := prefork(2, 4, nil)
	path := withControl(t, &o)
	file := filepath.Join(t.TempDir(), "reload.json")
	fails := filepath.Join(t.TempDir(), "fail")
	writeOpts(t, file, o)
	p := start(t, o, envReload+"="+file, "WAITERTEST_WORKER_FAILS_IF="+fails)
	mustTalk(t, p.addr, "hello")
	rep := ctl(t, path, control.Request{Cmd: control.CmdReload})
	if !rep.OK || rep.Reload == nil || rep.Reload.Result != "ok" || rep.Reload.Generation != 2 {
		t.Fatalf("good reload: %+v", rep)
	}
	// When the reply came, generation 2 serves.
	if st := status(t, path); st.Serving != 2 {
		t.Fatalf("after the reply: serving %d", st.Serving)
	}
	bad := o
	bad.Prefork, bad.Maxfork = 9, 4
	writeOpts(t, file, bad)
	rep = ctl(t, path, control.Request{Cmd: control.CmdReload})
	if rep.OK || !strings.Contains(rep.Error, "reload refused") || !strings.Contains(rep.Error, "maxfork") {
		t.Fatalf("bad reload: want refused naming maxfork, have %+v", rep)
	}
	st := status(t, path)
	if st.Serving != 2 || st.Reloads["ok"] != 1 || st.Reloads["refused"] != 1 || st.LastReload == nil || st.LastReload.Result != "refused" {
		t.Fatalf("after the refusal: %+v %+v", st, st.LastReload)
	}
	mustTalk(t, p.addr, "hello")
	// Good options whose workers cannot start: the reload fails, and
	// generation 2 serves on.
	writeOpts(t, file, o)
	os.WriteFile(fails, nil, 0o600)
	rep = ctl(t, path, control.Request{Cmd: control.CmdReload})
	if rep.OK || !strings.Contains(rep.Error, "reload failed") || !strings.Contains(rep.Error, "failed to start") {
		t.Fatalf("a reload whose workers fail: %+v", rep)
	}
	if st := status(t, path); st.Serving != 2 || st.Reloads["failed"] != 1 {
		t.Fatalf("after the failed reload: %+v", st)
	}
	mustTalk(t, p.addr, "hello")
	// A stop answers a reload still waiting.
	done := make(chan control.Reply, 1)
	go func() {
		cl, err := control.Dial(path, time.Second)
		if err != nil {
			done <- control.Reply{Error: err.Error()}
			return
		}
		defer cl.Close()
		r, _ := cl.Do(control.Request{Cmd: control.CmdReload}, 30*time.Second)
		done <- r
	}()
	time.Sleep(200 * time.Millisecond)
	p.signal(syscall.SIGTERM)
	select {
	case r := <-done:
		if r.OK || !strings.Contains(r.Error, "stopping") {
			t.Fatalf("a reload waiting at a stop: %+v", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no reply to the reload waiting at the stop")
	}
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func writeOpts(t *testing.T, file string, o config.Options) {
	t.Helper()
	b, _ := json.Marshal(o)
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestOpsWorkersAndStacks(t *testing.T) {
	o := prefork(2, 4, nil)
	path := withControl(t, &o)
	p := start(t, o)
	mustTalk(t, p.addr, "hello")
	rep := ctl(t, path, control.Request{Cmd: control.CmdWorkers, N: 1})
	if !rep.OK || rep.Workers.Target != 3 {
		t.Fatalf("workers +1: %+v", rep)
	}
	rep = ctl(t, path, control.Request{Cmd: control.CmdWorkers, N: 5})
	if !rep.OK || rep.Workers.Target != 4 || !strings.Contains(rep.Workers.Refused, "maxfork") {
		t.Fatalf("workers +5 past maxfork 4: want target 4 and the refusal, have %+v %+v", rep, rep.Workers)
	}
	rep = ctl(t, path, control.Request{Cmd: control.CmdWorkers, N: -10})
	if !rep.OK || rep.Workers.Target != 1 {
		t.Fatalf("workers -10: %+v %+v", rep, rep.Workers)
	}
	eventually(t, 10*time.Second, "the pool shrunk to 1", func() bool {
		return len(status(t, path).Workers) == 1
	})
	c := hold(t, p.addr)
	_ = c
	st := status(t, path)
	pid := busyWorkers(st)[0].PID
	rep = ctl(t, path, control.Request{Cmd: control.CmdStacks, PID: pid})
	if !rep.OK || !strings.Contains(rep.Stacks, "goroutine ") || !strings.Contains(rep.Stacks, "io.Copy") {
		t.Fatalf("stacks of the busy worker: want goroutines with the hook's io.Copy, have %+v", rep)
	}
	if !alive(pid) {
		t.Fatal("the worker died of its stacks")
	}
	// Twice in a row, and the worker goes on serving its client.
	if rep = ctl(t, path, control.Request{Cmd: control.CmdStacks, PID: pid}); !rep.OK {
		t.Fatalf("second stacks: %+v", rep)
	}
	if rep = ctl(t, path, control.Request{Cmd: control.CmdStacks, PID: 1}); rep.OK || !strings.Contains(rep.Error, "not a worker") {
		t.Fatalf("stacks of pid 1: %+v", rep)
	}
}

// Bad bytes on the control socket cost only their sender.
func TestOpsControlHostileClients(t *testing.T) {
	o := prefork(1, 2, nil)
	path := withControl(t, &o)
	p := start(t, o)
	mustTalk(t, p.addr, "hello")
	status(t, path)
	raw := func(send string) string {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, send)
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	for _, tc := range []struct{ send, want string }{
		{"{not json\n", "malformed request"},
		{`{"cmd":"status","junk":1}` + "\n", "malformed request"},
		{`{"cmd":"format-disk"}` + "\n", "unknown command"},
		{`{"cmd":"stacks"}` + "\n", "want the pid"},
		{`{"cmd":"workers","n":0}` + "\n", "not 0"},
		{strings.Repeat("x", 100<<10) + "\n", "request longer than"},
	} {
		if got := raw(tc.send); !strings.Contains(got, tc.want) {
			t.Errorf("%.40q: want %q, have %q", tc.send, tc.want, got)
		}
	}
	// More idle connections than the server serves at once: the extra
	// ones are told so; the supervisor serves clients meanwhile.
	var idle []net.Conn
	for i := 0; i < control.MaxConns; i++ {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	time.Sleep(100 * time.Millisecond)
	if got := raw(`{"cmd":"status"}` + "\n"); !strings.Contains(got, "busy") {
		t.Fatalf("connection %d: want busy, have %q", control.MaxConns+1, got)
	}
	mustTalk(t, p.addr, "hello")
	for _, c := range idle {
		c.Close()
	}
	eventually(t, 5*time.Second, "answered again once the idle ones left", func() bool {
		return strings.Contains(raw(`{"cmd":"status"}`+"\n"), `"ok":true`)
	})
}

// metricsAddr finds the metrics address in the master's log.
func metricsAddr(t *testing.T, p *proc) string {
	t.Helper()
	re := regexp.MustCompile(`metrics on http://([0-9.:]+)/metrics`)
	var addr string
	eventually(t, 10*time.Second, "the metrics address logged", func() bool {
		m := re.FindStringSubmatch(p.stderr.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	return addr
}

func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the metrics: %v", err)
	}
	return fams
}

// value returns the value of the family's metric whose labels include
// the given pairs; ok is false when there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestOpsMetricsMatchWhatHappened(t *testing.T) {
	o := prefork(2, 4, func(o *config.Options) { o.MetricsListen = "127.0.0.1:0"; o.MaxRequests = 3 })
	path := withControl(t, &o)
	file := filepath.Join(t.TempDir(), "reload.json")
	writeOpts(t, file, o)
	p := start(t, o, envReload+"="+file)
	addr := metricsAddr(t, p)
	eventually(t, 10*time.Second, "generation 1 serving", func() bool { return status(t, path).Serving == 1 })
	for i := 0; i < 10; i++ {
		mustTalk(t, p.addr, "hello")
	}
	mustTalk(t, p.addr, "sleep 120") // one client in the 0.25 s bucket
	p.signal(syscall.SIGHUP)
	time.Sleep(2500 * time.Millisecond) // the reload, and a published snapshot after it
	f := scrape(t, addr)
	check := func(name string, want float64, labels ...string) {
		t.Helper()
		v, ok := value(f, name, labels...)
		if !ok || v != want {
			t.Errorf("%s%v: want %v, have %v (present %v)", name, labels, want, v, ok)
		}
	}
	check("waiter_clients_total", 11, "listener", p.addr)
	check("waiter_clients_failed_total", 0, "listener", p.addr)
	check("waiter_client_duration_seconds", 11)
	check("waiter_reloads_total", 1, "result", "ok")
	check("waiter_reloads_total", 0, "result", "refused")
	check("waiter_pool_limit", 4, "limit", "maxfork")
	check("waiter_pool_limit", 2, "limit", "prefork")
	check("waiter_generation", 2, "which", "serving")
	// 11 clients at max_requests 3 (staggered by up to 10%: 3) retire
	// three workers of generation 1, and the reload the rest.
	if v, _ := value(f, "waiter_worker_exits_total", "cause", "max_requests"); v < 3 {
		t.Errorf("exits by max_requests: want at least 3, have %v", v)
	}
	if v, _ := value(f, "waiter_spawns_total"); v < 5 {
		t.Errorf("spawns: want at least 5, have %v", v)
	}
	h := f["waiter_client_duration_seconds"].Metric[0].Histogram
	var le025, le01 uint64
	for _, b := range h.Bucket {
		switch b.GetUpperBound() {
		case 0.1:
			le01 = b.GetCumulativeCount()
		case 0.25:
			le025 = b.GetCumulativeCount()
		}
	}
	if le01 != 10 || le025 != 11 || h.GetSampleSum() < 0.12 || h.GetSampleSum() > 2 {
		t.Errorf("durations: want 10 under 0.1s, 11 under 0.25s, a sum of 0.12-2s; have %d %d %v", le01, le025, h.GetSampleSum())
	}
	var workers float64
	for _, s := range []string{"starting", "idle", "busy", "exiting", "retiring"} {
		v, ok := value(f, "waiter_workers", "state", s)
		if !ok {
			t.Errorf("waiter_workers{state=%q} missing", s)
		}
		workers += v
	}
	if rss := f["waiter_worker_rss_bytes"]; rss == nil || len(rss.Metric) != int(workers) || workers < 2 {
		t.Errorf("per-worker rss: %v for %v workers", rss, workers)
	}
}

// A worker above max_worker_rss is retired after its client; above
// max_worker_rss_hard, its stacks are logged and it is killed.
func TestOpsMaxWorkerRSS(t *testing.T) {
	// Page faults are slow here (about 100 MB/s in a sandbox): sizes are
	// small, and each limit gets its own server.
	o := prefork(1, 2, func(o *config.Options) {
		o.MaxWorkerRSS = 150 << 20
		o.MetricsListen = "127.0.0.1:0"
	})
	path := withControl(t, &o)
	p := start(t, o)
	maddr := metricsAddr(t, p)
	c := dialCmd(t, p.addr, "alloc 200", "allocated\n")
	st := status(t, path)
	pid := busyWorkers(st)[0].PID
	eventually(t, 5*time.Second, "the soft limit logged", func() bool {
		return strings.Contains(p.stderr.String(), fmt.Sprintf("pid %d uses", pid)) && strings.Contains(p.stderr.String(), "above max_worker_rss (150M): retiring it after its client")
	})
	if !alive(pid) {
		t.Fatal("the soft limit killed the worker during its client")
	}
	c.Close() // its client is done: it retires
	eventually(t, 10*time.Second, "the worker retired and replaced", func() bool {
		st := status(t, path)
		return !alive(pid) && len(st.Workers) == 1 && st.Workers[0].PID != pid && st.Workers[0].State == "idle"
	})
	time.Sleep(1200 * time.Millisecond) // a published snapshot
	if v, _ := value(scrape(t, maddr), "waiter_worker_exits_total", "cause", "memory"); v != 1 {
		t.Errorf("exits for memory: want 1, have %v", v)
	}

	// The hard limit: the kill may come before the reply.
	o.MaxWorkerRSS, o.MaxWorkerRSSHard = 0, 150<<20
	path = withControl(t, &o)
	p = start(t, o)
	maddr = metricsAddr(t, p)
	c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "alloc 250\n")
	eventually(t, 5*time.Second, "the worker busy", func() bool {
		b := busyWorkers(status(t, path))
		if len(b) == 1 {
			pid = b[0].PID
		}
		return len(b) == 1
	})
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	if b, err := io.ReadAll(c); err != nil || (len(b) > 0 && string(b) != "allocated\n") {
		t.Fatalf("the client of a worker past the hard limit: want EOF, have %q %v", b, err)
	}
	eventually(t, 5*time.Second, "the kill and the stacks logged", func() bool {
		s := p.stderr.String()
		return !alive(pid) && strings.Contains(s, "above max_worker_rss_hard (150M): writing its stacks and killing it") &&
			strings.Contains(s, "goroutine ") && strings.Contains(s, "stopped after max_worker_rss_hard")
	})
	time.Sleep(1200 * time.Millisecond)
	if v, _ := value(scrape(t, maddr), "waiter_worker_exits_total", "cause", "memory"); v != 1 {
		t.Errorf("exits for memory: want 1, have %v", v)
	}
}

// dialCmd sends cmd and waits for want.
func dialCmd(t *testing.T, addr, cmd, want string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, cmd+"\n")
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want {
		t.Fatalf("%s: have %q, %v", cmd, buf, err)
	}
	c.SetReadDeadline(time.Time{})
	return c
}

// slow_request logs the stacks and the client once, and kills nothing.
func TestOpsSlowRequestLogsOnce(t *testing.T) {
	for _, mode := range []string{"prefork", "nofork"} {
		t.Run(mode, func(t *testing.T) {
			o := prefork(1, 2, func(o *config.Options) { o.SlowRequest = config.Duration(300 * time.Millisecond) })
			if mode == "nofork" {
				o.Nofork = true
			}
			p := start(t, o)
			c := dialCmd(t, p.addr, "sleep 1500", "slept\n")
			local := c.LocalAddr().String()
			s := p.stderr.String()
			if n := strings.Count(s, "slow request: busy with "+local); n != 1 {
				t.Fatalf("want the slow request logged once with its peer %s, have %d:\n%s", local, n, s)
			}
			if !strings.Contains(s, "time.Sleep") {
				t.Fatalf("no stacks in the slow log:\n%s", s)
			}
			if s := mustTalk(t, p.addr, "hello"); s != "hello world\n" {
				t.Fatalf("after the slow client: %q", s)
			}
		})
	}
}

// A limit below what a worker starts with must not end workers in a loop
// (each replacement as big as the last): the error says so, once.
func TestOpsMemoryLimitBelowAFreshWorker(t *testing.T) {
	for _, hard := range []bool{false, true} {
		t.Run(fmt.Sprintf("hard=%v", hard), func(t *testing.T) {
			o := prefork(2, 2, func(o *config.Options) {
				if hard {
					o.MaxWorkerRSSHard = 2 << 20
				} else {
					o.MaxWorkerRSS = 2 << 20
				}
			})
			path := withControl(t, &o)
			p := start(t, o)
			mustTalk(t, p.addr, "hello") // one worker has served: it is ended
			time.Sleep(3500 * time.Millisecond)
			st := status(t, path)
			fresh := 0
			for _, w := range st.Workers {
				if w.Served == 0 && time.Duration(w.Age) > 2*time.Second {
					fresh++
				}
			}
			if fresh < 1 {
				t.Fatalf("want the worker that served nobody kept for 3 s, have %+v", st.Workers)
			}
			if n := strings.Count(p.stderr.String(), "the limit is below what a worker starts with"); n != 1 {
				t.Fatalf("want the error once, have %d:\n%s", n, p.stderr.String())
			}
			if n := strings.Count(p.stderr.String(), "uses "); n > 2 {
				t.Fatalf("workers ended in a loop: %d lines\n%s", n, p.stderr.String())
			}
		})
	}
}

// Many slow clients at once: one stack dump a second, and a count of the
// rest.
func TestOpsSlowRequestFloodIsPaced(t *testing.T) {
	o := prefork(8, 8, func(o *config.Options) { o.SlowRequest = config.Duration(200 * time.Millisecond) })
	p := start(t, o)
	talkRetry(t, p.addr, "hello")
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			talkWithin(p.addr, "sleep 1500", 10*time.Second)
		}()
	}
	wg.Wait()
	s := p.stderr.String()
	dumps := strings.Count(s, "slow request: busy with")
	t.Logf("8 slow clients: %d stack dumps", dumps)
	if dumps < 1 || dumps > 3 {
		t.Fatalf("want 1 to 3 stack dumps for 8 slow clients in 1.5 s, have %d:\n%s", dumps, s)
	}
}
