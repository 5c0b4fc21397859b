package pool

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/config"
)

// BenchmarkReadProxy is the header's cost on its socket: the client's write
// of a v1 or v2 header over loopback, then readProxy's read and parse, as a
// worker does per client (the syscalls are nearly all of it: see
// BenchmarkProxyParse).
// benchHeader is a PROXY header of version v for 192.0.2.7:5555.
func benchHeader(b *testing.B, v byte) []byte {
	h := &proxyproto.Header{Version: v, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
		SourceAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 5555}, DestinationAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9123}}
	hb, err := h.Format()
	if err != nil {
		b.Fatal(err)
	}
	return hb
}

func BenchmarkReadProxy(b *testing.B) {
	for _, v := range []byte{1, 2} {
		hb := benchHeader(b, v)
		b.Run(map[byte]string{1: "v1", 2: "v2"}[v], func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			sc, err := ln.Accept()
			if err != nil {
				b.Fatal(err)
			}
			defer sc.Close()
			f, _ := sc.(*net.TCPConn).File()
			defer f.Close()
			fd := int(f.Fd())
			unix.SetNonblock(fd, false)
			w := &worker{o: config.Options{ProxyProtocol: true, ProxyTimeout: config.Duration(time.Second)}}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c.Write(hb)
				from, _, err := w.readProxy(fd, nil)
				if err != nil || from == nil {
					b.Fatal(from, err)
				}
			}
		})
	}
}

// BenchmarkProxyParse is go-proxyproto's parse alone, as readProxy calls it
// (its reader reused): what the header costs beyond the read that takes it.
func BenchmarkProxyParse(b *testing.B) {
	for _, v := range []byte{1, 2} {
		hb := benchHeader(b, v)
		b.Run(map[byte]string{1: "v1", 2: "v2"}[v], func(b *testing.B) {
			var w worker
			w.proxyRd = bufio.NewReaderSize(&w.proxyHdr, maxProxyHeader)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				w.proxyHdr.Reset(hb)
				w.proxyRd.Reset(&w.proxyHdr)
				if _, err := proxyproto.Read(w.proxyRd); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestProxyHeaderSize(t *testing.T) {
	v1 := "PROXY TCP4 192.0.2.7 127.0.0.1 5555 9123\r\n"
	for _, tc := range []struct {
		in       string
		size     int
		complete bool
		err      string
	}{
		{v1 + "hello\n", len(v1), true, ""},
		{v1[:10], 0, false, ""},
		{"PRO", 0, false, ""},
		{"PROXY TCP4 192.0.2.7 127.0.0.1 5555 9123\nhello\n", 0, false, "bare LF"},
		{"PROXY " + strings.Repeat("x", 110), 0, false, "without its CRLF"},
		{"GET / HTTP/1.1\r\n", 0, false, "no PROXY header"},
		{string(sigV2) + "\x21\x11\x00\x0c" + strings.Repeat("\x00", 12) + "data", 28, true, ""},
		{string(sigV2) + "\x21\x11\x00\x0c" + strings.Repeat("\x00", 4), 28, false, ""},
		{string(sigV2) + "\x21\x11\xff\xff", 0, false, "at most"},
		// maxProxyHeader exactly, and one past it.
		{string(sigV2) + "\x21\x11\x05\xf0" + strings.Repeat("\x00", maxProxyHeader-16), maxProxyHeader, true, ""},
		{string(sigV2) + "\x21\x11\x05\xf1", 0, false, "at most 1536"},
	} {
		size, complete, err := proxyHeaderSize([]byte(tc.in))
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: want an error with %q, have %d %v %v", tc.in, tc.err, size, complete, err)
			}
		case err != nil || size != tc.size || complete != tc.complete:
			t.Errorf("%q: want %d %v, have %d %v %v", tc.in, tc.size, tc.complete, size, complete, err)
		}
	}
}
