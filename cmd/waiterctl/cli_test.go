package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/waiter-go/waiter/control"
)

// fieldsOf is the line of out whose first field is first, split into its
// fields (no cell of the canned tables holds a space).
func fieldsOf(t *testing.T, out, first string) []string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == first {
			return f
		}
	}
	t.Fatalf("no line starting with %q in:\n%s", first, out)
	return nil
}

// TestStatusTable reads the tables back: the header block, a queue of -1
// as "-", the busy worker's peer and busy time, sizes and durations.
func TestStatusTable(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortDir(t), "control")
	m := startMaster(t, sock, canned())
	r := waiterctl(t, nil, "-s", sock, "status")
	wantExit(t, r, 0)
	for _, want := range []string{
		"pid 4242, prefork mode, up 3h00m (since ",
		"4 newest, 3 serving",
		"reloading",
		"prefork 4, maxfork 16, spares 0",
		"1234 served, 5 failed",
		"2 ok, 1 refused, 0 failed",
		`refused, generation 3, 2h00m ago: waiterd.yaml:3: key "prefork": value "x": not a number`,
		"7 total, 2 in the last minute",
		"reload refused: waiterd.yaml:3",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("want %q in the status, have:\n%s", want, r.stdout)
		}
	}
	tables := []struct {
		first string
		want  []string
	}{
		{"NAME", []string{"NAME", "ADDR", "QUEUE", "MAX", "SERVED", "FAILED"}},
		{"main", []string{"main", "127.0.0.1:9123", "3", "128", "1000", "2"}},
		// A unix socket's queue: the kernel cannot tell.
		{"admin", []string{"admin", "/run/waiterd/admin.sock", "-", "-", "234", "3"}},
		{"PID", []string{"PID", "SLOT", "GEN", "KIND", "STATE", "SERVED", "FAILED", "BUSY", "PEER", "RSS", "PSS", "CPU", "AGE"}},
		{"1001", []string{"1001", "0", "3", "worker", "idle", "40", "0", "-", "-", "10.0M", "-", "0.50s", "3h00m"}},
		// 12897485 bytes is 12.3 MiB; busy for 2.5 s with its client.
		{"1002", []string{"1002", "1", "3", "worker", "busy", "17", "1", "2.5s", "203.0.113.7:51234", "12.3M", "-", "1.25s", "1h01m"}},
		// Not sampled yet: no RSS rather than 0.
		{"1003", []string{"1003", "2", "4", "worker", "starting", "0", "0", "-", "-", "-", "-", "0.00s", "500ms"}},
	}
	for _, tc := range tables {
		if have := fieldsOf(t, r.stdout, tc.first); !slices.Equal(have, tc.want) {
			t.Errorf("row %s:\nwant %q\nhave %q", tc.first, tc.want, have)
		}
	}
	// Workers by slot; the tables' columns aligned.
	if i, j := strings.Index(r.stdout, "\n  1001 "), strings.Index(r.stdout, "\n  1002 "); i < 0 || j < i {
		t.Errorf("want the workers by slot, have:\n%s", r.stdout)
	}
	lines := strings.Split(r.stdout, "\n")
	var header, busy string
	for _, l := range lines {
		switch f := strings.Fields(l); {
		case len(f) > 0 && f[0] == "PID":
			header = l
		case len(f) > 0 && f[0] == "1002":
			busy = l
		}
	}
	if hi, bi := strings.Index(header, "PEER"), strings.Index(busy, "203.0.113.7"); hi != bi {
		t.Errorf("PEER column at %d, the peer at %d:\n%s\n%s", hi, bi, header, busy)
	}
	if reqs := m.requests(); len(reqs) != 1 || reqs[0] != (control.Request{Cmd: control.CmdStatus}) {
		t.Errorf("requests: want one status without PSS, have %+v", reqs)
	}

	// -pss asks for it, and its column shows it (after the command too).
	r = waiterctl(t, nil, "-s", sock, "status", "-pss")
	wantExit(t, r, 0)
	if have := fieldsOf(t, r.stdout, "1002")[10]; have != "6.1M" {
		t.Errorf("PSS of 1002: want 6.1M, have %q\n%s", have, r.stdout)
	}
	if reqs := m.requests(); !reqs[len(reqs)-1].PSS {
		t.Errorf("-pss: the request did not ask for PSS: %+v", reqs)
	}
}

