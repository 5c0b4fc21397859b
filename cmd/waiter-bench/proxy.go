package main

import (
	"fmt"
	"net"
	"net/netip"

	proxyproto "github.com/pires/go-proxyproto"
)

// The "prefork+proxy1" and "prefork+proxy2" modes are the prefork pool
// with -proxy-protocol (and -proxy-from 127.0.0.0/8, the load generator's
// address): each client sends a PROXY protocol header, text (v1) or
// binary (v2), right after it connects and before it reads the greeting,
// as a load balancer in front of waiterd would. Compared with plain
// prefork in the same rounds, it is the cost of reading the header.

// proxySource is the client address the headers carry: TEST-NET-1
// (RFC 5737), which no real client has. Each client loop has a port of its
// own, so the workers see as many sources as a balancer would send.
var proxySource = netip.MustParseAddr("192.0.2.7")

// proxyHeader is the PROXY protocol header (version 1 or 2) that client
// number i sends to dst. It is built once per client loop: what a
// connection costs the generator is the write, not the encoding.
func proxyHeader(version, i int, dst netip.AddrPort) ([]byte, error) {
	if version != 1 && version != 2 {
		return nil, fmt.Errorf("proxy: version %d (want 1 or 2)", version)
	}
	h := &proxyproto.Header{
		Version:           byte(version),
		Command:           proxyproto.PROXY,
		TransportProtocol: proxyproto.TCPv4,
		SourceAddr:        net.TCPAddrFromAddrPort(netip.AddrPortFrom(proxySource, uint16(10000+i%50000))),
		DestinationAddr:   net.TCPAddrFromAddrPort(dst),
	}
	b, err := h.Format()
	if err != nil {
		return nil, fmt.Errorf("proxy: v%d header: %w", version, err)
	}
	return b, nil
}
