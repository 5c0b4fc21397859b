package pool_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/waiter-go/waiter/config"
)

// Behind a load balancer: the PROXY protocol (v1, v2) and per-source limits.

const (
	client1 = "192.0.2.7:5555"    // what the balancer says the client is
	client2 = "[2001:db8::9]:443" // the same in IPv6
)

func proxyHeader(t *testing.T, version byte, src string) []byte {
	t.Helper()
	s, err := net.ResolveTCPAddr("tcp", src)
	if err != nil {
		t.Fatal(err)
	}
	d := &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 80}
	proto := proxyproto.TCPv4
	if s.IP.To4() == nil {
		proto = proxyproto.TCPv6
		d.IP = net.ParseIP("2001:db8::1")
	}
	h := &proxyproto.Header{Version: version, Command: proxyproto.PROXY, TransportProtocol: proto, SourceAddr: s, DestinationAddr: d}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// viaProxy connects, sends head (a header, or anything), then cmd, and
// reads the reply to EOF.
func viaProxy(addr string, head []byte, cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(append(head, cmd+"\n"...)); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

func proxyOpts(mode string, from []string, mut func(*config.Options)) config.Options {
	return opts(func(o *config.Options) {
		o.ProxyProtocol, o.ProxyFrom = true, from
		o.ProxyTimeout = config.Duration(400 * time.Millisecond)
		switch mode {
		case "prefork":
			o.Prefork, o.Maxfork = 2, 4
		case "forking":
			o.Prefork, o.Spares, o.Maxfork = 0, 1, 8
		case "nofork":
			o.Nofork = true
		}
		if mut != nil {
			mut(o)
		}
	})
}

func TestProxyProtocolCarriesTheClientsAddress(t *testing.T) {
	for _, mode := range []string{"prefork", "forking", "nofork"} {
		t.Run(mode, func(t *testing.T) {
			o := proxyOpts(mode, []string{"127.0.0.0/8", "::1"}, nil)
			path := withControl(t, &o)
			p := start(t, o)
			for _, tc := range []struct {
				v    byte
				src  string
				want string
			}{{1, client1, client1}, {2, client1, client1}, {1, client2, client2}, {2, client2, client2}} {
				var s string
				eventually(t, 10*time.Second, "an answer through PROXY", func() bool {
					var err error
					s, err = viaProxy(p.addr, proxyHeader(t, tc.v, tc.src), "peer")
					return err == nil && s != ""
				})
				if s != tc.want+"\n" {
					t.Fatalf("v%d from %s: the hook sees %q", tc.v, tc.src, s)
				}
			}
			// on_accept_ok sees it too (in forking mode, in the worker).
			if n := strings.Count(strings.Join(p.readEvents(), "\n"), "on_accept_ok"); n < 4 {
				t.Fatalf("on_accept_ok ran %d times", n)
			}
			for _, e := range p.readEvents() {
				if strings.HasPrefix(e, "on_accept_ok ") && !strings.Contains(e, "192.0.2.7:5555") && !strings.Contains(e, "2001:db8::9") {
					t.Fatalf("on_accept_ok saw the balancer: %q", e)
				}
			}
			// The log's PEER=.
			if s, _ := viaProxy(p.addr, proxyHeader(t, 2, client1), "fail"); s != "failing\n" {
				t.Fatalf("fail: %q", s)
			}
			eventually(t, 5*time.Second, "the warning with the client's PEER", func() bool {
				return strings.Contains(p.stderr.String(), "PEER=\"192.0.2.7:5555\"") || strings.Contains(p.stderr.String(), "PEER=192.0.2.7:5555")
			})
			// The status.
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(append(proxyHeader(t, 1, client1), "hold\n"...))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if l, _ := bufio.NewReader(c).ReadString('\n'); l != "held\n" {
				t.Fatalf("hold through PROXY: %q", l)
			}
			st := status(t, path)
			if b := busyWorkers(st); len(b) != 1 || b[0].Peer != client1 {
				t.Fatalf("status: want one busy worker with peer %s, have %+v", client1, b)
			}
		})
	}
}

// Refusals: a source not in proxy_from, no header, a malformed one, and a
// silent client (proxy_timeout). Each is closed and logged; the next
// client is served.
func TestProxyProtocolRefusals(t *testing.T) {
	p := start(t, proxyOpts("prefork", []string{"127.0.0.1"}, nil))
	good := func() {
		t.Helper()
		var s string
		eventually(t, 10*time.Second, "a good client served", func() bool {
			s, _ = viaProxy(p.addr, proxyHeader(t, 2, client1), "peer")
			return s == client1+"\n"
		})
	}
	good()
	for _, tc := range []struct {
		name string
		head []byte
		want string
	}{
		{"no header", nil, "PROXY protocol: "},
		{"malformed v1", []byte("PROXY TCP4 banana 127.0.0.1 1 2\r\n"), "PROXY protocol: a bad header"},
		{"truncated v2", proxyHeader(t, 2, client1)[:14], "PROXY protocol: "},
	} {
		s, _ := viaProxy(p.addr, tc.head, "peer")
		if s != "" {
			t.Fatalf("%s: served %q", tc.name, s)
		}
		good()
	}
	// Silent: closed after proxy_timeout (400 ms), not held; the kernel
	// holds it for a second first (TCP_DEFER_ACCEPT), so about 1.4 s.
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _ := c.Read(make([]byte, 1))
	c.Close()
	if took := time.Since(t0); n != 0 || took < 300*time.Millisecond || took > 6*time.Second {
		t.Fatalf("a silent client: want closed after ~1.4s, have %d bytes after %s", n, took)
	}
	eventually(t, 3*time.Second, "the refusals logged", func() bool {
		s := p.stderr.String()
		return strings.Contains(s, "PROXY protocol: ") && strings.Contains(s, "closed")
	})
	good()

	// From a source not in proxy_from: closed even with a good header.
	p2 := start(t, proxyOpts("prefork", []string{"10.0.0.0/8"}, nil))
	eventually(t, 10*time.Second, "the refusal logged", func() bool {
		if s, _ := viaProxy(p2.addr, proxyHeader(t, 1, client1), "peer"); s != "" {
			t.Fatalf("from 127.0.0.1, not in proxy_from: served %q", s)
		}
		return strings.Contains(p2.stderr.String(), "is not in proxy_from")
	})
}

// TLS behind the header: the header first, then the handshake.
func TestProxyProtocolWithTLS(t *testing.T) {
	pk := newTLSPKI(t)
	for _, mode := range []string{"prefork", "forking"} {
		t.Run(mode, func(t *testing.T) {
			o := pk.opts(mode, func(o *config.Options) { o.ProxyProtocol, o.ProxyFrom = true, []string{"127.0.0.0/8"} })
			p := start(t, o)
			var s string
			eventually(t, 10*time.Second, "served over TLS behind PROXY", func() bool {
				c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
				if err != nil {
					return false
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				c.Write(proxyHeader(t, 2, client1))
				tc := tls.Client(c, pk.clientConfig(nil))
				if err := tc.Handshake(); err != nil {
					return false
				}
				io.WriteString(tc, "peer\n")
				b, _ := io.ReadAll(tc)
				s = string(b)
				return s != ""
			})
			if s != client1+"\n" {
				t.Fatalf("over TLS behind PROXY: %q", s)
			}
		})
	}
}

// dialFrom connects from a given loopback address (all of 127/8 is
// loopback).
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func holdFrom(t *testing.T, from, addr string, head []byte) net.Conn {
	t.Helper()
	c := dialFrom(t, from, addr)
	c.Write(append(head, "hold\n"...))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "held\n" {
		t.Fatalf("hold from %s: %q %v", from, b, err)
	}
	return c
}

func TestMaxPerSource(t *testing.T) {
	t.Run("direct", func(t *testing.T) {
		o := prefork(6, 6, func(o *config.Options) { o.MaxPerSource = 2 })
		path := withControl(t, &o)
		p := start(t, o)
		talkRetry(t, p.addr, "hello")
		holdFrom(t, "127.0.0.1", p.addr, nil)
		holdFrom(t, "127.0.0.1", p.addr, nil)
		c := dialFrom(t, "127.0.0.1", p.addr)
		io.WriteString(c, "hello\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if b, _ := io.ReadAll(c); string(b) != "too many from you\n" {
			t.Fatalf("the third from 127.0.0.1: want on_source_limited's reply, have %q", b)
		}
		// Others are served, two at a time as well.
		holdFrom(t, "127.0.0.2", p.addr, nil)
		c2 := dialFrom(t, "127.0.0.2", p.addr)
		io.WriteString(c2, "hello\n")
		c2.SetReadDeadline(time.Now().Add(10 * time.Second))
		if b, _ := io.ReadAll(c2); string(b) != "hello world\n" {
			t.Fatalf("127.0.0.2: %q", b)
		}
		if n := p.count("on_source_limited"); n != 1 {
			t.Fatalf("on_source_limited: want 1, have %d", n)
		}
		// The worker that answered c2 is busy until its on_close returns,
		// which can be just after c2 reads EOF: wait for it to settle.
		var n int
		eventually(t, 5*time.Second, "3 busy (two from .1, one from .2)", func() bool {
			n = len(busyWorkers(status(t, path)))
			return n == 3
		})
		eventually(t, 3*time.Second, "the limit logged", func() bool {
			return strings.Contains(p.stderr.String(), "127.0.0.1 has 2 other clients being served or arriving (max_per_source 2)")
		})
	})
	t.Run("over TLS", func(t *testing.T) {
		// on_source_limited runs after the handshake: its reply is TLS.
		pk := newTLSPKI(t)
		p := start(t, pk.opts("prefork", func(o *config.Options) { o.Prefork, o.Maxfork, o.MaxPerSource = 3, 3, 1 }))
		dialTLS := func() *tls.Conn {
			t.Helper()
			var tc *tls.Conn
			eventually(t, 10*time.Second, "a TLS handshake", func() bool {
				c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
				if err != nil {
					return false
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tc = tls.Client(c, pk.clientConfig(nil))
				if err := tc.Handshake(); err != nil {
					c.Close()
					return false
				}
				return true
			})
			t.Cleanup(func() { tc.Close() })
			return tc
		}
		held := dialTLS()
		io.WriteString(held, "hold\n")
		b := make([]byte, 5)
		if _, err := io.ReadFull(held, b); err != nil || string(b) != "held\n" {
			t.Fatalf("hold over TLS: %q %v", b, err)
		}
		second := dialTLS()
		io.WriteString(second, "hello\n")
		if b, _ := io.ReadAll(second); string(b) != "too many from you\n" {
			t.Fatalf("the second TLS client from 127.0.0.1: want on_source_limited's reply over TLS, have %q", b)
		}
	})
	t.Run("after PROXY", func(t *testing.T) {
		p := start(t, proxyOpts("prefork", nil, func(o *config.Options) { o.Prefork, o.Maxfork, o.MaxPerSource = 6, 6, 2 }))
		h := proxyHeader(t, 2, client1)
		var err error
		eventually(t, 10*time.Second, "up", func() bool { _, err = viaProxy(p.addr, h, "peer"); return err == nil })
		holdFrom(t, "127.0.0.1", p.addr, h)
		holdFrom(t, "127.0.0.2", p.addr, h)
		// The third from the same client, through either balancer address.
		if s, _ := viaProxy(p.addr, h, "hello"); s != "too many from you\n" {
			t.Fatalf("a third from %s: %q", client1, s)
		}
		if s, _ := viaProxy(p.addr, proxyHeader(t, 1, "192.0.2.8:1"), "hello"); s != "hello world\n" {
			t.Fatalf("another client behind the same balancer: %q", s)
		}
	})
}

// A header that arrives in pieces (within proxy_timeout) is read whole, and
// the bytes after it reach the hook untouched.
func TestProxyProtocolHeaderInPieces(t *testing.T) {
	p := start(t, proxyOpts("prefork", []string{"127.0.0.1"}, nil))
	for _, v := range []byte{1, 2} {
		h := proxyHeader(t, v, client1)
		var s string
		eventually(t, 10*time.Second, "served", func() bool {
			c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
			if err != nil {
				return false
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			for _, part := range [][]byte{h[:3], h[3:13], h[13:], []byte("pe"), []byte("er\n")} {
				c.Write(part)
				time.Sleep(60 * time.Millisecond)
			}
			b, _ := io.ReadAll(c)
			s = string(b)
			return s != ""
		})
		if s != client1+"\n" {
			t.Fatalf("v%d in pieces: %q", v, s)
		}
	}
}

// On a dual-stack socket IPv4 clients come as ::ffff:a.b.c.d: counted as
// the same source.
func TestMaxPerSourceDualStack(t *testing.T) {
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	o := prefork(4, 4, func(o *config.Options) { o.Listen = "[::]:" + port; o.MaxPerSource = 1 })
	p := startWith(t, o, nil)
	talkRetry(t, addr, "hello")
	holdFrom(t, "127.0.0.1", addr, nil)
	c := dialFrom(t, "127.0.0.1", addr)
	io.WriteString(c, "hello\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, _ := io.ReadAll(c); string(b) != "too many from you\n" {
		t.Fatalf("the second from 127.0.0.1 on [::]: want on_source_limited's reply, have %q", b)
	}
	_ = p
}
