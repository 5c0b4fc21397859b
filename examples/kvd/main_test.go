package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/waiter-go/waiter/examples/internal/daemontest"
)

func TestMain(m *testing.M) { daemontest.Main(m) }

// kv is a client session.
type kv struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *kv {
	t.Helper()
	c := daemontest.Dial(t, addr)
	return &kv{c: c, r: bufio.NewReader(c)}
}

// do sends one command line and returns the reply line, without its end.
func (k *kv) do(cmd string) (string, error) {
	if _, err := io.WriteString(k.c, cmd+"\n"); err != nil {
		return "", err
	}
	line, err := k.r.ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

func (k *kv) must(t *testing.T, cmd, want string) {
	t.Helper()
	if have, err := k.do(cmd); err != nil || have != want {
		t.Fatalf("%q: want %q, have %q (%v)", trunc(cmd), want, trunc(have), err)
	}
}

func trunc(s string) string {
	if len(s) > 80 {
		return fmt.Sprintf("%s... (%d bytes)", s[:60], len(s))
	}
	return s
}

// start starts kvd on a free 127.0.0.1 port with a fresh state directory
// (unless args give one) and waits until it serves.
func start(t *testing.T, bin string, args ...string) (*daemontest.Daemon, string) {
	t.Helper()
	addr := daemontest.FreeAddr(t)
	all := []string{"-listen", addr, "-state-dir", t.TempDir()}
	d := daemontest.Start(t, bin, append(all, args...)...)
	k := dial(t, addr)
	k.must(t, "GET nothing-here", "NOTFOUND")
	k.c.Close()
	return d, addr
}

var modes = []struct{ name, flag string }{{"prefork", "-prefork=4"}, {"nofork", "-nofork"}}

// The protocol as a client sees it, in both modes, and the state surviving
// a restart.
func TestProtocol(t *testing.T) {
	bin := daemontest.Build(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			state := t.TempDir()
			d, addr := start(t, bin, m.flag, "-state-dir", state, "-max-value-bytes", "64")
			k := dial(t, addr)
			k.must(t, "GET greeting", "NOTFOUND")
			k.must(t, "SET greeting hello  world ", "OK")
			k.must(t, "GET greeting", "VALUE hello  world ")
			k.must(t, "SET greeting bonjour\r", "OK") // telnet's line ends
			k.must(t, "get greeting", "VALUE bonjour")
			k.must(t, "SET a:b@c.d-e_f 1", "OK")
			k.must(t, "DEL a:b@c.d-e_f", "OK")
			k.must(t, "DEL a:b@c.d-e_f", "NOTFOUND")
			k.must(t, "GET a:b@c.d-e_f", "NOTFOUND")
			for _, bad := range []string{"", "FROB x", "SET k", "SET k ", "GET", "GET ../etc", "GET .tmp-x", "SET a/b 1", "GET " + strings.Repeat("k", 129)} {
				if have, err := k.do(bad); err != nil || !strings.HasPrefix(have, "ERR ") {
					t.Fatalf("%q: want ERR ..., have %q %v", bad, have, err)
				}
			}
			k.must(t, "SET big "+strings.Repeat("v", 65), "ERR value too long: 65 bytes, max_value_bytes 64")
			k.must(t, "SET big "+strings.Repeat("v", 100000), "ERR line too long (max_value_bytes 64)")
			k.must(t, "SET big "+strings.Repeat("v", 64), "OK")
			k.must(t, "QUIT", "OK")
			if rest, err := io.ReadAll(k.r); err != nil || len(rest) != 0 {
				t.Fatalf("after QUIT: %q %v", rest, err)
			}
			// No SET left a temporary file behind (a starting worker's
			// probe, .tmp-probe-*, may be there for a moment).
			if tmps, _ := filepath.Glob(filepath.Join(state, ".tmp-[0-9]*")); len(tmps) != 0 {
				t.Fatalf("left in the state directory: %v", tmps)
			}
			d.Signal(t, syscall.SIGTERM)
			if err := d.Wait(t, 10*time.Second); err != nil {
				t.Fatalf("exit: %v", err)
			}
			// The state survives the daemon.
			_, addr = start(t, bin, m.flag, "-state-dir", state)
			k = dial(t, addr)
			k.must(t, "GET greeting", "VALUE bonjour")
			k.must(t, "GET big", "VALUE "+strings.Repeat("v", 64))
		})
	}
}

