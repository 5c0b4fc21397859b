package control

import (
	"bufio"
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// Past both bounds: MaxConns connections are served, the next maxRejects
// are answered "busy" (each after up to a second's wait for its request),
// and one past those is closed unanswered at once; a served client is
// still answered, and once the rejecters are done "busy" is said again.
func TestServerPastMaxConnsAndMaxRejects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	s := &Server{Log: log, Handle: func(ctx context.Context, r Request) Reply { return Reply{OK: true} }}
	s.Start(l)
	t.Cleanup(func() { s.Close() }) // registered first: runs after the connections are closed
	dial := func() net.Conn {
		t.Helper()
		var c net.Conn
		var err error
		for i := 0; i < 100; i++ { // EAGAIN: the listen backlog is full until the server accepts
			if c, err = net.Dial("unix", path); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ask := func(c net.Conn) string {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, `{"cmd":"status"}`+"\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	served := make([]net.Conn, MaxConns)
	for i := range served {
		served[i] = dial()
	}
	first := ask(served[0]) // every one is taken by now: it was accepted first
	if !strings.Contains(first, `"ok":true`) {
		t.Fatalf("a served connection: %q", first)
	}
	for i := 0; i < maxRejects; i++ {
		dial() // silent: each holds a rejecter for its read deadline
	}
	time.Sleep(100 * time.Millisecond)
	t0 := time.Now()
	past := dial()
	if got := ask(past); got != "" || time.Since(t0) > 900*time.Millisecond {
		t.Fatalf("one past maxRejects: want closed unanswered at once, have %q after %s", got, time.Since(t0))
	}
	if got := ask(served[1]); !strings.Contains(got, `"ok":true`) {
		t.Fatalf("a served connection while rejecters are full: %q", got)
	}
	var got string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if got = ask(dial()); strings.Contains(got, "busy") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(got, "busy") {
		t.Fatalf("after the rejecters' deadline: want busy again, have %q", got)
	}
}
