package main

// The real thing: these tests run the real waiterd and the real waiterctl
// as processes, on 127.0.0.1, and read back what the operator would see
// (the tables, the JSON, the exit statuses, the terminal, /metrics) along
// with what the clients see on the wire.

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/waiter-go/waiter/control"
	"github.com/waiter-go/waiter/internal/racecheck"
)

// waiterdBuild is waiterd, built once for every test of this binary: next
// to waiterctl in TestMain's directory, which TestMain removes at the end.
var waiterdBuild struct {
	once sync.Once
	path string
	err  error
}

// waiterdBin builds waiterd as cmd/waiterd's tests do: with -race when this
// test binary has it (the race detector needs cgo), static otherwise.
func waiterdBin(t *testing.T) string {
	t.Helper()
	b := &waiterdBuild
	b.once.Do(func() {
		path := filepath.Join(filepath.Dir(bin), "waiterd")
		args := []string{"build", "-o", path}
		cgo := "CGO_ENABLED=0"
		if racecheck.Enabled() {
			args = append(args, "-race")
			cgo = "CGO_ENABLED=1"
		}
		cmd := exec.Command("go", append(args, "github.com/waiter-go/waiter/cmd/waiterd")...)
		cmd.Env = append(os.Environ(), cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("building waiterd: %w\n%s", err, out)
			return
		}
		// go build may have inherited the umask 0177 of a control.Listen
		// in a parallel test (TestControlListenUmask): its binary would
		// be 0600.
		if err := os.Chmod(path, 0o755); err != nil {
			b.err = err
			return
		}
		if racecheck.Enabled() {
			bi, err := buildinfo.ReadFile(path)
			if err != nil || !slices.Contains(bi.Settings, debug.BuildSetting{Key: "-race", Value: "true"}) {
				b.err = fmt.Errorf("a race-enabled test built a waiterd without -race: %v %v", bi, err)
				return
			}
		}
		b.path = path
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// syncBuffer is a running process's stderr that the test reads meanwhile
// (the master's and its workers': they share it).
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

// realWaiterd is a waiterd process under test with its control socket.
type realWaiterd struct {
	cmd    *exec.Cmd
	sock   string
	stderr *syncBuffer
	done   chan struct{}
	err    error // cmd.Wait's, once done is closed
}

// startWaiterd runs waiterd with args; sock is the control socket the args
// (or its config file) name. At the end of the test it is stopped (TERM,
// then KILL if it has not ended in 15 s) and its stderr checked for race
// reports.
func startWaiterd(t *testing.T, sock string, args ...string) *realWaiterd {
	t.Helper()
	d := &realWaiterd{cmd: exec.Command(waiterdBin(t), args...), sock: sock, stderr: &syncBuffer{}, done: make(chan struct{})}
	d.cmd.Stderr = d.stderr
	d.cmd.Env = testEnv()
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
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
			// A graceful stop: busy echo sessions end at once, with
			// their goodbye.
			if d.err != nil {
				t.Errorf("waiterd (pid %d) after a TERM: %v, want exit status 0", d.cmd.Process.Pid, d.err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("waiterd (pid %d) did not stop within 15 s of a TERM: killed", d.cmd.Process.Pid)
			d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("waiterd (pid %d) stderr:\n%s", d.cmd.Process.Pid, d.stderr.String())
		}
		racecheck.Report(t, fmt.Sprintf("waiterd (pid %d)", d.cmd.Process.Pid), d.stderr.String())
	})
	return d
}

// status is `waiterctl -json status`, decoded strictly; ok false with the
// reason when waiterctl did not exit 0 (the socket is not there yet, say).
func (d *realWaiterd) status(t *testing.T) (st control.Status, ok bool, why string) {
	t.Helper()
	r := waiterctl(t, nil, "-s", d.sock, "-json", "status")
	if r.code != 0 {
		return st, false, fmt.Sprintf("exit %d: %s", r.code, r.stderr)
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("-json status does not decode into control.Status: %v\n%s", err, r.stdout)
	}
	return st, true, r.stdout
}

// mustStatus is the status, which has to be there.
func (d *realWaiterd) mustStatus(t *testing.T) control.Status {
	t.Helper()
	st, ok, why := d.status(t)
	if !ok {
		t.Fatalf("status: %s", why)
	}
	return st
}

// waitStatus polls the status (about every 100 ms, at most within) until
// ok holds, and returns that status.
func (d *realWaiterd) waitStatus(t *testing.T, within time.Duration, what string, ok func(control.Status) bool) control.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	last := "none"
	for i := 0; i < int(within/(100*time.Millisecond))+1 && time.Now().Before(deadline); i++ {
		select {
		case <-d.done:
			t.Fatalf("waiterd exited (%v) while waiting for %s", d.err, what)
		default:
		}
		st, got, why := d.status(t)
		if got && ok(st) {
			return st
		}
		last = why
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("within %v: %s; the last status:\n%s", within, what, last)
	return control.Status{}
}

// waitLog waits, at most within, for waiterd's stderr to match re, and
// returns the match's submatches.
func (d *realWaiterd) waitLog(t *testing.T, within time.Duration, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for i := 0; i < int(within/(50*time.Millisecond))+1 && time.Now().Before(deadline); i++ {
		if m := re.FindStringSubmatch(d.stderr.String()); m != nil {
			return m
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("within %v: no %q in waiterd's stderr", within, re)
	return nil
}

// ready waits for waiterd to answer on its control socket with n idle
// workers of generation 1 (prefork mode), and returns the status.
func (d *realWaiterd) ready(t *testing.T, n int) control.Status {
	t.Helper()
	return d.waitStatus(t, 30*time.Second, fmt.Sprintf("%d idle workers", n), func(st control.Status) bool {
		return countWorkers(st, "idle") == n && len(st.Listeners) == 1
	})
}

// countWorkers counts the workers in state.
func countWorkers(st control.Status, state string) int {
	n := 0
	for _, w := range st.Workers {
		if w.State == state {
			n++
		}
	}
	return n
}

// busyByPeer is the busy workers by their client's address.
func busyByPeer(st control.Status) map[string]control.Worker {
	m := map[string]control.Worker{}
	for _, w := range st.Workers {
		if w.State == "busy" {
			m[w.Peer] = w
		}
	}
	return m
}

// echoClient is a waiterd -echo client that has read its greeting.
type echoClient struct {
	c net.Conn
	r *bufio.Reader
}

// dialEcho connects to addr and reads the greeting (bounded at 20 s: a
// client beyond the pool waits in the accept queue until the pool grows).
func dialEcho(addr string) (*echoClient, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	e := &echoClient{c: c, r: bufio.NewReader(c)}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	line, err := e.r.ReadString('\n')
	if err != nil || line != "hello world\n" {
		c.Close()
		return nil, fmt.Errorf("the greeting: want %q, have %q (%v)", "hello world\n", line, err)
	}
	return e, nil
}

// mustDialEcho is dialEcho that has to work; the connection is closed at
// the end of the test, if not before.
func mustDialEcho(t *testing.T, addr string) *echoClient {
	t.Helper()
	e, err := dialEcho(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.c.Close() })
	return e
}

// echo sends a line and wants it back within 10 s.
func (e *echoClient) echo(t *testing.T, line string) {
	t.Helper()
	e.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(e.c, line); err != nil {
		t.Fatalf("echo: %v", err)
	}
	have, err := e.r.ReadString('\n')
	if err != nil || have != line {
		t.Fatalf("echo: want %q back, have %q (%v)", line, have, err)
	}
}

// peer is the address the server sees for this client.
func (e *echoClient) peer() string { return e.c.LocalAddr().String() }

// echoSession is one whole echo client: greeting, a line and its echo, close.
func echoSession(t *testing.T, addr string) {
	t.Helper()
	e := mustDialEcho(t, addr)
	e.echo(t, "one line\n")
	e.c.Close()
}

// tableRows are the rows of one of status's tables ("listeners:" or
// "workers:"), split into fields, its header first.
func tableRows(t *testing.T, out, table string) [][]string {
	t.Helper()
	_, rest, ok := strings.Cut(out, "\n"+table+":\n")
	if !ok {
		t.Fatalf("no %q table in:\n%s", table, out)
	}
	var rows [][]string
	for _, l := range strings.Split(rest, "\n") {
		if strings.TrimSpace(l) == "" {
			break
		}
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

// headerValue is the value of a "key:  value" line of status's header.
func headerValue(t *testing.T, out, key string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %q line in:\n%s", key, out)
	return ""
}

// workersColumns is the workers table's header.
var workersColumns = []string{"PID", "SLOT", "GEN", "KIND", "STATE", "SERVED", "FAILED", "BUSY", "PEER", "RSS", "PSS", "CPU", "AGE"}

// busyRows are the workers table's busy rows by peer, checked against the
// header.
func busyRows(t *testing.T, out string) map[string][]string {
	t.Helper()
	rows := tableRows(t, out, "workers")
	if !slices.Equal(rows[0], workersColumns) {
		t.Fatalf("workers header: want %q, have %q", workersColumns, rows[0])
	}
	m := map[string][]string{}
	for _, r := range rows[1:] {
		if len(r) != len(workersColumns) {
			t.Fatalf("a workers row of %d fields: %q", len(r), r)
		}
		if r[4] == "busy" {
			m[r[8]] = r
		}
	}
	return m
}

// TestReal runs the scenarios against real processes, one after another
// (each starts its own waiterd), as one parallel test: it takes one of
// the -parallel slots for its minute or so and leaves the others to this
// package's quick tests, some of which (TestStatusTable's "up 3h00m")
// must run within a minute of the package's start.
func TestReal(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"Status", testRealStatus},
		{"AcceptQueueOverflow", testRealAcceptQueueOverflow},
		{"RefusesOtherUID", testRealRefusesOtherUID},
		{"Reload", testRealReload},
		{"WorkersAndStacks", testRealWorkersAndStacks},
		{"ErrorReplyWords", testRealErrorReplyWords},
		{"Metrics", testRealMetrics},
		{"Top", testRealTop},
	} {
		t.Run(tc.name, tc.f)
	}
}

// testRealStatus: against a prefork pool of 4 holding 3 echo clients after
// serving 5, status shows the 3 busy workers with exactly the clients'
// addresses, busy times that grow between two calls, the served counts,
// and the listener with its queue; -json says the same.
func testRealStatus(t *testing.T) {
	sock := filepath.Join(shortDir(t), "control")
	d := startWaiterd(t, sock, "-prefork", "4", "-maxfork", "8", "-echo", "-listen", "127.0.0.1:0", "-backlog", "64", "-control", sock)
	addr := d.ready(t, 4).Listeners[0].Addr

	for i := 0; i < 5; i++ {
		echoSession(t, addr)
	}
	d.waitStatus(t, 20*time.Second, "5 clients served", func(st control.Status) bool { return st.Served == 5 })

	held := map[string]*echoClient{}
	for i := 0; i < 3; i++ {
		e := mustDialEcho(t, addr)
		held[e.peer()] = e
	}
	d.waitStatus(t, 20*time.Second, "3 busy workers", func(st control.Status) bool { return len(busyByPeer(st)) == 3 })

	first := waiterctl(t, nil, "-s", sock, "status")
	wantExit(t, first, 0)
	time.Sleep(time.Second)
	second := waiterctl(t, nil, "-s", sock, "status")
	wantExit(t, second, 0)

	pid := d.cmd.Process.Pid
	for _, kv := range [][2]string{
		{"master", fmt.Sprintf("pid %d, prefork mode, up ", pid)},
		{"generation", "1 newest, 1 serving"},
		{"state", "running"},
		{"limits", "prefork 4, maxfork 8, spares 2"},
		{"clients", "5 served, 0 failed"},
		{"reloads", "0 ok, 0 refused, 0 failed"},
	} {
		if have := headerValue(t, second.stdout, kv[0]); !strings.HasPrefix(have, kv[1]) {
			t.Errorf("%s: want %q, have %q", kv[0], kv[1], have)
		}
	}
	// The listener: nothing queued (a worker is idle), the backlog asked
	// for, the 5 clients it has served.
	if have, want := tableRows(t, second.stdout, "listeners")[1], []string{"listen", addr, "0", "64", "5", "0"}; !slices.Equal(have, want) {
		t.Errorf("listener row: want %q, have %q\n%s", want, have, second.stdout)
	}

	rows1, rows2 := busyRows(t, first.stdout), busyRows(t, second.stdout)
	for _, rows := range []map[string][]string{rows1, rows2} {
		var peers []string
		for p := range rows {
			peers = append(peers, p)
		}
		sort.Strings(peers)
		want := make([]string, 0, len(held))
		for p := range held {
			want = append(want, p)
		}
		sort.Strings(want)
		if !slices.Equal(peers, want) {
			t.Fatalf("busy peers: want the held clients' %q, have %q\n%s", want, peers, second.stdout)
		}
	}
	workers := tableRows(t, second.stdout, "workers")[1:]
	if len(workers) != 4 {
		t.Errorf("want 4 workers, have %d:\n%s", len(workers), second.stdout)
	}
	var served int
	for _, r := range workers {
		var n int
		fmt.Sscan(r[5], &n)
		served += n
	}
	if served != 5 {
		t.Errorf("the workers' SERVED: want a sum of 5, have %d\n%s", served, second.stdout)
	}
	for p, r2 := range rows2 {
		r1 := rows1[p]
		b1, err1 := time.ParseDuration(r1[7])
		b2, err2 := time.ParseDuration(r2[7])
		if err1 != nil || err2 != nil || b2-b1 < 500*time.Millisecond {
			t.Errorf("%s: BUSY want to grow by about 1 s between the calls, have %q then %q", p, r1[7], r2[7])
		}
		if r1[0] != r2[0] {
			t.Errorf("%s: served by pid %s, then by %s", p, r1[0], r2[0])
		}
		t.Logf("client %s: worker %s busy %s, then %s", p, r2[0], r1[7], r2[7])
	}

	// -json: the same facts, as numbers.
	st := d.mustStatus(t)
	if st.PID != pid || st.Mode != "prefork" || st.Generation != 1 || st.Serving != 1 || st.Prefork != 4 || st.Maxfork != 8 ||
		st.Served != 5 || st.Failed != 0 || len(st.Workers) != 4 {
		t.Errorf("-json status: want pid %d, prefork, generation 1/1, prefork 4, maxfork 8, 5 served, 4 workers; have %+v", pid, st)
	}
	if len(st.Listeners) != 1 || st.Listeners[0] != (control.Listener{Name: "listen", Addr: addr, Queue: 0, MaxQueue: 64, Served: 5}) {
		t.Errorf("-json listeners: want %s with queue 0 of 64 and 5 served, have %+v", addr, st.Listeners)
	}
	busy := busyByPeer(st)
	for p := range held {
		w, ok := busy[p]
		if !ok {
			t.Errorf("-json: no busy worker with peer %s: %+v", p, st.Workers)
			continue
		}
		b2, _ := time.ParseDuration(rows2[p][7])
		if w.Busy.D() < b2 || w.Busy.D() < time.Second || fmt.Sprint(w.PID) != rows2[p][0] || w.Gen != 1 || w.Kind != "worker" {
			t.Errorf("-json: the worker of %s: want pid %s busy at least %s, have %+v", p, rows2[p][0], b2, w)
		}
	}

	// The held clients are served still.
	for _, e := range held {
		e.echo(t, "still here\n")
	}
}

// testRealAcceptQueueOverflow: with maxfork 8 busy and 40 more clients
// connecting, the listener's accept queue fills to its backlog of 32;
// past 33 pending connects the kernel drops SYNs, and the master says so
// in its log and in status.
func testRealAcceptQueueOverflow(t *testing.T) {
	sock := filepath.Join(shortDir(t), "control")
	d := startWaiterd(t, sock, "-prefork", "2", "-maxfork", "8", "-backlog", "32", "-echo", "-listen", "127.0.0.1:0", "-control", sock)
	addr := d.ready(t, 2).Listeners[0].Addr

	// 8 held clients, at once: the pool grows to maxfork to serve them.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	var mu sync.Mutex
	var held []*echoClient
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := dialEcho(addr)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			held = append(held, e)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	t.Cleanup(func() {
		for _, e := range held {
			e.c.Close()
		}
	})
	for err := range errs {
		t.Fatalf("a held client: %v", err)
	}
	d.waitStatus(t, 20*time.Second, "8 busy workers", func(st control.Status) bool { return countWorkers(st, "busy") == 8 })

	// 40 more: 33 fit in the queue (Linux admits one past the backlog),
	// the rest have their SYNs dropped until DialTimeout.
	var pending []net.Conn
	var dialed, timedOut int
	var other []string // dial errors other than the timeout
	var dwg sync.WaitGroup
	for i := 0; i < 40; i++ {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			c, err := net.DialTimeout("tcp", addr, 4*time.Second)
			mu.Lock()
			defer mu.Unlock()
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				timedOut++
				return
			case err != nil:
				other = append(other, err.Error())
				return
			}
			dialed++
			pending = append(pending, c)
		}()
	}
	t.Cleanup(func() {
		dwg.Wait() // bounded by DialTimeout
		for _, c := range pending {
			c.Close()
		}
	})

	st := d.waitStatus(t, 20*time.Second, "an accept queue of 28 or more", func(st control.Status) bool {
		return st.Listeners[0].Queue >= 28
	})
	if st.Listeners[0].MaxQueue != 32 {
		t.Errorf("-json: want the queue's maximum 32, have %+v", st.Listeners[0])
	}
	r := waiterctl(t, nil, "-s", sock, "status")
	wantExit(t, r, 0)
	row := tableRows(t, r.stdout, "listeners")[1]
	var q int
	fmt.Sscan(row[2], &q)
	if row[1] != addr || q < 28 || row[3] != "32" {
		t.Errorf("listener row: want %s with a queue of 28 or more of 32, have %q\n%s", addr, row, r.stdout)
	}
	t.Logf("the accept queue: %s of %s (json: %d of %d)", row[2], row[3], st.Listeners[0].Queue, st.Listeners[0].MaxQueue)

	// The master samples ListenOverflows each second and warns once a
	// minute; the counter is the network namespace's, so the warning
	// may come of another socket's overflow, but it names this queue.
	m := d.waitLog(t, 10*time.Second, regexp.MustCompile(`the kernel dropped (\d+) connections on full accept queues in the last minute[^"]*`+regexp.QuoteMeta(addr)+`: (\d+) queued of 32`))
	t.Logf("waiterd: %s", m[0])
	st = d.waitStatus(t, 20*time.Second, "listen overflows in the last minute", func(st control.Status) bool {
		return st.ListenOverflowsMinute > 0 && strings.Contains(st.Note, "connections dropped on full accept queues in the last minute")
	})
	r = waiterctl(t, nil, "-s", sock, "status")
	wantExit(t, r, 0)
	ovf := headerValue(t, r.stdout, "listen overflows")
	var total, minute uint64
	if _, err := fmt.Sscanf(ovf, "%d total, %d in the last minute", &total, &minute); err != nil || minute == 0 || total < minute {
		t.Errorf("listen overflows: want some in the last minute, have %q (%v)", ovf, err)
	}
	if note := headerValue(t, r.stdout, "note"); !strings.Contains(note, "connections dropped on full accept queues in the last minute") {
		t.Errorf("note: want the overflow, have %q", note)
	}
	dwg.Wait()
	t.Logf("listen overflows: %q; 40 connects: %d made, %d timed out; note %q", ovf, dialed, timedOut, st.Note)
	if dialed < 28 || timedOut == 0 || len(other) > 0 {
		t.Errorf("40 connects beyond maxfork: want 28 or more queued and the rest timed out, have %d made, %d timed out and errors %q", dialed, timedOut, other)
	}
	// The pool is at maxfork all along.
	if n := len(d.mustStatus(t).Workers); n != 8 {
		t.Errorf("want 8 workers (maxfork), have %d", n)
	}
}

// asNobody runs waiterctl as uid and gid 65534 (setpriv), from a copy in
// a 0755 directory.
type asNobody func(args ...string) result

// waiterdForNobody starts a waiterd whose control socket nobody can reach
// once the socket's mode lets them (its directory is 0755), and a way to
// run waiterctl as nobody. It skips unless run as root with setpriv.
func waiterdForNobody(t *testing.T) (*realWaiterd, string, asNobody) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run waiterctl as nobody")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skipf("no setpriv (util-linux): %v", err)
	}
	dir := shortDir(t)
	sock := filepath.Join(dir, "control")
	d := startWaiterd(t, sock, "-prefork", "1", "-listen", "127.0.0.1:0", "-control", sock)
	d.ready(t, 1)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("the control socket: want a socket of mode 0600, have %v %v", fi.Mode(), err)
	}
	// MkdirTemp's directories are 0700: nobody could not even look up
	// the socket in one, nor run a binary from one.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bdir := shortDir(t)
	if err := os.Chmod(bdir, 0o755); err != nil {
		t.Fatal(err)
	}
	ctl := filepath.Join(bdir, "waiterctl")
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	// Chmod too: a parallel test's control.Listen may have the umask at
	// 0177 just now (TestControlListenUmask).
	if err := os.WriteFile(ctl, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ctl, 0o755); err != nil {
		t.Fatal(err)
	}
	return d, sock, func(args ...string) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, setpriv, append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", ctl}, args...)...)
		cmd.Env = testEnv()
		cmd.Dir = "/"
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		err := cmd.Run()
		r := result{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee) && ee.Exited():
			r.code = ee.ExitCode()
		default:
			t.Fatalf("setpriv waiterctl %s: %v\n%s", strings.Join(args, " "), err, r.stderr)
		}
		racecheck.Report(t, "waiterctl as nobody", r.stderr)
		return r
	}
}