// TestConcurrentClients: 8 clients served at once, and so by 8 different
// worker processes, each SET 100 keys of its own and the same shared key
// 100 times, in parallel; then every key is read back from fresh sessions.
// Nothing is lost, and the shared key holds one client's value, whole.
func TestConcurrentClients(t *testing.T) {
	bin := daemontest.Build(t)
	d, addr := start(t, bin, "-prefork", "4", "-maxfork", "16")
	const clients, keys = 8, 100
	sessions := make([]*kv, clients)
	for i := range sessions {
		sessions[i] = dial(t, addr)
		// Served: this session holds a worker until it quits.
		sessions[i].must(t, "GET warm-up", "NOTFOUND")
	}
	if n := len(d.Kids()); n < clients {
		t.Fatalf("%d sessions served at once by %d workers", clients, n)
	}
	value := func(client, key int) string {
		return fmt.Sprintf("client %d key %d %s", client, key, strings.Repeat("x", client*10+key%7))
	}
	t0 := time.Now()
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for i, k := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < keys; j++ {
				for _, cmd := range []string{fmt.Sprintf("SET c%d-k%d %s", i, j, value(i, j)), "SET shared " + value(i, 0)} {
					if have, err := k.do(cmd); err != nil || have != "OK" {
						errs <- fmt.Errorf("client %d: %q: %q %v", i, trunc(cmd), have, err)
						return
					}
				}
			}
			k.do("QUIT")
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d clients in %d workers: %d SETs in %s", clients, len(d.Kids()), clients*keys*2, time.Since(t0).Round(time.Millisecond))
	// Read back from new sessions, served by whichever workers are free.
	for i := 0; i < clients; i++ {
		k := dial(t, addr)
		for j := 0; j < keys; j++ {
			k.must(t, fmt.Sprintf("GET c%d-k%d", i, j), "VALUE "+value(i, j))
		}
		k.c.Close()
	}
	k := dial(t, addr)
	shared, err := k.do("GET shared")
	whole := false
	for i := 0; i < clients; i++ {
		whole = whole || shared == "VALUE "+value(i, 0)
	}
	if err != nil || !whole {
		t.Fatalf("the shared key is not one client's value: %q %v", shared, err)
	}
}

// TestReload: max_value_bytes and readonly re-read on HUP apply to new
// clients; a bad file is refused, naming file, line and key, and the last
// good settings serve on. In both modes.
func TestReload(t *testing.T) {
	bin := daemontest.Build(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "kvd.yaml")
			os.WriteFile(cfg, []byte("max_value_bytes: 32\n"), 0o644)
			d, addr := start(t, bin, "-config", cfg, m.flag)
			twenty := "SET k " + strings.Repeat("v", 20)
			k := dial(t, addr)
			k.must(t, twenty, "OK")
			k.c.Close()

			reload := func(yaml, cmd, want string) {
				t.Helper()
				os.WriteFile(cfg, []byte(yaml), 0o644)
				d.Signal(t, syscall.SIGHUP)
				var have string
				if !daemontest.Eventually(10*time.Second, func() bool {
					k := dial(t, addr)
					defer k.c.Close()
					have, _ = k.do(cmd)
					return have == want
				}) {
					t.Fatalf("after the reload, %q: want %q, have %q", trunc(cmd), want, have)
				}
			}
			reload("max_value_bytes: 8\n", twenty, "ERR value too long: 20 bytes, max_value_bytes 8")
			k = dial(t, addr)
			k.must(t, "SET k short", "OK")
			k.c.Close()
			reload("max_value_bytes: 8\nreadonly: true\n", "SET k short", "ERR readonly")

			// A bad file: refused whole (readonly stays on, the bad
			// max_value_bytes is not taken), logged with file and line.
			os.WriteFile(cfg, []byte("readonly: false\nmax_value_bytes: -1\n"), 0o644)
			d.Signal(t, syscall.SIGHUP)
			log := d.WaitLog(t, "reload refused", 10*time.Second)
			if want := `kvd.yaml:2: key \"max_value_bytes\"`; !strings.Contains(log, want) {
				t.Fatalf("want %s in the refusal:\n%s", want, log)
			}
			k = dial(t, addr)
			k.must(t, "SET k short", "ERR readonly")
			k.must(t, "GET k", "VALUE short")
		})
	}
}

