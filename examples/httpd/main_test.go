package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/waiter-go/waiter/examples/internal/daemontest"
)

func TestMain(m *testing.M) { daemontest.Main(m) }

// conn is one client connection, on which requests are sent one after the
// other (keep-alive).
type conn struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *conn {
	t.Helper()
	c := daemontest.Dial(t, addr)
	return &conn{c: c, r: bufio.NewReader(c)}
}

// get sends GET path on the connection and reads the whole response.
func (k *conn) get(path string) (*http.Response, string, error) {
	if _, err := fmt.Fprintf(k.c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// pidOf is the worker pid in / 's answer, "hello from pid N\n".
func pidOf(t *testing.T, body string) int {
	t.Helper()
	_, after, ok := strings.Cut(body, " from pid ")
	pid, err := strconv.Atoi(strings.TrimSpace(after))
	if !ok || err != nil {
		t.Fatalf("no pid in %q", body)
	}
	return pid
}

func (k *conn) mustGet(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	resp, body, err := k.get(path)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %v %v %q", path, resp, err, body)
	}
	return resp, body
}

func start(t *testing.T, bin string, args ...string) (*daemontest.Daemon, string) {
	t.Helper()
	addr := daemontest.FreeAddr(t)
	d := daemontest.Start(t, bin, append([]string{"-listen", addr}, args...)...)
	k := dial(t, addr)
	k.mustGet(t, "/")
	k.c.Close()
	return d, addr
}

// TestKeepAlive: 20 requests on one connection are served by one worker;
// a second client, while the first holds its connection open, by another.
func TestKeepAlive(t *testing.T) {
	bin := daemontest.Build(t)
	_, addr := start(t, bin, "-prefork", "2", "-maxfork", "8")
	a := dial(t, addr)
	var pidA int
	for i := 0; i < 20; i++ {
		resp, body := a.mustGet(t, "/")
		if resp.Close {
			t.Fatalf("request %d: the server closes the connection", i)
		}
		if pid := pidOf(t, body); i == 0 {
			pidA = pid
		} else if pid != pidA {
			t.Fatalf("request %d on one connection served by pid %d, the first by %d", i, pid, pidA)
		}
	}
	b := dial(t, addr)
	_, body := b.mustGet(t, "/")
	if pidB := pidOf(t, body); pidB == pidA {
		t.Fatalf("two connections at once served by one worker, pid %d", pidA)
	}
	// Back on the first: still its worker.
	if _, body := a.mustGet(t, "/"); pidOf(t, body) != pidA {
		t.Fatalf("the first connection moved: %q", body)
	}
	t.Logf("20 keep-alive requests from pid %d; the second client from %q", pidA, strings.TrimSpace(body))
}

// TestNetHTTPClient: net/http's own client, 8 goroutines of 25 requests
// each, through its keep-alive pool: all served, by several workers.
func TestNetHTTPClient(t *testing.T) {
	bin := daemontest.Build(t)
	_, addr := start(t, bin, "-greeting", "bonjour")
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	pids := map[int]int{}
	type result struct {
		pid int
		err error
	}
	results := make(chan result)
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; i < 25; i++ {
				resp, err := client.Get("http://" + addr + "/")
				if err != nil {
					results <- result{err: err}
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				_, after, _ := strings.Cut(string(b), "bonjour from pid ")
				pid, perr := strconv.Atoi(strings.TrimSpace(after))
				if err == nil && perr != nil {
					err = fmt.Errorf("answer %q", b)
				}
				results <- result{pid, err}
			}
		}()
	}
	t0 := time.Now()
	for i := 0; i < 8*25; i++ {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		pids[r.pid]++
	}
	t.Logf("200 requests from 8 goroutines in %s: workers %v", time.Since(t0).Round(time.Millisecond), pids)
	if len(pids) < 2 {
		t.Fatalf("want several workers, have %v", pids)
	}
}