// refusal is what waiterctl says when the master refuses nobody.
const refusal = "permission denied: uid 65534 may not use this control socket"

// testRealRefusesOtherUID: another user cannot reach the master's 0600
// socket (the kernel says no: exit status 3); once the socket is opened up
// the master itself refuses the uid (SO_PEERCRED), logs it naming the uid,
// and does nothing that was asked, and waiterctl exits 1 with the
// master's refusal naming uid 65534, every time. (It used to exit 3 with
// "broken pipe" most of the time under -race: the master wrote its
// refusal and closed before waiterctl's request arrived; fixed in
// 426f07d, and TestControlClientReadsRefusal keeps it fixed.)
func testRealRefusesOtherUID(t *testing.T) {
	d, sock, nobody := waiterdForNobody(t)

	r := nobody("-s", sock, "status")
	wantExit(t, r, 3)
	if want := "waiterctl: control socket " + sock + ": permission denied (only the master's user and root may use it)\n"; r.stderr != want {
		t.Errorf("against the 0600 socket:\nwant %q\nhave %q", want, r.stderr)
	}
	if strings.Contains(d.stderr.String(), "refused a request") {
		t.Errorf("the kernel refused the connect, yet the master logged a refusal:\n%s", d.stderr.String())
	}

	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		cmd  []string
		want string
	}{
		{[]string{"reload"}, "waiterctl: reload: " + refusal + "\n"},
		// workers asks for the status first, for the target before.
		{[]string{"workers", "+1"}, "waiterctl: status: " + refusal + "\n"},
	}
	// And status, again and again: the refusal has to win every race.
	for i := 0; i < 5; i++ {
		cases = append(cases, struct {
			cmd  []string
			want string
		}{[]string{"status"}, "waiterctl: status: " + refusal + "\n"})
	}
	for _, tc := range cases {
		r = nobody(append([]string{"-s", sock}, tc.cmd...)...)
		if r.code != 1 || r.stderr != tc.want || r.stdout != "" {
			t.Errorf("%s as nobody against the 0666 socket: want exit 1 with %q, have %d, stdout %q, stderr %q", tc.cmd, tc.want, r.code, r.stdout, r.stderr)
		}
	}
	m := d.waitLog(t, 5*time.Second, regexp.MustCompile(`control: `+regexp.QuoteMeta(sock)+`: refused a request from uid 65534 \(pid \d+\): only uid 0 and root are answered`))
	t.Logf("waiterd: %s", m[0])

	// The master sends its refusal unasked, too: a client that only
	// reads gets it (from the system's python3, which nobody may run, when
	// there is one).
	if py := "/usr/bin/python3"; isExecutable(py) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", py, "-c",
			"import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nsys.stdout.write(s.makefile().readline())", sock)
		cmd.Dir = "/"
		out, err := cmd.CombinedOutput()
		if want := `{"ok":false,"error":"` + refusal + `"}` + "\n"; err != nil || string(out) != want {
			t.Errorf("a client as nobody that only reads: want %q, have %q (%v)", want, out, err)
		}
	}

	// Nothing was done for nobody, and root is answered still.
	st := d.mustStatus(t)
	if st.Prefork != 1 || len(st.Workers) != 1 || st.Generation != 1 || st.Reloads["ok"]+st.Reloads["refused"]+st.Reloads["failed"] != 0 {
		t.Errorf("nobody's requests changed the master: %+v", st)
	}
}

