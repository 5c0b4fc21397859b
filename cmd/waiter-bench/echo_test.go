package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// TestRequestFor: an echo client's one write is its header (if any) and
// then the line; it half-closes and wants the greeting and the line.
func TestRequestFor(t *testing.T) {
	dst := netip.MustParseAddrPort("127.0.0.1:9123")
	cases := []struct {
		name      string
		o         loadOptions
		write     string
		closeW    bool
		wantReply string
	}{
		{"plain", loadOptions{Addr: dst}, "", false, greeting},
		{"proxy v1", loadOptions{Addr: dst, Proxy: 1}, "PROXY TCP4 192.0.2.7 127.0.0.1 10003 9123\r\n", false, greeting},
		{"echo", loadOptions{Addr: dst, Echo: true}, "ping\n", true, "hello world\nping\n"},
		{"echo, proxy v1", loadOptions{Addr: dst, Echo: true, Proxy: 1}, "PROXY TCP4 192.0.2.7 127.0.0.1 10003 9123\r\nping\n", true, "hello world\nping\n"},
	}
	for _, c := range cases {
		rq, err := requestFor(c.o, 3)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if string(rq.write) != c.write || rq.closeWrite != c.closeW || string(rq.want) != c.wantReply {
			t.Errorf("%s: want %q, half-close %v, reply %q; have %q, %v, %q", c.name, c.write, c.closeW, c.wantReply, rq.write, rq.closeWrite, rq.want)
		}
	}
	// v2: the binary header, then the line.
	rq, err := requestFor(loadOptions{Addr: dst, Echo: true, Proxy: 2}, 3)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(bytes.NewReader(rq.write))
	if h, err := proxyproto.Read(r); err != nil || h.Version != 2 {
		t.Fatalf("v2 echo request %x: header %v, %v", rq.write, h, err)
	}
	if rest, _ := io.ReadAll(r); string(rest) != echoLine {
		t.Errorf("v2 echo request: after the header want %q, have %q", echoLine, rest)
	}
}

// echoServer is waiterd -echo in small: the greeting, then each line back
// (through change) until the client's EOF; with proxy, a PROXY header is
// read first from the same buffer, so that a line that came in the same
// segment is not lost. It counts the lines it read.
func echoServer(t *testing.T, proxy bool, change func(string) string) (netip.AddrPort, *int, *sync.Mutex) {
	var mu sync.Mutex
	var lines int
	addr := testServer(t, func(c *net.TCPConn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		r := bufio.NewReader(c)
		if proxy {
			if _, err := proxyproto.Read(r); err != nil {
				c.Write([]byte("no header\n"))
				return
			}
		}
		c.Write([]byte(greeting))
		for {
			line, err := r.ReadString('\n')
			if len(line) > 0 {
				mu.Lock()
				lines++
				mu.Unlock()
				c.Write([]byte(change(line)))
			}
			if err != nil {
				// EOF: the client half-closed; a timeout (the client
				// never did) leaves the reply short of the line.
				return
			}
		}
	})
	return addr, &lines, &mu
}

// TestLoadEcho runs both engines' echo clients, with no header, v1 and v2,
// against a server that echoes right and against ones that answer wrong
// (the line changed, the line doubled, the greeting alone): a wrong reply
// is counted as one, and nothing else is.
func TestLoadEcho(t *testing.T) {
	same := func(s string) string { return s }
	cases := []struct {
		name   string
		change func(string) string
		wantOK bool
	}{
		{"echoes", same, true},
		{"changes the line", strings.ToUpper, false},
		{"doubles the line", func(s string) string { return s + s }, false},
		{"does not echo", func(string) string { return "" }, false},
	}
	for _, engine := range []string{"raw", "net"} {
		for _, v := range []int{0, 1, 2} {
			for _, c := range cases {
				t.Run(fmt.Sprintf("%s/v%d/%s", engine, v, c.name), func(t *testing.T) {
					addr, lines, mu := echoServer(t, v != 0, c.change)
					o := loadOptions{Addr: addr, Conc: 3, Duration: 300 * time.Millisecond, Timeout: 500 * time.Millisecond, Engine: engine, Proxy: v, Echo: true}
					r, err := runLoad(context.Background(), o)
					if err != nil {
						t.Fatal(err)
					}
					mu.Lock()
					n := *lines
					mu.Unlock()
					if c.wantOK {
						if r.OK == 0 || r.Errs.total() != 0 {
							t.Fatalf("want only successes, have %d ok, errors %s (%q)", r.OK, fmtErrs(r.Errs), r.Samples)
						}
						// Every counted connection sent its line (and the
						// server read it whole, after the header when any).
						if n < r.OK {
							t.Errorf("%d connections counted, but the server read %d lines", r.OK, n)
						}
						return
					}
					if r.OK != 0 || r.Errs[errWrong] == 0 || r.Errs.total() != r.Errs[errWrong] {
						t.Fatalf("want only wrong-reply errors, have %d ok, errors %s (%q)", r.OK, fmtErrs(r.Errs), r.Samples)
					}
				})
			}
		}
	}
}

// TestLoadEchoHalfCloses: the echo client half-closes after its line, and
// its server's reply comes only at that EOF: a client that did not
// half-close would time out here.
func TestLoadEchoHalfCloses(t *testing.T) {
	addr := testServer(t, func(c *net.TCPConn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		b, err := io.ReadAll(c)
		if err != nil {
			return // no EOF from the client: no reply
		}
		c.Write(append([]byte(greeting), b...))
	})
	for _, engine := range []string{"raw", "net"} {
		o := loadOptions{Addr: addr, Conc: 2, Duration: 200 * time.Millisecond, Timeout: 300 * time.Millisecond, Engine: engine, Echo: true}
		r, err := runLoad(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		if r.OK == 0 || r.Errs.total() != 0 {
			t.Errorf("%s: want only successes, have %d ok, errors %s (%q)", engine, r.OK, fmtErrs(r.Errs), r.Samples)
		}
	}
}