// TestPanic: /panic gets a 500 and its connection closed; the worker is
// replaced, and the next clients are served.
func TestPanic(t *testing.T) {
	bin := daemontest.Build(t)
	d, addr := start(t, bin, "-prefork", "2", "-maxfork", "4")
	k := dial(t, addr)
	_, body := k.mustGet(t, "/")
	pid := pidOf(t, body)
	resp, body, err := k.get("/panic")
	if err != nil || resp.StatusCode != 500 || !resp.Close {
		t.Fatalf("/panic: want a 500 and Connection: close, have %v %v %q", resp, err, body)
	}
	if rest, err := io.ReadAll(k.r); len(rest) != 0 || err != nil {
		t.Fatalf("after the 500: %q %v", rest, err)
	}
	log := d.WaitLog(t, "handler panic on GET /panic: a demo panic", 5*time.Second)
	if !strings.Contains(log, "the worker ends") || !strings.Contains(log, "main.go") {
		t.Fatalf("want the panic logged with its stack and the worker ended:\n%s", log)
	}
	if !daemontest.Eventually(5*time.Second, func() bool { _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); return err != nil }) {
		t.Fatalf("the worker that panicked, pid %d, still runs", pid)
	}
	d.WaitKids(t, 2)
	for i := 0; i < 5; i++ {
		k := dial(t, addr)
		if _, body := k.mustGet(t, "/"); pidOf(t, body) == pid {
			t.Fatalf("served by the worker that panicked")
		}
		k.c.Close()
	}
}

// TestStop: a stop with a keep-alive client idle ends at once (its
// connection is closed); a request in flight at the stop is finished, with
// Connection: close.
func TestStop(t *testing.T) {
	bin := daemontest.Build(t)
	t.Run("idle keep-alive", func(t *testing.T) {
		d, addr := start(t, bin, "-prefork", "2", "-graceful-timeout", "20", "-idle-timeout", "60")
		k := dial(t, addr)
		k.mustGet(t, "/")
		t0 := time.Now()
		d.Signal(t, syscall.SIGTERM)
		if rest, err := io.ReadAll(k.r); len(rest) != 0 || err != nil {
			t.Fatalf("the idle connection at the stop: %q %v", rest, err)
		}
		closed := time.Since(t0)
		if err := d.Wait(t, 10*time.Second); err != nil {
			t.Fatalf("exit: %v", err)
		}
		t.Logf("idle keep-alive connection closed after %s, exit after %s (graceful_timeout 20s, idle_timeout 60s)",
			closed.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
		if time.Since(t0) > 2*time.Second {
			t.Fatalf("the stop took %s", time.Since(t0))
		}
	})
	t.Run("request in flight", func(t *testing.T) {
		d, addr := start(t, bin, "-prefork", "2", "-graceful-timeout", "20")
		k := dial(t, addr)
		done := make(chan error, 1)
		var resp *http.Response
		var body string
		go func() {
			var err error
			resp, body, err = k.get("/sleep?ms=700")
			done <- err
		}()
		time.Sleep(200 * time.Millisecond)
		t0 := time.Now()
		d.Signal(t, syscall.SIGTERM)
		if err := <-done; err != nil || resp.StatusCode != 200 || !resp.Close || !strings.HasPrefix(body, "slept 700 ms") {
			t.Fatalf("the request in flight: %v %v %q", resp, err, body)
		}
		if err := d.Wait(t, 10*time.Second); err != nil {
			t.Fatalf("exit: %v", err)
		}
		t.Logf("the request in flight finished, with Connection: close; exit %s after the stop", time.Since(t0).Round(time.Millisecond))
	})
}

// TestIdleTimeout: a keep-alive connection idle past idle_timeout is
// closed, which frees its worker.
func TestIdleTimeout(t *testing.T) {
	bin := daemontest.Build(t)
	_, addr := start(t, bin, "-idle-timeout", "300ms")
	k := dial(t, addr)
	k.mustGet(t, "/")
	t0 := time.Now()
	if rest, err := io.ReadAll(k.r); len(rest) != 0 || err != nil {
		t.Fatalf("idle: %q %v", rest, err)
	}
	if took := time.Since(t0); took < 250*time.Millisecond || took > 3*time.Second {
		t.Fatalf("closed after %s with idle_timeout 300ms", took)
	}
}

// TestCheck: -check names the file and line of a bad setting.
func TestCheck(t *testing.T) {
	bin := daemontest.Build(t)
	cfg := filepath.Join(t.TempDir(), "httpd.yaml")
	os.WriteFile(cfg, []byte("prefork: 2\nidle_timeout: 0\n"), 0o644)
	if out, code := daemontest.Run(t, bin, "-check", "-config", cfg); code != 1 || !strings.Contains(out, `httpd.yaml:2: key "idle_timeout"`) {
		t.Fatalf("want exit 1 naming httpd.yaml:2, have %d %s", code, out)
	}
	os.WriteFile(cfg, []byte("prefork: 2\nidle_timeout: 2s\nread_header_timeout: 1\n"), 0o644)
	if out, code := daemontest.Run(t, bin, "-check", "-config", cfg); code != 0 {
		t.Fatalf("good: %d %s", code, out)
	}
}
