package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/waiter-go/waiter/control"
	"github.com/waiter-go/waiter/internal/racecheck"
)

// bin is the waiterctl under test, built once by TestMain: with -race when
// this test binary has it, so that a race in waiterctl fails a test too.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "waiterctl-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Others (the nobody of TestUnreachable) must be able to run it.
	os.Chmod(dir, 0o755)
	bin = filepath.Join(dir, "waiterctl")
	args := []string{"build", "-o", bin}
	cgo := "CGO_ENABLED=0"
	if racecheck.Enabled() {
		args = append(args, "-race")
		cgo = "CGO_ENABLED=1"
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Env = append(os.Environ(), cgo)
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building waiterctl: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// shortDir is a temporary directory with a short path: a unix socket's
// path must fit in 108 bytes, which t.TempDir's long names can pass.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// master is a fake waiter master: a real control socket (control.Listen
// and control.Server) whose handler answers what a test sets.
type master struct {
	path string

	mu       sync.Mutex
	srv      *control.Server
	status   control.Status
	handlers map[string]control.Handler // by command; status has a default
	reqs     []control.Request
}

// startMaster serves a control socket at path with st as its status.
func startMaster(t *testing.T, path string, st control.Status) *master {
	t.Helper()
	m := &master{path: path, status: st, handlers: map[string]control.Handler{}}
	m.start(t)
	t.Cleanup(m.stop)
	return m
}

func (m *master) start(t *testing.T) {
	t.Helper()
	l, err := control.Listen(m.path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &control.Server{Handle: m.handle}
	srv.Start(l)
	m.mu.Lock()
	m.srv = srv
	m.mu.Unlock()
}

// stop closes the socket (its file goes too); start serves it again.
func (m *master) stop() {
	m.mu.Lock()
	srv := m.srv
	m.srv = nil
	m.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

func (m *master) handle(ctx context.Context, r control.Request) control.Reply {
	m.mu.Lock()
	m.reqs = append(m.reqs, r)
	h := m.handlers[r.Cmd]
	st := m.status
	m.mu.Unlock()
	if h != nil {
		return h(ctx, r)
	}
	if r.Cmd == control.CmdStatus {
		if r.PSS {
			// What a master does when asked: PSS is sampled on request.
			st.Workers = append([]control.Worker(nil), st.Workers...)
			for i := range st.Workers {
				st.Workers[i].PSS = st.Workers[i].RSS / 2
			}
		}
		return control.Reply{OK: true, Status: &st}
	}
	return control.Reply{Error: fmt.Sprintf("unknown command %q", r.Cmd)}
}

// setStatus replaces the status; st must not share slices a test changes
// afterwards (the handler reads it from the server's goroutines).
func (m *master) setStatus(st control.Status) {
	m.mu.Lock()
	m.status = st
	m.mu.Unlock()
}

func (m *master) setHandler(cmd string, h control.Handler) {
	m.mu.Lock()
	m.handlers[cmd] = h
	m.mu.Unlock()
}

// requests are the requests the master was sent, in order.
func (m *master) requests() []control.Request {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]control.Request(nil), m.reqs...)
}

// started is the canned master's start, three hours ago to the second: a
// round number of seconds and no monotonic reading, so that it survives
// JSON unchanged.
var started = time.Now().Add(-3 * time.Hour).Truncate(time.Second).UTC()

// canned is a status with what an operator looks at: a reload under way
// after a refused one, three workers of which one is busy with a client,
// a TCP listener with a queue and a unix one without (-1).
func canned() control.Status {
	return control.Status{
		At:         started.Add(3 * time.Hour),
		PID:        4242,
		Mode:       "prefork",
		Started:    started,
		Reloading:  true,
		Generation: 4,
		Serving:    3,
		Prefork:    4,
		Maxfork:    16,
		Spares:     0,
		Served:     1234,
		Failed:     5,
		Reloads:    map[string]uint64{"ok": 2, "refused": 1},
		LastReload: &control.ReloadResult{
			Generation: 3,
			Result:     "refused",
			Reason:     `waiterd.yaml:3: key "prefork": value "x": not a number`,
			At:         started.Add(time.Hour),
		},
		ListenOverflows:       7,
		ListenOverflowsMinute: 2,
		Note:                  "reload refused: waiterd.yaml:3",
		Workers: []control.Worker{
			{PID: 1001, Slot: 0, Gen: 3, Kind: "worker", State: "idle", Served: 40, RSS: 10 << 20, CPU: 0.5,
				Age: control.Duration(3 * time.Hour)},
			// Busy, and in a later slot: top shows it first all the same.
			{PID: 1002, Slot: 1, Gen: 3, Kind: "worker", State: "busy", Served: 17, Failed: 1,
				Peer: "203.0.113.7:51234", Busy: control.Duration(2500 * time.Millisecond),
				RSS: 12897485, CPU: 1.25, Age: control.Duration(time.Hour + 90*time.Second)},
			{PID: 1003, Slot: 2, Gen: 4, Kind: "worker", State: "starting", RSS: 0,
				Age: control.Duration(500 * time.Millisecond)},
		},
		Listeners: []control.Listener{
			{Name: "main", Addr: "127.0.0.1:9123", Queue: 3, MaxQueue: 128, Served: 1000, Failed: 2},
			{Name: "admin", Addr: "/run/waiterd/admin.sock", Queue: -1, MaxQueue: -1, Served: 234, Failed: 3},
		},
	}
}

// result is how a waiterctl run ended.
type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// waiterctl runs the binary with args, bounded at 30 s, and checks its
// stderr for race reports. env adds to (or replaces) the environment,
// which has no WAITER_CONTROL otherwise.
func waiterctl(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = testEnv(env...)
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
		t.Fatalf("waiterctl %s: %v (after %v)\nstderr: %s", strings.Join(args, " "), err, r.took, r.stderr)
	}
	racecheck.Report(t, "waiterctl", r.stderr)
	return r
}

// testEnv is this process's environment without WAITER_CONTROL, with a
// race-enabled child's exit sleep off, and with env added.
func testEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WAITER_CONTROL=") {
			out = append(out, kv)
		}
	}
	if _, ok := os.LookupEnv("GORACE"); !ok {
		out = append(out, "GORACE=atexit_sleep_ms=0")
	}
	return append(out, env...)
}

// wantExit fails the test unless r ended with code.
func wantExit(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit status: want %d, have %d\nstdout: %s\nstderr: %s", code, r.code, r.stdout, r.stderr)
	}
}
