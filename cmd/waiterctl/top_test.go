package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/waiter-go/waiter/control"
	"github.com/waiter-go/waiter/internal/racecheck"
)

// terminal is a tmux server of the test's own (-L), with one detached
// session: a real terminal for top, read back with capture-pane.
type terminal struct {
	t       *testing.T
	bin     string // tmux's
	socket  string
	session string
	rc      string // the file the session's shell writes top's exit status to
	stderr  string // and top's stderr
}

var tmuxServers atomic.Int64

// startTop runs waiterctl top on sock in a width × height tmux session.
func startTop(t *testing.T, sock string, width, height int) *terminal {
	t.Helper()
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("tmux is missing in CI: tests/deps.sh installs it (%v)", err)
		}
		t.Skipf("tmux is missing: apt-get install tmux (%v)", err)
	}
	dir := shortDir(t)
	x := &terminal{
		t:       t,
		bin:     tmux,
		socket:  fmt.Sprintf("waiterctl-test-%d-%d", os.Getpid(), tmuxServers.Add(1)),
		session: "top",
		rc:      filepath.Join(dir, "rc"),
		stderr:  filepath.Join(dir, "stderr"),
	}
	t.Cleanup(func() {
		// Ends the session and top with it, if the test did not.
		x.tmux("kill-server")
		if b, err := os.ReadFile(x.stderr); err == nil {
			racecheck.Report(t, "waiterctl top", string(b))
		}
	})
	sh := fmt.Sprintf("%s -s %s top 2>%s; echo $? >%s", quote(bin), quote(sock), quote(x.stderr), quote(x.rc))
	x.must("new-session", "-d", "-s", x.session, "-x", fmt.Sprint(width), "-y", fmt.Sprint(height), sh)
	return x
}