// TestStatusJSON: -json is the Status itself, for scripts: it decodes,
// strictly, into what the master served.
func TestStatusJSON(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortDir(t), "control")
	startMaster(t, sock, canned())
	for _, args := range [][]string{{"-json", "status"}, {"status", "-json"}} {
		r := waiterctl(t, nil, append([]string{"-s", sock}, args...)...)
		wantExit(t, r, 0)
		dec := json.NewDecoder(strings.NewReader(r.stdout))
		dec.DisallowUnknownFields()
		var have control.Status
		if err := dec.Decode(&have); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, r.stdout)
		}
		if want := canned(); !reflect.DeepEqual(have, want) {
			t.Errorf("%v: the status does not round-trip:\nwant %+v\nhave %+v", args, want, have)
		}
		if !strings.Contains(r.stdout, "\n  \"pid\": 4242,") {
			t.Errorf("%v: want indented JSON, have:\n%s", args, r.stdout)
		}
	}
}

// TestReload: one line, on stdout when it worked, on stderr when it did
// not, with the exit status that makes `systemctl reload` fail.
func TestReload(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortDir(t), "control")
	m := startMaster(t, sock, canned())
	cases := []struct {
		name       string
		reply      control.Reply
		code       int
		stdout     string
		stderr     string
		jsonResult bool
	}{
		{"ok", control.Reply{OK: true, Reload: &control.ReloadResult{Generation: 5, Result: "ok"}},
			0, "reloaded: generation 5 serving\n", "", false},
		// The file is refused whole: the old generation serves on. A
		// multi-line reason still makes one line.
		{"refused", control.Reply{OK: true, Reload: &control.ReloadResult{Generation: 4, Result: "refused",
			Reason: "waiterd.yaml:3: key \"prefork\":\n  value \"x\": not a number"}},
			1, "", "waiterctl: reload refused: waiterd.yaml:3: key \"prefork\":; value \"x\": not a number\n", false},
		{"failed", control.Reply{OK: true, Reload: &control.ReloadResult{Generation: 5, Result: "failed",
			Reason: "generation 5 not ready within 60s"}},
			1, "", "waiterctl: reload failed: generation 5 not ready within 60s\n", false},
		// The master will not start one.
		{"error reply", control.Reply{Error: "a reload is under way"},
			1, "", "waiterctl: reload: a reload is under way\n", false},
		{"error reply with its result", control.Reply{Error: "reload failed", Reload: &control.ReloadResult{Generation: 5, Result: "failed", Reason: "OnStart: no database"}},
			1, "", "waiterctl: reload failed: OnStart: no database\n", false},
		{"refused without a reason", control.Reply{OK: true, Reload: &control.ReloadResult{Generation: 4, Result: "refused"}},
			1, "", "waiterctl: reload refused: without a reason\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m.setHandler(control.CmdReload, func(context.Context, control.Request) control.Reply { return tc.reply })
			r := waiterctl(t, nil, "-s", sock, "reload")
			wantExit(t, r, tc.code)
			if r.stdout != tc.stdout || r.stderr != tc.stderr {
				t.Errorf("want stdout %q stderr %q\nhave stdout %q stderr %q", tc.stdout, tc.stderr, r.stdout, r.stderr)
			}
		})
	}
	t.Run("json", func(t *testing.T) {
		m.setHandler(control.CmdReload, func(context.Context, control.Request) control.Reply {
			return control.Reply{OK: true, Reload: &control.ReloadResult{Generation: 5, Result: "ok", At: started}}
		})
		r := waiterctl(t, nil, "-s", sock, "-json", "reload")
		wantExit(t, r, 0)
		var have control.ReloadResult
		if err := json.Unmarshal([]byte(r.stdout), &have); err != nil || have.Generation != 5 || have.Result != "ok" {
			t.Errorf("-json reload: %v %+v\n%s", err, have, r.stdout)
		}
	})
}