// isExecutable says whether others may run the file at path.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o001 != 0
}

// TestControlClientReadsRefusal: a refused client learns why, however late
// it writes its request, in this process and deterministically: a
// control.Server that refuses every uid, and a control.Client that writes
// 200 ms after connecting (the server waits for the request) or 1.3 s
// after (the server has given up on it, answered and closed: the write
// fails with EPIPE, and the refusal is read all the same). Before 426f07d
// the refusal was written at once and the connection closed, Do returned
// the write's EPIPE, and waiterctl as another user exited 3 "broken pipe"
// (9 of 10 times under -race on a loaded machine).
func TestControlClientReadsRefusal(t *testing.T) {
	t.Parallel()
	path := filepath.Join(shortDir(t), "refusing")
	l, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &control.Server{
		Allowed: func(uint32) bool { return false },
		Handle:  func(context.Context, control.Request) control.Reply { return control.Reply{OK: true} },
	}
	srv.Start(l)
	t.Cleanup(func() { srv.Close() })
	want := fmt.Sprintf("permission denied: uid %d may not use this control socket", os.Geteuid())
	for _, late := range []time.Duration{200 * time.Millisecond, 1300 * time.Millisecond} {
		c, err := control.Dial(path, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(late)
		rep, err := c.Do(control.Request{Cmd: control.CmdStatus}, 5*time.Second)
		c.Close()
		var re *control.ReplyError
		if !errors.As(err, &re) || rep.Error != want {
			t.Errorf("a request written %v after connecting: want the reply error %q, have %+v, %v", late, want, rep, err)
		}
	}
}

// TestControlListenUmask: control.Listen makes its socket 0600 from the
// start by setting the umask, but the umask is the process's, not the
// goroutine's: every file the process creates meanwhile, on any
// goroutine, is cut by 0177 too, and every child forked meanwhile keeps
// 0177 for its life. In this package that made the waiterd TestReal
// builds unexecutable ("fork/exec .../waiterd: permission denied"), when
// a parallel test's fake master called control.Listen just as `go build`
// started. The master calls it before its workers start, but a program
// that embeds package control (or a master that opens its control socket
// later) has no such luck. Listen could bind in a private 0700 directory
// and rename, or chmod before listen(2), instead.
func TestControlListenUmask(t *testing.T) {
	dir := shortDir(t)
	base := filepath.Join(dir, "base")
	if err := os.WriteFile(base, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(base)
	if err != nil {
		t.Fatal(err)
	}
	want := fi.Mode().Perm() // 0666 less the test's own umask

	stop := make(chan struct{})
	listens := make(chan int)
	go func() {
		n := 0
		defer func() { listens <- n }()
		for i := 0; i < 20000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			l, err := control.Listen(filepath.Join(dir, "control"))
			if err != nil {
				return
			}
			l.Close() // the socket file goes with it
			n++
		}
	}()
	files, cut := 0, 0
	var modes []string
	deadline := time.Now().Add(time.Second)
	for i := 0; i < 20000 && time.Now().Before(deadline); i++ {
		p := filepath.Join(dir, fmt.Sprintf("file%d", i))
		if err := os.WriteFile(p, nil, 0o666); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != want {
			cut++
			if len(modes) < 3 {
				modes = append(modes, m.String())
			}
		}
		os.Remove(p)
		files++
	}
	close(stop)
	n := <-listens
	t.Logf("%d files created beside %d control.Listen calls: %d cut to %v (want %v)", files, n, cut, modes, want)
	if cut > 0 {
		t.Fatalf("control.Listen's umask is process-wide: %d of %d files created on another goroutine beside %d Listen calls were %v, not %v", cut, files, n, modes, want)
	}
}

// testRealReload: waiterctl reload with a good file starts generation 2
// and says so; with a bad one it fails in one line naming the key and
// value, and generation 2 serves on; status counts both.
func testRealReload(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "control")
	cfg := filepath.Join(dir, "waiterd.yaml")
	write := func(head string) {
		t.Helper()
		body := head + "control: " + sock + "\nlisten: 127.0.0.1:0\necho: true\n"
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("prefork: 2\nmaxfork: 4\n")
	d := startWaiterd(t, sock, "-config", cfg)
	addr := d.ready(t, 2).Listeners[0].Addr

	// A good file: one line on stdout, once generation 2 serves.
	write("prefork: 3\nmaxfork: 4\n")
	r := waiterctl(t, nil, "-s", sock, "reload")
	wantExit(t, r, 0)
	if r.stdout != "reloaded: generation 2 serving\n" || r.stderr != "" {
		t.Errorf("good reload: want stdout %q, have stdout %q stderr %q", "reloaded: generation 2 serving\n", r.stdout, r.stderr)
	}
	st := d.waitStatus(t, 20*time.Second, "generation 2 serving with 3 workers", func(st control.Status) bool {
		if st.Generation != 2 || st.Serving != 2 || len(st.Workers) != 3 {
			return false
		}
		for _, w := range st.Workers {
			if w.Gen != 2 || w.State != "idle" {
				return false
			}
		}
		return true
	})
	if st.Prefork != 3 || st.Maxfork != 4 || st.Reloads["ok"] != 1 || st.LastReload == nil || st.LastReload.Result != "ok" || st.LastReload.Generation != 2 {
		t.Errorf("after the good reload: want prefork 3, maxfork 4, 1 ok reload of generation 2; have %+v, last %+v", st, st.LastReload)
	}
	if have := d.mustStatus(t).Listeners[0].Addr; have != addr {
		t.Errorf("the reload moved the listener from %s to %s", addr, have)
	}
	echoSession(t, addr)

	// Bad files: exit status 1, one line on stderr naming the key and
	// value; generation 2 serves on.
	for i, tc := range []struct {
		head, want string
	}{
		{"prefork: 3\nmaxfork: 1\n", `waiterd.yaml:2: key "maxfork": value "1": maxfork must not be less than prefork (3)`},
		{"prefork: 3\nmaxfork: 4\nmaxfrok: 4\n", `waiterd.yaml:3: key "maxfrok": value "4": unknown key`},
	} {
		write(tc.head)
		r := waiterctl(t, nil, "-s", sock, "reload")
		wantExit(t, r, 1)
		if !strings.HasPrefix(r.stderr, "waiterctl: reload refused: ") || !strings.Contains(r.stderr, tc.want) ||
			strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") || r.stdout != "" {
			t.Errorf("bad reload %d: want one line with %q, have stdout %q stderr %q", i+1, tc.want, r.stdout, r.stderr)
		}
		e := mustDialEcho(t, addr)
		e.echo(t, "after a refused reload\n")
		e.c.Close()

		st := d.mustStatus(t)
		if st.Generation != 2 || st.Serving != 2 || st.Prefork != 3 || st.Maxfork != 4 {
			t.Errorf("bad reload %d: want generation 2 serving, prefork 3 and maxfork 4 kept; have %+v", i+1, st)
		}
		if st.Reloads["ok"] != 1 || st.Reloads["refused"] != uint64(i+1) || st.Reloads["failed"] != 0 {
			t.Errorf("bad reload %d: want reloads ok 1, refused %d; have %v", i+1, i+1, st.Reloads)
		}
		if st.LastReload == nil || st.LastReload.Result != "refused" || !strings.Contains(st.LastReload.Reason, tc.want) {
			t.Errorf("bad reload %d: want the last reload refused for %q, have %+v", i+1, tc.want, st.LastReload)
		}
		if !strings.Contains(st.Note, "reload refused: ") || !strings.Contains(st.Note, tc.want) {
			t.Errorf("bad reload %d: the note: want the refusal, have %q", i+1, st.Note)
		}
		for _, w := range st.Workers {
			if w.Gen != 2 {
				t.Errorf("bad reload %d: a worker of generation %d: %+v", i+1, w.Gen, w)
			}
		}
		r = waiterctl(t, nil, "-s", sock, "status")
		wantExit(t, r, 0)
		if have, want := headerValue(t, r.stdout, "reloads"), fmt.Sprintf("1 ok, %d refused, 0 failed", i+1); have != want {
			t.Errorf("bad reload %d: reloads: want %q, have %q", i+1, want, have)
		}
		if have := headerValue(t, r.stdout, "last reload"); !strings.HasPrefix(have, "refused, ") || !strings.Contains(have, tc.want) {
			t.Errorf("bad reload %d: last reload: want refused with %q, have %q", i+1, tc.want, have)
		}
		if have := headerValue(t, r.stdout, "generation"); have != "2 newest, 2 serving" {
			t.Errorf("bad reload %d: generation: want %q, have %q", i+1, "2 newest, 2 serving", have)
		}
	}
	if n := strings.Count(d.stderr.String(), "reload refused, keeping the running options"); n != 2 {
		t.Errorf("waiterd logged %d refused reloads, want 2", n)
	}
}

