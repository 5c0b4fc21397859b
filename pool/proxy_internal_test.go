package pool

import (
	"bufio"
	"net"
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
func BenchmarkReadProxy(b *testing.B) {
	for _, v := range []byte{1, 2} {
		h := &proxyproto.Header{Version: v, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
			SourceAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 5555}, DestinationAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9123}}
		hb, err := h.Format()
		if err != nil {
			b.Fatal(err)
		}
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
		h := &proxyproto.Header{Version: v, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
			SourceAddr: &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 5555}, DestinationAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 9123}}
		hb, err := h.Format()
		if err != nil {
			b.Fatal(err)
		}
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
