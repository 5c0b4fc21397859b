package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// TestProxyHeader: v1 is the text a balancer sends; v2 reads back as the
// same addresses.
func TestProxyHeader(t *testing.T) {
	dst := netip.MustParseAddrPort("127.0.0.1:9123")
	v1, err := proxyHeader(1, 3, dst)
	if err != nil {
		t.Fatal(err)
	}
	if want := "PROXY TCP4 192.0.2.7 127.0.0.1 10003 9123\r\n"; string(v1) != want {
		t.Errorf("v1: want %q, have %q", want, v1)
	}
	v2, err := proxyHeader(2, 3, dst)
	if err != nil {
		t.Fatal(err)
	}
	h, err := proxyproto.Read(bufio.NewReader(bytes.NewReader(v2)))
	if err != nil {
		t.Fatalf("v2 %x: %v", v2, err)
	}
	if h.Version != 2 || h.SourceAddr.String() != "192.0.2.7:10003" || h.DestinationAddr.String() != dst.String() {
		t.Errorf("v2: want version 2, 192.0.2.7:10003 to %s; have %d, %s to %s", dst, h.Version, h.SourceAddr, h.DestinationAddr)
	}
	if _, err := proxyHeader(3, 0, dst); err == nil {
		t.Error("version 3: want an error")
	}
}

// TestLoadProxy runs both engines against a server that reads a PROXY
// header before it greets (as waiterd with -proxy-protocol does), and
// reads back which sources the headers carried: one per client loop.
func TestLoadProxy(t *testing.T) {
	for _, engine := range []string{"raw", "net"} {
		for _, v := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/v%d", engine, v), func(t *testing.T) {
				var mu sync.Mutex
				sources := map[string]int{}
				versions := map[byte]int{}
				addr := testServer(t, func(c *net.TCPConn) {
					defer c.Close()
					c.SetDeadline(time.Now().Add(time.Second))
					h, err := proxyproto.Read(bufio.NewReader(c))
					if err != nil {
						c.Write([]byte("no header\n"))
						return
					}
					mu.Lock()
					sources[h.SourceAddr.String()]++
					versions[h.Version]++
					mu.Unlock()
					c.Write([]byte(greeting))
				})
				o := loadOptions{Addr: addr, Conc: 3, Duration: 300 * time.Millisecond, Timeout: 200 * time.Millisecond, Engine: engine, Proxy: v}
				r, err := runLoad(context.Background(), o)
				if err != nil {
					t.Fatal(err)
				}
				if r.OK == 0 || r.Errs.total() != 0 {
					t.Fatalf("want only successes, have %d ok, errors %s (%q)", r.OK, fmtErrs(r.Errs), r.Samples)
				}
				mu.Lock()
				defer mu.Unlock()
				if len(sources) != 3 || versions[byte(v)] < r.OK {
					t.Errorf("want 3 sources and %d+ v%d headers, have %v, %v", r.OK, v, sources, versions)
				}
			})
		}
	}
}