// testRealWorkersAndStacks: workers +N/-N move a real prefork pool's
// target and its workers follow; stacks of a busy worker shows waiterd's
// on_process, and leaves the worker and its client alone.
func testRealWorkersAndStacks(t *testing.T) {
	sock := filepath.Join(shortDir(t), "control")
	d := startWaiterd(t, sock, "-prefork", "3", "-maxfork", "6", "-echo", "-listen", "127.0.0.1:0", "-control", sock)
	addr := d.ready(t, 3).Listeners[0].Addr

	r := waiterctl(t, nil, "-s", sock, "workers", "+2")
	wantExit(t, r, 0)
	if want := "target: 5 workers (was 3)\n"; r.stdout != want {
		t.Errorf("workers +2: want %q, have %q", want, r.stdout)
	}
	d.waitStatus(t, 20*time.Second, "5 idle workers for a target of 5", func(st control.Status) bool {
		return st.Prefork == 5 && len(st.Workers) == 5 && countWorkers(st, "idle") == 5
	})

	r = waiterctl(t, nil, "-s", sock, "workers", "-1")
	wantExit(t, r, 0)
	if want := "target: 4 workers (was 5)\n"; r.stdout != want {
		t.Errorf("workers -1: want %q, have %q", want, r.stdout)
	}
	d.waitStatus(t, 20*time.Second, "4 workers for a target of 4", func(st control.Status) bool {
		return st.Prefork == 4 && len(st.Workers) == 4 && countWorkers(st, "idle") == 4
	})

	// Past maxfork: done in part, then refused whole.
	r = waiterctl(t, nil, "-s", sock, "workers", "+5")
	wantExit(t, r, 0)
	if want := "target: 6 workers (was 4)\npartly refused: the pool is at maxfork (6)\n"; r.stdout != want {
		t.Errorf("workers +5: want %q, have %q", want, r.stdout)
	}
	// Refused whole: exit status 1 (its words: TestReal/ErrorReplyWords).
	r = waiterctl(t, nil, "-s", sock, "workers", "+1")
	wantExit(t, r, 1)
	if want := "the pool is at maxfork (6)\n"; !strings.HasPrefix(r.stderr, "waiterctl: workers") || !strings.HasSuffix(r.stderr, want) || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("workers +1 at maxfork: want one line ending %q, have %q", want, r.stderr)
	}
	d.waitStatus(t, 20*time.Second, "6 workers for a target of 6", func(st control.Status) bool {
		return st.Prefork == 6 && len(st.Workers) == 6 && countWorkers(st, "idle") == 6
	})

	// A busy worker's stacks.
	e := mustDialEcho(t, addr)
	st := d.waitStatus(t, 20*time.Second, "the client's worker busy", func(st control.Status) bool {
		_, ok := busyByPeer(st)[e.peer()]
		return ok
	})
	w := busyByPeer(st)[e.peer()]
	r = waiterctl(t, nil, "-s", sock, "stacks", fmt.Sprint(w.PID))
	wantExit(t, r, 0)
	for _, want := range []string{"goroutine ", "main.greet(", "cmd/waiterd/main.go:", "internal/hookrun.(*Runner).Process("} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stacks %d: want %q in:\n%s", w.PID, want, r.stdout)
		}
	}
	t.Logf("stacks of worker %d: %d lines, %d goroutines", w.PID, strings.Count(r.stdout, "\n"), strings.Count(r.stdout, "goroutine "))
	if err := syscall.Kill(w.PID, 0); err != nil {
		t.Errorf("worker %d after its stacks: %v", w.PID, err)
	}
	e.echo(t, "after the stacks\n")
	after := busyByPeer(d.mustStatus(t))[e.peer()]
	if after.PID != w.PID || after.Served != w.Served {
		t.Errorf("the client's worker: want pid %d serving it still, have %+v", w.PID, after)
	}

	// Not a worker: the master says no.
	r = waiterctl(t, nil, "-s", sock, "stacks", fmt.Sprint(d.cmd.Process.Pid))
	wantExit(t, r, 1)
	if want := fmt.Sprintf("pid %d is not a worker of this server\n", d.cmd.Process.Pid); !strings.HasPrefix(r.stderr, "waiterctl: stacks: ") || !strings.HasSuffix(r.stderr, want) {
		t.Errorf("stacks of the master: want one line ending %q, have %q", want, r.stderr)
	}
}