// TestCheck: -check names the file, line and key of a bad setting, and a
// daemon started with one exits 1 at once.
func TestCheck(t *testing.T) {
	bin := daemontest.Build(t)
	dir := t.TempDir()
	aFile := filepath.Join(dir, "not-a-dir")
	os.WriteFile(aFile, nil, 0o644)
	for _, tc := range []struct{ name, yaml, want string }{
		{"good", "prefork: 2\nstate_dir: " + dir + "\n", "kvd: configuration ok"},
		{"missing dir is created later", "state_dir: " + dir + "/new\n", "kvd: configuration ok"},
		{"state_dir a file", "prefork: 2\nstate_dir: " + aFile + "\n", `kvd.yaml:2: key "state_dir": value "` + aFile + `": not a directory`},
		{"state_dir relative", "state_dir: kvd\n", `kvd.yaml:1: key "state_dir": value "kvd": want an absolute path`},
		{"max_value_bytes 0", "state_dir: " + dir + "\n\nmax_value_bytes: 0\n", `kvd.yaml:3: key "max_value_bytes": value "0": want 1 to 1048576`},
		{"max_value_bytes not a number", "max_value_bytes: lots\n", `kvd.yaml:1: key "max_value_bytes": value "lots": want an integer`},
		{"waiter's option", "prefork: 8\nmaxfork: 2\n", `kvd.yaml:2: key "maxfork"`},
		{"unknown key", "state_dri: /x\n", `kvd.yaml:1: key "state_dri"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "kvd.yaml")
			os.WriteFile(cfg, []byte(tc.yaml), 0o644)
			out, code := daemontest.Run(t, bin, "-check", "-config", cfg)
			if want := 0; strings.Contains(tc.want, "key ") {
				want = 1
				if code != want || !strings.Contains(out, tc.want) {
					t.Fatalf("want exit %d and %q, have %d %q", want, tc.want, code, out)
				}
			} else if code != 0 || !strings.Contains(out, tc.want) {
				t.Fatalf("want exit 0 and %q, have %d %q", tc.want, code, out)
			}
		})
	}
	// Started for real with a state_dir that is a file: exit 1, at once.
	t0 := time.Now()
	out, code := daemontest.Run(t, bin, "-listen", daemontest.FreeAddr(t), "-state-dir", aFile)
	if code != 1 || !strings.Contains(out, "not a directory") || time.Since(t0) > 5*time.Second {
		t.Fatalf("a state_dir that is a file: want exit 1 at once, have %d after %s: %s", code, time.Since(t0), out)
	}
}

// TestStateDirBreaks: the state directory becomes a file while kvd runs
// (after the master's check) and every worker is killed. The workers that
// replace them fail OnChildStart: logged once at error, retried with a
// back-off (no spin); once the directory is back, clients are served again
// without a restart.
func TestStateDirBreaks(t *testing.T) {
	bin := daemontest.Build(t)
	state := filepath.Join(t.TempDir(), "state")
	d, addr := start(t, bin, "-state-dir", state, "-prefork", "2", "-maxfork", "4", "-debug")
	d.WaitKids(t, 2)
	os.RemoveAll(state)
	os.WriteFile(state, []byte("not a directory\n"), 0o644)
	for _, pid := range d.Kids() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	time.Sleep(3 * time.Second)
	log := d.Stderr.String()
	errorLines := strings.Count(log, "logged once until one starts")
	// The master's line for each worker whose OnChildStart failed.
	attempts := len(regexp.MustCompile(`worker pid \d+: on_child_start failed`).FindAllString(log, -1))
	t.Logf("in 3 s with a broken state_dir: %d error line(s), %d failed worker starts", errorLines, attempts)
	if errorLines != 1 || !strings.Contains(log, "not a directory") {
		t.Fatalf("want the failure logged once at error, naming the cause; have %d lines:\n%s", errorLines, log)
	}
	if attempts < 1 || attempts > 30 {
		t.Fatalf("want a back-off between failed starts, have %d in 3 s", attempts)
	}
	os.Remove(state)
	os.Mkdir(state, 0o700)
	t0 := time.Now()
	k := dial(t, addr)
	k.must(t, "SET back yes", "OK")
	t.Logf("served again %s after the directory came back", time.Since(t0).Round(time.Millisecond))
}

// TestStopSaysBye: a stop with an idle session connected ends within a
// second, not at graceful_timeout: the session is told BYE, then EOF.
func TestStopSaysBye(t *testing.T) {
	bin := daemontest.Build(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			d, addr := start(t, bin, m.flag, "-graceful-timeout", "20")
			k := dial(t, addr)
			k.must(t, "SET idle yes", "OK")
			t0 := time.Now()
			d.Signal(t, syscall.SIGTERM)
			rest, err := io.ReadAll(k.r)
			bye := time.Since(t0)
			if err != nil || string(rest) != "BYE server stopping\n" {
				t.Fatalf("after the stop the idle session got %q, %v", rest, err)
			}
			if err := d.Wait(t, 10*time.Second); err != nil {
				t.Fatalf("exit: %v", err)
			}
			t.Logf("%s: BYE after %s, exit after %s (graceful_timeout 20s)", m.name, bye.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
			if time.Since(t0) > 2*time.Second {
				t.Fatalf("the stop took %s with an idle session", time.Since(t0))
			}
		})
	}
}
