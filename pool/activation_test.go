package pool_test

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/waiter-go/waiter/config"
)

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func needSocketActivate(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-socket-activate is missing (tests/deps.sh installs the systemd package)")
		}
		t.Skip("systemd-socket-activate is missing")
	}
	return p
}

// activate runs the scenario server under the real systemd-socket-activate,
// which binds the addresses, waits for the first client and then execs the
// server with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES.
func activate(t *testing.T, o config.Options, args []string, env ...string) *proc {
	t.Helper()
	bin := needSocketActivate(t)
	p := newProc(t)
	all := append([]string{}, args...)
	for _, e := range append(p.scenarioEnv(o), env...) {
		all = append(all, "-E", e)
	}
	all = append(all, "--", os.Args[0], "-test.run=^$")
	p.cmd = exec.Command(bin, all...)
	p.launch()
	return p
}

// dialRetry waits for systemd-socket-activate to be listening.
func talkRetry(t *testing.T, addr, cmd string) string {
	t.Helper()
	var err error
	var s string
	for i := 0; i < 100; i++ {
		if s, err = talk(addr, cmd); err == nil {
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: %v", addr, err)
	return ""
}

func TestSocketActivationNofork(t *testing.T) {
	addr := freeAddr(t)
	p := activate(t, opts(func(o *config.Options) { o.Nofork = true }), []string{"-l", addr, "--fdname=greet"})
	for i := 0; i < 3; i++ {
		if s := talkRetry(t, addr, "hello"); s != "hello world\n" {
			t.Fatalf("client %d: want hello world, have %q", i, s)
		}
	}
	if !strings.Contains(p.stderr.String(), "serving greet(") {
		t.Fatalf("want the socket served under its LISTEN_FDNAMES name:\n%s", p.stderr.String())
	}
}

func TestSocketActivationPrefork(t *testing.T) {
	addr := freeAddr(t)
	activate(t, prefork(2, 4, nil), []string{"-l", addr, "--fdname=greet"})
	for i := 0; i < 5; i++ {
		if s := talkRetry(t, addr, "hello"); s != "hello world\n" {
			t.Fatalf("client %d: want hello world, have %q", i, s)
		}
	}
	if s := talkRetry(t, addr, "busy"); !strings.Contains(s, "child=true") {
		t.Fatalf("want a worker to serve under socket activation, have %q", s)
	}
}

func TestSocketActivationTwoNamedSockets(t *testing.T) {
	a, b := freeAddr(t), freeAddr(t)
	activate(t, prefork(2, 2, nil), []string{"-l", a, "-l", b, "--fdname=one:two"})
	for _, addr := range []string{a, b, a, b} {
		if s := talkRetry(t, addr, "hello"); s != "hello world\n" {
			t.Fatalf("%s: want hello world, have %q", addr, s)
		}
	}
}

func TestSocketActivationPickByName(t *testing.T) {
	a, b := freeAddr(t), freeAddr(t)
	p := activate(t, opts(func(o *config.Options) { o.Nofork = true }), []string{"-l", a, "-l", b, "--fdname=one:two"}, "WAITERTEST_PICK=two")
	if s := talkRetry(t, b, "hello"); s != "hello world\n" {
		t.Fatalf("the picked socket: want hello world, have %q", s)
	}
	// stderr comes through a pipe: the line may trail the reply.
	eventually(t, 5*time.Second, "socket two's line in the log", func() bool { return strings.Contains(p.stderr.String(), "serving two(") })
	if strings.Contains(p.stderr.String(), "serving one(") {
		t.Fatalf("want only socket two served:\n%s", p.stderr.String())
	}
}

// --accept is systemd's Accept=yes: one process per connection, given the
// connected socket.
func TestSocketActivationAcceptYes(t *testing.T) {
	addr := freeAddr(t)
	activate(t, opts(nil), []string{"-l", addr, "--accept"})
	pids := map[string]bool{}
	for i := 0; i < 3; i++ {
		s := strings.TrimSpace(talkRetry(t, addr, "pid"))
		if s == "" || pids[s] {
			t.Fatalf("client %d: want a fresh instance, have pid %q (%v)", i, s, pids)
		}
		pids[s] = true
	}
}