// testRealErrorReplyWords: the real master's error replies, in waiterctl's
// words. A workers change refused whole should read as waiterctl's own
// tests (TestWorkers, against a fake master) say: the target line, then
// "workers +1 refused: why". But the real master answers a change refused
// whole with an error reply, as control.Reply's documentation says, and
// waiterctl's call() turns every error reply into "CMD: ERROR" before
// runWorkers sees it: no target line, and the command named twice, as the
// master's error already starts with it ("workers: workers: ..."). stacks
// has the same doubling ("stacks: stacks: pid N is not a worker").
func testRealErrorReplyWords(t *testing.T) {
	sock := filepath.Join(shortDir(t), "control")
	d := startWaiterd(t, sock, "-prefork", "2", "-maxfork", "3", "-listen", "127.0.0.1:0", "-control", sock)
	d.ready(t, 2)
	pid := d.cmd.Process.Pid
	r := waiterctl(t, nil, "-s", sock, "workers", "+1")
	wantExit(t, r, 0)
	if want := "target: 3 workers (was 2)\n"; r.stdout != want {
		t.Errorf("workers +1: want %q, have %q", want, r.stdout)
	}
	var wrong []string
	for _, tc := range []struct {
		args           []string
		stdout, stderr string
	}{
		{[]string{"workers", "+1"}, "target: 3 workers (was 3)\n", "waiterctl: workers +1 refused: the pool is at maxfork (3)\n"},
		{[]string{"stacks", fmt.Sprint(pid)}, "", fmt.Sprintf("waiterctl: stacks: pid %d is not a worker of this server\n", pid)},
	} {
		r := waiterctl(t, nil, append([]string{"-s", sock}, tc.args...)...)
		wantExit(t, r, 1)
		if r.stdout != tc.stdout || r.stderr != tc.stderr {
			wrong = append(wrong, fmt.Sprintf("%s: want stdout %q stderr %q, have stdout %q stderr %q", strings.Join(tc.args, " "), tc.stdout, tc.stderr, r.stdout, r.stderr))
		}
	}
	if st := d.mustStatus(t); st.Prefork != 3 {
		t.Errorf("a refused workers +1 changed the target: %+v", st)
	}
	if len(wrong) > 0 {
		t.Fatalf("the real master's error replies in waiterctl's words:\n%s", strings.Join(wrong, "\n"))
	}
}