// TestReloadTimeout: a master that never answers is given -timeout, then
// waiterctl gives up with exitSocket, naming the socket.
func TestReloadTimeout(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortDir(t), "control")
	m := startMaster(t, sock, canned())
	m.setHandler(control.CmdReload, func(ctx context.Context, _ control.Request) control.Reply {
		<-ctx.Done() // until the server closes, at the test's end
		return control.Reply{Error: "closing"}
	})
	r := waiterctl(t, nil, "-s", sock, "-timeout", "500ms", "reload")
	wantExit(t, r, 3)
	if r.took < 400*time.Millisecond || r.took > 5*time.Second {
		t.Errorf("-timeout 500ms: took %v", r.took)
	}
	if want := "waiterctl: control socket " + sock + ": no reply to reload within 500ms (-timeout)\n"; r.stderr != want {
		t.Errorf("want %q, have %q", want, r.stderr)
	}
}

// TestWorkers: a signed change is sent as asked; anything else is a usage
// error that never reaches the master.
func TestWorkers(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortDir(t), "control")
	m := startMaster(t, sock, canned()) // prefork 4
	var result control.WorkersResult
	m.setHandler(control.CmdWorkers, func(context.Context, control.Request) control.Reply {
		m.mu.Lock()
		defer m.mu.Unlock()
		r := result
		return control.Reply{OK: true, Workers: &r}
	})
	ok := []struct {
		arg    string
		n      int
		result control.WorkersResult
		code   int
		stdout string
		stderr string
	}{
		{"+2", 2, control.WorkersResult{Target: 6}, 0, "target: 6 workers (was 4)\n", ""},
		{"3", 3, control.WorkersResult{Target: 7}, 0, "target: 7 workers (was 4)\n", ""},
		{"-1", -1, control.WorkersResult{Target: 3}, 0, "target: 3 workers (was 4)\n", ""},
		// Some of it done: the master stopped at maxfork.
		{"+20", 20, control.WorkersResult{Target: 16, Refused: "at maxfork 16"}, 0,
			"target: 16 workers (was 4)\npartly refused: at maxfork 16\n", ""},
		// None of it: the change is refused.
		{"+1", 1, control.WorkersResult{Target: 4, Refused: "a fixed pool does not grow"}, 1,
			"target: 4 workers (was 4)\n", "waiterctl: workers +1 refused: a fixed pool does not grow\n"},
	}
	for _, tc := range ok {
		t.Run(tc.arg, func(t *testing.T) {
			m.mu.Lock()
			result = tc.result
			m.mu.Unlock()
			before := len(m.requests())
			r := waiterctl(t, nil, "-s", sock, "workers", tc.arg)
			wantExit(t, r, tc.code)
			if r.stdout != tc.stdout || r.stderr != tc.stderr {
				t.Errorf("want stdout %q stderr %q\nhave stdout %q stderr %q", tc.stdout, tc.stderr, r.stdout, r.stderr)
			}
			reqs := m.requests()[before:]
			if want := (control.Request{Cmd: control.CmdWorkers, N: tc.n}); len(reqs) != 2 || reqs[1] != want {
				t.Errorf("requests: want a status then %+v, have %+v", want, reqs)
			}
		})
	}
	bad := []struct {
		args []string
		want string
	}{
		{[]string{"0"}, `workers "0": want a non-zero change`},
		{[]string{"+0"}, `workers "+0": want a non-zero change`},
		{[]string{"-0"}, `workers "-0": want a non-zero change`},
		{[]string{"junk"}, `workers "junk": want a signed integer`},
		{[]string{"3x"}, `workers "3x": want a signed integer`},
		{[]string{"1.5"}, `workers "1.5": want a signed integer`},
		{[]string{""}, `workers "": want a signed integer`},
		{[]string{"+99999999999999999999"}, `workers "+99999999999999999999": out of range`},
		{[]string{"-99999999999999999999"}, `workers "-99999999999999999999": out of range`},
		{nil, "workers takes one argument"},
		{[]string{"+1", "+2"}, "workers takes one argument"},
	}
	for _, tc := range bad {
		before := len(m.requests())
		r := waiterctl(t, nil, append([]string{"-s", sock, "workers"}, tc.args...)...)
		wantExit(t, r, 2)
		if !strings.HasPrefix(r.stderr, "waiterctl: "+tc.want) {
			t.Errorf("workers %q: want %q, have %q", tc.args, tc.want, r.stderr)
		}
		if reqs := m.requests()[before:]; len(reqs) != 0 {
			t.Errorf("workers %q: a bad argument reached the master: %+v", tc.args, reqs)
		}
	}
}