// tmux runs a tmux command on the test's server, bounded at 10 s, and
// returns its stdout. -f /dev/null keeps the user's configuration out.
func (x *terminal) tmux(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, x.bin, append([]string{"-L", x.socket, "-f", "/dev/null"}, args...)...)
	cmd.Env = testEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("tmux %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// waitScreen polls the pane (capture-pane) every 100 ms, for at most
// within, until ok holds, and returns that screen.
func (x *terminal) waitScreen(within time.Duration, what string, ok func(string) bool) string {
	x.t.Helper()
	var last string
	deadline := time.Now().Add(within)
	for i := 0; i < int(within/(100*time.Millisecond))+1 && time.Now().Before(deadline); i++ {
		s, err := x.tmux("capture-pane", "-p", "-t", x.session)
		if err == nil && ok(s) {
			return s
		}
		last = s
		if err != nil {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	x.t.Fatalf("within %v: %s; the screen:\n%s", within, what, last)
	return ""
}

// must runs a tmux command that has to work.
func (x *terminal) must(args ...string) {
	x.t.Helper()
	if _, err := x.tmux(args...); err != nil {
		x.t.Fatal(err)
	}
}

// send types keys (tmux key names: q, Escape, C-c).
func (x *terminal) send(keys ...string) {
	x.t.Helper()
	x.must(append([]string{"send-keys", "-t", x.session}, keys...)...)
}

// waitExit waits, at most 5 s, for top to end and its session with it,
// and returns top's exit status.
func (x *terminal) waitExit() string {
	x.t.Helper()
	for i := 0; i < 50; i++ {
		b, err := os.ReadFile(x.rc)
		if err == nil && strings.HasSuffix(string(b), "\n") {
			// The session ends with its shell, just after.
			for j := 0; j < 50; j++ {
				if _, err := x.tmux("has-session", "-t", x.session); err != nil {
					return strings.TrimSpace(string(b))
				}
				time.Sleep(100 * time.Millisecond)
			}
			x.t.Fatalf("top exited %s, but its tmux session lives on", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s, _ := x.tmux("capture-pane", "-p", "-t", x.session)
	x.t.Fatalf("top did not exit within 5 s; the screen:\n%s", s)
	return ""
}

// sockets are the sockets top has open, its fds' "socket:[inode]" links
// (top is the child of the pane's shell).
func (x *terminal) sockets() []string {
	x.t.Helper()
	out, err := x.tmux("display-message", "-p", "-t", x.session, "#{pane_pid}")
	if err != nil {
		x.t.Fatal(err)
	}
	shell := strings.TrimSpace(out)
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var socks []string
	for _, stat := range stats {
		b, err := os.ReadFile(stat)
		if err != nil {
			continue // gone since the glob
		}
		// "pid (comm) state ppid ...": comm may hold spaces, not ")".
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 2 || f[1] != shell {
			continue
		}
		fds, _ := filepath.Glob(filepath.Join(filepath.Dir(stat), "fd", "*"))
		for _, fd := range fds {
			if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "socket:") {
				socks = append(socks, l)
			}
		}
	}
	sort.Strings(socks)
	return socks
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// shows says whether the screen holds every string.
func shows(want ...string) func(string) bool {
	return func(s string) bool {
		for _, w := range want {
			if !strings.Contains(s, w) {
				return false
			}
		}
		return true
	}
}

// TestTop drives top in a real terminal: the canned workers, busy ones
// first; a change seen at the next refresh; a resize redrawn; the master
// going away shown and retried, then found again; q quits.
func TestTop(t *testing.T) {
	sock := filepath.Join(shortDir(t), "control")
	m := startMaster(t, sock, canned())
	x := startTop(t, sock, 160, 40)

	s := x.waitScreen(10*time.Second, "the header and the canned workers",
		shows("pid 4242  prefork  gen 4 (3 serving)  workers 1 busy / 3  served 1234  failed 5  queue 3", "203.0.113.7:51234", "12.3M", "reload refused: waiterd.yaml:3"))
	lines := strings.Split(s, "\n")
	var rows []string
	for i, l := range lines {
		if strings.HasPrefix(l, "PID ") {
			for _, r := range lines[i+1:] {
				if f := strings.Fields(r); len(f) > 0 {
					rows = append(rows, f[0])
				}
			}
			break
		}
	}
	// Busy first, although in slot 1; then by slot.
	if want := []string{"1002", "1001", "1003"}; strings.Join(rows, " ") != strings.Join(want, " ") {
		t.Errorf("rows: want %v, have %v\n%s", want, rows, s)
	}

	// top keeps its connection between polls: the same socket before and
	// after the polls that show the change below.
	conns := x.sockets()
	if len(conns) != 1 {
		t.Errorf("top holds %d sockets, want its one connection: %v", len(conns), conns)
	}

	// The next poll shows a change within a refresh or two.
	st := canned()
	st.Served = 1300
	st.Workers = append(st.Workers, control.Worker{PID: 1004, Slot: 3, Gen: 4, Kind: "worker", State: "busy",
		Peer: "198.51.100.9:4000", Busy: control.Duration(time.Second), RSS: 3 << 30})
	m.setStatus(st)
	x.waitScreen(3*time.Second, "the change", shows("workers 2 busy / 4  served 1300", "198.51.100.9:4000", "3.0G"))

	if again := x.sockets(); strings.Join(again, " ") != strings.Join(conns, " ") {
		t.Errorf("top's connection changed between polls: %v, then %v", conns, again)
	}

	// A smaller terminal: lines cut to it, and the rows that do not fit
	// counted on the last line.
	x.must("resize-window", "-t", x.session, "-x", "60", "-y", "6")
	s = x.waitScreen(3*time.Second, "the redraw at 60x6", shows("... and 3 more workers"))
	for _, l := range strings.Split(s, "\n") {
		if len(l) > 60 {
			t.Errorf("a line wider than the terminal: %q", l)
		}
	}
	x.must("resize-window", "-t", x.session, "-x", "160", "-y", "40")

	// The master goes: top says why and retries rather than exit.
	m.stop()
	x.waitScreen(3*time.Second, "the unreachable socket",
		shows("control socket "+sock+": no such file or directory", "retrying each second"))
	// A new master on the same path: top finds it on its own.
	st = canned()
	st.PID = 4343
	m.setStatus(st)
	m.start(t)
	x.waitScreen(3*time.Second, "the new master", shows("pid 4343  prefork", "203.0.113.7:51234"))

	x.send("q")
	if rc := x.waitExit(); rc != "0" {
		t.Errorf("top's exit status after q: want 0, have %s", rc)
	}
	if b, err := os.ReadFile(x.stderr); err != nil || len(b) != 0 {
		t.Errorf("top's stderr: %q %v", b, err)
	}
}

// TestTopQuitKeys: Esc and Ctrl-C quit as q does (in raw mode Ctrl-C is
// a key, not a SIGINT).
func TestTopQuitKeys(t *testing.T) {
	for _, key := range []string{"Escape", "C-c"} {
		t.Run(key, func(t *testing.T) {
			sock := filepath.Join(shortDir(t), "control")
			startMaster(t, sock, canned())
			x := startTop(t, sock, 120, 20)
			x.waitScreen(10*time.Second, "the workers", shows("203.0.113.7:51234"))
			x.send(key)
			if rc := x.waitExit(); rc != "0" {
				t.Errorf("exit status after %s: want 0, have %s", key, rc)
			}
		})
	}
}

// TestTopError: an error reply is shown, and polled again.
func TestTopError(t *testing.T) {
	sock := filepath.Join(shortDir(t), "control")
	m := startMaster(t, sock, canned())
	var n atomic.Int64
	m.setHandler(control.CmdStatus, func(context.Context, control.Request) control.Reply {
		return control.Reply{Error: fmt.Sprintf("stopping (poll %d)", n.Add(1))}
	})
	x := startTop(t, sock, 120, 20)
	x.waitScreen(10*time.Second, "the error reply", shows("status: stopping (poll 1)", "retrying each second"))
	x.waitScreen(3*time.Second, "the error reply polled again", shows("status: stopping (poll 2)"))
	x.send("q")
	if rc := x.waitExit(); rc != "0" {
		t.Errorf("exit status: want 0, have %s", rc)
	}
}

// TestTopLines checks the screen's layout without a terminal: the order,
// the cut to the width, the count of rows that do not fit.
func TestTopLines(t *testing.T) {
	st := canned()
	at := time.Date(2025, 1, 2, 15, 4, 5, 0, time.Local)
	v := &topView{socket: "/run/waiterd/control", last: fetched{st: &st, at: at}}
	texts := func(ls []line) []string {
		var s []string
		for _, l := range ls {
			s = append(s, l.text)
		}
		return s
	}
	all := texts(v.lines(200, 40))
	if want := "pid 4242  prefork  gen 4 (3 serving)  workers 1 busy / 3  served 1234  failed 5  queue 3  RELOADING  15:04:05"; strings.TrimRight(all[0], " ") != want {
		t.Errorf("header:\nwant %q\nhave %q", want, all[0])
	}
	if len(all[0]) != 200 {
		t.Errorf("the header spans %d columns, not the width's 200", len(all[0]))
	}
	if len(all) != 7 || !strings.HasPrefix(all[3], "PID ") || !strings.HasPrefix(all[4], "1002 ") || !strings.HasPrefix(all[6], "1003 ") {
		t.Errorf("want header, note, blank, columns, 1002 (busy), 1001, 1003; have:\n%s", strings.Join(all, "\n"))
	}
	for _, l := range texts(v.lines(30, 40)) {
		if len([]rune(l)) > 30 {
			t.Errorf("wider than 30: %q", l)
		}
	}
	short := texts(v.lines(200, 5))
	if len(short) != 5 || short[4] != "... and 3 more workers" {
		t.Errorf("height 5: want the last line to count the 3 rows left, have:\n%s", strings.Join(short, "\n"))
	}
	if six := texts(v.lines(200, 6)); len(six) != 6 || six[5] != "... and 2 more workers" {
		t.Errorf("height 6: want the last line to count the 2 rows left, have:\n%s", strings.Join(six, "\n"))
	}
	// The last row left takes the last line itself.
	if seven := texts(v.lines(200, 7)); strings.Join(seven, "\n") != strings.Join(all, "\n") {
		t.Errorf("height 7: want every row, have:\n%s", strings.Join(seven, "\n"))
	}

	v.last = fetched{err: errors.New("control socket /run/waiterd/control: no such file or directory (is the master running?)"), at: at}
	wrapped := texts(v.lines(40, 10))
	joined := strings.Join(wrapped[1:], " ")
	if want := "control socket /run/waiterd/control: no such file or directory (is the master running?); retrying each second (q quits)"; joined != want {
		t.Errorf("the error, wrapped at 40:\nwant %q\nhave %q", want, joined)
	}
	for _, l := range wrapped {
		if len(l) > 40 {
			t.Errorf("wider than 40: %q", l)
		}
	}
}