// scrape GETs a /metrics page and parses it with Prometheus's own text
// parser.
func scrape(t *testing.T, url string) (map[string]*dto.MetricFamily, []byte) {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v\n%s", url, resp.Status, err, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parsing %s: %v\n%s", url, err, body)
	}
	return fams, body
}

// clientsCounted is the smaller of the clients counted in
// waiter_clients_total (summed) and in the duration histogram.
func clientsCounted(fams map[string]*dto.MetricFamily) uint64 {
	var total float64
	for _, m := range fams["waiter_clients_total"].GetMetric() {
		total += m.GetCounter().GetValue()
	}
	var hist uint64
	for _, m := range fams["waiter_client_duration_seconds"].GetMetric() {
		hist += m.GetHistogram().GetSampleCount()
	}
	return min(uint64(total), hist)
}

// testRealMetrics scrapes /metrics after 20 echo sessions and reads it
// with Prometheus's own text parser.
func testRealMetrics(t *testing.T) {
	sock := filepath.Join(shortDir(t), "control")
	d := startWaiterd(t, sock, "-prefork", "2", "-maxfork", "8", "-echo", "-listen", "127.0.0.1:0", "-metrics-listen", "127.0.0.1:0", "-control", sock)
	maddr := d.waitLog(t, 30*time.Second, regexp.MustCompile(`metrics on http://(127\.0\.0\.1:\d+)/metrics`))[1]
	addr := d.ready(t, 2).Listeners[0].Addr

	const n = 20
	for i := 0; i < n; i++ {
		echoSession(t, addr)
	}
	d.waitStatus(t, 20*time.Second, "20 clients served", func(st control.Status) bool { return st.Served == n })
	// The master publishes what scrapes read once a second.
	time.Sleep(1500 * time.Millisecond)

	// On a loaded machine the publication may come later: scrape again,
	// every 500 ms for 10 s at most, until the 20 clients are in.
	var fams map[string]*dto.MetricFamily
	var body []byte
	scrapes := 0
	for deadline := time.Now().Add(10 * time.Second); scrapes < 21; {
		fams, body = scrape(t, "http://"+maddr+"/metrics")
		scrapes++
		if clientsCounted(fams) >= n || !time.Now().Before(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("/metrics: %d scrape(s), the first 1.5 s after the 20th client", scrapes)
	st := d.mustStatus(t)

	fam := func(name string) []*dto.Metric {
		t.Helper()
		f, ok := fams[name]
		if !ok {
			t.Fatalf("no %s in /metrics", name)
		}
		return f.GetMetric()
	}
	label := func(m *dto.Metric, name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}

	var clients []string
	for _, m := range fam("waiter_clients_total") {
		clients = append(clients, fmt.Sprintf("%s/%s=%v", label(m, "listener"), label(m, "name"), m.GetCounter().GetValue()))
	}
	if want := []string{fmt.Sprintf("%s/listen=%d", addr, n)}; !slices.Equal(clients, want) {
		t.Errorf("waiter_clients_total: want %q, have %q", want, clients)
	}
	h := fam("waiter_client_duration_seconds")
	if len(h) != 1 || h[0].GetHistogram().GetSampleCount() != n || h[0].GetHistogram().GetSampleSum() <= 0 {
		t.Errorf("waiter_client_duration_seconds: want a count of %d, have %v", n, h)
	}
	var workers float64
	states := map[string]float64{}
	for _, m := range fam("waiter_workers") {
		workers += m.GetGauge().GetValue()
		states[label(m, "state")] = m.GetGauge().GetValue()
	}
	if int(workers) != len(st.Workers) || states["idle"] != float64(countWorkers(st, "idle")) {
		t.Errorf("waiter_workers: want %d workers (%d idle) as status shows, have %v", len(st.Workers), countWorkers(st, "idle"), states)
	}
	limits := map[string]float64{}
	for _, m := range fam("waiter_pool_limit") {
		limits[label(m, "limit")] = m.GetGauge().GetValue()
	}
	if limits["maxfork"] != 8 || limits["prefork"] != 2 {
		t.Errorf("waiter_pool_limit: want maxfork 8 and prefork 2, have %v", limits)
	}
	var spawns float64
	for _, m := range fam("waiter_spawns_total") {
		spawns += m.GetCounter().GetValue()
	}
	if spawns < 2 {
		t.Errorf("waiter_spawns_total: want at least prefork's 2, have %v", spawns)
	}
	t.Logf("/metrics: %d families, %d bytes; clients %v, duration count %d sum %.3fs, workers %v, spawns %v",
		len(fams), len(body), clients, h[0].GetHistogram().GetSampleCount(), h[0].GetHistogram().GetSampleSum(), states, spawns)
}

// testRealTop runs top in a real terminal (tmux) against the real waiterd:
// its header names the master and its mode, and the held client's worker
// is a busy row; q quits.
func testRealTop(t *testing.T) {
	sock := filepath.Join(shortDir(t), "control")
	d := startWaiterd(t, sock, "-prefork", "2", "-maxfork", "4", "-echo", "-listen", "127.0.0.1:0", "-control", sock)
	addr := d.ready(t, 2).Listeners[0].Addr
	e := mustDialEcho(t, addr)
	st := d.waitStatus(t, 20*time.Second, "the client's worker busy", func(st control.Status) bool {
		_, ok := busyByPeer(st)[e.peer()]
		return ok
	})
	w := busyByPeer(st)[e.peer()]

	x := startTop(t, sock, 160, 40)
	header := fmt.Sprintf("pid %d  prefork  gen 1  workers 1 busy / 2  served 0  failed 0  queue 0", d.cmd.Process.Pid)
	busyRow := regexp.MustCompile(`(?m)^` + fmt.Sprint(w.PID) + `\s+\d+\s+1\s+worker\s+busy\s+0\s+0\s+\S+\s+` + regexp.QuoteMeta(e.peer()) + `\s`)
	s := x.waitScreen(20*time.Second, "the header and the busy row", func(s string) bool {
		return strings.Contains(s, header) && busyRow.MatchString(s)
	})
	// Busy rows come first.
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "PID ") {
			if i+1 >= len(lines) || !busyRow.MatchString(lines[i+1]+"\n") {
				t.Errorf("want the busy worker's row first, have:\n%s", s)
			}
			break
		}
	}
	x.send("q")
	if rc := x.waitExit(); rc != "0" {
		t.Errorf("top's exit status after q: want 0, have %s", rc)
	}
	if b, err := os.ReadFile(x.stderr); err != nil || len(b) != 0 {
		t.Errorf("top's stderr: %q %v", b, err)
	}
	e.echo(t, "after top\n")
}