// TestWorkersForking: in forking mode the target is the spares.
func TestWorkersForking(t *testing.T) {
	t.Parallel()
	st := canned()
	st.Mode, st.Prefork, st.Spares = "forking", 0, 2
	sock := filepath.Join(shortDir(t), "control")
	m := startMaster(t, sock, st)
	m.setHandler(control.CmdWorkers, func(_ context.Context, r control.Request) control.Reply {
		return control.Reply{OK: true, Workers: &control.WorkersResult{Target: 2 + r.N}}
	})
	r := waiterctl(t, nil, "-s", sock, "workers", "-1")
	wantExit(t, r, 0)
	if want := "target: 1 spares (was 2)\n"; r.stdout != want {
		t.Errorf("want %q, have %q", want, r.stdout)
	}
}

// TestStacks prints a worker's stacks, and the master's no.
func TestStacks(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortDir(t), "control")
	m := startMaster(t, sock, canned())
	const stacks = "goroutine 1 [IO wait]:\nmain.main()\n\t/src/main.go:12 +0x1d"
	m.setHandler(control.CmdStacks, func(_ context.Context, r control.Request) control.Reply {
		if r.PID != 1002 {
			return control.Reply{Error: "no worker with pid " + strconv.Itoa(r.PID)}
		}
		return control.Reply{OK: true, Stacks: stacks}
	})
	r := waiterctl(t, nil, "-s", sock, "stacks", "1002")
	wantExit(t, r, 0)
	if r.stdout != stacks+"\n" {
		t.Errorf("want %q, have %q", stacks+"\n", r.stdout)
	}
	r = waiterctl(t, nil, "-s", sock, "stacks", "9")
	wantExit(t, r, 1)
	if want := "waiterctl: stacks: no worker with pid 9\n"; r.stderr != want {
		t.Errorf("want %q, have %q", want, r.stderr)
	}
	for _, args := range [][]string{{"abc"}, {"0"}, {"-5"}, {}, {"1", "2"}} {
		before := len(m.requests())
		r := waiterctl(t, nil, append([]string{"-s", sock, "stacks"}, args...)...)
		wantExit(t, r, 2)
		if len(m.requests()) != before {
			t.Errorf("stacks %q reached the master", args)
		}
	}
}

// TestErrorReply: the master's error is exit status 1, with its words.
func TestErrorReply(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortDir(t), "control")
	m := startMaster(t, sock, canned())
	m.setHandler(control.CmdStatus, func(context.Context, control.Request) control.Reply {
		return control.Reply{Error: "stopping"}
	})
	r := waiterctl(t, nil, "-s", sock, "status")
	wantExit(t, r, 1)
	if want := "waiterctl: status: stopping\n"; r.stderr != want {
		t.Errorf("want %q, have %q", want, r.stderr)
	}
}

// TestUnreachable: a socket that cannot be reached, or breaks, is exit
// status 3 with its path and the cause.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	dir := shortDir(t)
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, []byte("not a socket\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A socket file nobody listens on: what a master killed -9 leaves.
	stale := filepath.Join(dir, "stale")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	// A server that reads the request and hangs up without answering.
	hangup := filepath.Join(dir, "hangup")
	hl, err := net.Listen("unix", hangup)
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	go func() {
		for {
			c, err := hl.Accept()
			if err != nil {
				return // closed at the test's end
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			bufio.NewReader(c).ReadString('\n')
			c.Close()
		}
	}()
	cases := []struct {
		path, want string
	}{
		{filepath.Join(dir, "missing"), "no such file or directory"},
		{regular, "not a socket but a regular file"},
		{dir, "not a socket but a directory"},
		{stale, "connection refused (nobody listens on it"},
		{hangup, "no reply: EOF"},
	}
	for _, tc := range cases {
		r := waiterctl(t, nil, "-s", tc.path, "status")
		wantExit(t, r, 3)
		if want := "waiterctl: control socket " + tc.path + ": "; !strings.HasPrefix(r.stderr, want) || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: want %q and %q, have %q", tc.path, want, tc.want, r.stderr)
		}
		if strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%s: want one line, have %q", tc.path, r.stderr)
		}
	}
}

// TestPermissionDenied: the socket is mode 0600; another user's connect
// fails in the kernel, before the master's SO_PEERCRED check.
func TestPermissionDenied(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run waiterctl as nobody")
	}
	dir := shortDir(t)
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "control")
	startMaster(t, sock, canned())
	cmd := exec.Command(bin, "-s", sock, "status")
	cmd.Env = testEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("want exit status 3, have %v: %s", err, stderr.String())
	}
	if want := "waiterctl: control socket " + sock + ": permission denied"; !strings.HasPrefix(stderr.String(), want) {
		t.Errorf("want %q, have %q", want, stderr.String())
	}
}

// TestUsage: bad commands, flags and arguments are exit status 2; -h is
// the usage, naming every command and the exit statuses.
func TestUsage(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortDir(t), "control")
	m := startMaster(t, sock, canned())
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `waiterctl: unknown command "frobnicate"`},
		{nil, "waiterctl: no command"},
		{[]string{"-bogus", "status"}, "waiterctl: flag provided but not defined: -bogus"},
		{[]string{"status", "-bogus"}, "waiterctl: flag provided but not defined: -bogus"},
		{[]string{"-timeout", "soon", "status"}, `waiterctl: -timeout "soon": want a positive duration`},
		{[]string{"-timeout", "0s", "status"}, `waiterctl: -timeout "0s": want a positive duration`},
		{[]string{"status", "extra"}, `waiterctl: status takes no arguments, not "extra"`},
		{[]string{"reload", "now"}, `waiterctl: reload takes no arguments, not "now"`},
		{[]string{"-json", "top"}, "waiterctl: -json does not apply to top"},
		{[]string{"-json", "stacks", "1002"}, "waiterctl: -json does not apply to stacks"},
	}
	for _, tc := range cases {
		r := waiterctl(t, nil, append([]string{"-s", sock}, tc.args...)...)
		wantExit(t, r, 2)
		if !strings.HasPrefix(r.stderr, tc.want) || !strings.Contains(r.stderr, "\nusage: waiterctl ") {
			t.Errorf("%q: want %q then the short usage, have %q", tc.args, tc.want, r.stderr)
		}
	}
	if reqs := m.requests(); len(reqs) != 0 {
		t.Errorf("usage errors reached the master: %+v", reqs)
	}
	r := waiterctl(t, nil, "-h")
	wantExit(t, r, 0)
	for _, want := range []string{"status", "reload", "workers +N|-N", "stacks PID", "top", "-s socket", "-json", "-pss", "-timeout",
		"$WAITER_CONTROL", "/run/waiterd/control", "reload 150s",
		"\n  0  done", "\n  1  the master answered no", "\n  2  usage error", "\n  3  the control socket cannot be reached"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("-h: want %q in:\n%s", want, r.stdout)
		}
	}
}

// TestSocketDefault: -s defaults to $WAITER_CONTROL, else the packaged
// path.
func TestSocketDefault(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortDir(t), "control")
	startMaster(t, sock, canned())
	r := waiterctl(t, []string{"WAITER_CONTROL=" + sock}, "status")
	wantExit(t, r, 0)
	if _, err := os.Lstat(defaultSocket); err == nil {
		t.Skipf("%s exists here: a real master's, not asked", defaultSocket)
	}
	r = waiterctl(t, nil, "status")
	wantExit(t, r, 3)
	if want := "waiterctl: control socket " + defaultSocket + ": no such file or directory"; !strings.HasPrefix(r.stderr, want) {
		t.Errorf("want %q, have %q", want, r.stderr)
	}
}

// TestTopNeedsTerminal: without a controlling terminal top says so.
func TestTopNeedsTerminal(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortDir(t), "control")
	startMaster(t, sock, canned())
	cmd := exec.Command(bin, "-s", sock, "top")
	cmd.Env = testEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no /dev/tty
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("want exit status 2, have %v: %s", err, stderr.String())
	}
	if want := "waiterctl: top needs a terminal: "; !strings.HasPrefix(stderr.String(), want) {
		t.Errorf("want %q, have %q", want, stderr.String())
	}
}
