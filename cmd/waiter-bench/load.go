package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// greeting is what waiterd (and the baseline server) write before closing.
const greeting = "hello world\n"

// loadResult is one round of the load generator at one concurrency.
type loadResult struct {
	Conc    int
	Window  time.Duration // the measured window; connections ending after it are not counted
	OK      int
	Errs    errCounts
	Lat     latencies
	PerSec  float64
	Samples [numErrKinds]string // the first error of each kind, for -v
	// Procs is the server's process group (master and workers) at the
	// end of the window; 0: not counted.
	Procs int
	// CPU is what the server's processes used during the call (user and
	// system, in clock ticks of 10ms), MasterCPU the master's share of
	// it; 0: not measured.
	CPU, MasterCPU time.Duration
	// raw is every counted connection's latency, sorted, when asked for
	// (loadOptions.Keep), to merge slices.
	raw []time.Duration
}

// mergeResults makes one result of slices of load at one concurrency,
// each run with Keep.
func mergeResults(parts []loadResult) loadResult {
	var m loadResult
	var all []time.Duration
	for _, p := range parts {
		m.Conc = p.Conc
		m.Window += p.Window
		m.OK += p.OK
		m.Errs.add(p.Errs)
		for k, s := range p.Samples {
			if m.Samples[k] == "" {
				m.Samples[k] = s
			}
		}
		all = append(all, p.raw...)
		m.CPU += p.CPU
		m.MasterCPU += p.MasterCPU
		m.Procs = p.Procs
	}
	m.Lat = summarize(all)
	if m.Window > 0 {
		m.PerSec = float64(m.OK) / m.Window.Seconds()
	}
	return m
}

// cpuPerConn is the server's CPU time per connection served.
func (r loadResult) cpuPerConn() time.Duration {
	if r.OK == 0 || r.CPU <= 0 {
		return 0
	}
	return r.CPU / time.Duration(r.OK)
}

// loadOptions are the load generator's settings.
type loadOptions struct {
	Addr     netip.AddrPort // loopback only
	Conc     int
	Duration time.Duration
	// Timeout bounds each connection: connect plus reading to EOF.
	Timeout time.Duration
	// Engine is "net" (Go's net.Dialer and netpoller: the clients share
	// GOMAXPROCS threads, as most Go clients do) or "raw" (blocking socket
	// syscalls, one OS thread per client: fewer syscalls per connection,
	// but at high concurrency the kernel's scheduling of that many threads
	// spreads the latencies).
	Engine string
	// Pause, when set, is a client's rest between two connections: a paced
	// load instead of connecting again at once.
	Pause time.Duration
	// Keep: the result keeps every latency (raw), for mergeResults.
	Keep bool
	// Proxy, when 1 or 2, is the PROXY protocol version of a header each
	// client writes right after connecting, before it reads the greeting.
	Proxy int
	// Echo: the client speaks first, as with a server that echoes (waiterd
	// -echo, echo.go): it writes echoLine (after the header, in the same
	// write), half-closes, and wants the greeting and the line back.
	Echo bool
}

// request is what one client loop sends on each connection and the reply
// it wants.
type request struct {
	// write is written at once after connecting, in one write: a PROXY
	// header, a request line, or both; empty: nothing.
	write []byte
	// closeWrite: half-close after the write (a client that speaks first
	// and has said all it will).
	closeWrite bool
	// want is the whole reply, read to EOF.
	want []byte
}

// requestFor is client number i's request under o.
func requestFor(o loadOptions, i int) (request, error) {
	rq := request{want: []byte(greeting)}
	if o.Proxy != 0 {
		hdr, err := proxyHeader(o.Proxy, i, o.Addr)
		if err != nil {
			return rq, err
		}
		rq.write = hdr
	}
	if o.Echo {
		rq.write = append(rq.write, echoLine...)
		rq.closeWrite = true
		rq.want = []byte(echoReply)
	}
	return rq, nil
}

// client makes one connection: connect, (write the header and the request
// line, half-close,) read to EOF, check, close.
type client func() error

// runLoad runs Conc clients, each connecting, reading the greeting to EOF,
// closing and starting over, for Duration. Only connections that end inside
// the window count; the ones still open at its end are finished (each is
// bounded by Timeout) and dropped, so the whole call takes at most
// Duration+Timeout.
func runLoad(ctx context.Context, o loadOptions) (loadResult, error) {
	if !o.Addr.Addr().IsLoopback() {
		return loadResult{}, fmt.Errorf("load: %s is not a loopback address", o.Addr)
	}
	if o.Conc < 1 || o.Duration <= 0 || o.Timeout <= 0 {
		return loadResult{}, fmt.Errorf("load: bad settings: %d clients, %s, timeout %s", o.Conc, o.Duration, o.Timeout)
	}
	var mk func(rq request) client
	switch o.Engine {
	case "net", "":
		mk = func(rq request) client { return netClient(o.Addr, o.Timeout, rq) }
	case "raw":
		mk = func(rq request) client { return rawClient(o.Addr, o.Timeout, rq) }
	default:
		return loadResult{}, fmt.Errorf("load: unknown engine %q (want raw or net)", o.Engine)
	}
	// Built once per client loop: what a connection costs the generator is
	// the write, not the encoding.
	rqs := make([]request, o.Conc)
	for i := range rqs {
		var err error
		if rqs[i], err = requestFor(o, i); err != nil {
			return loadResult{}, fmt.Errorf("load: %w", err)
		}
	}
	type part struct {
		lat     []time.Duration
		errs    errCounts
		samples [numErrKinds]string
	}
	parts := make([]part, o.Conc)
	start := time.Now()
	end := start.Add(o.Duration)
	var wg sync.WaitGroup
	for i := range parts {
		wg.Add(1)
		go func(p *part, rq request) {
			defer wg.Done()
			once := mk(rq)
			p.lat = make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				err := once()
				t1 := time.Now()
				if t1.After(end) {
					return // ended outside the window
				}
				if err == nil {
					p.lat = append(p.lat, t1.Sub(t0))
					if o.Pause > 0 {
						time.Sleep(o.Pause)
					}
					continue
				}
				k := classify(err)
				p.errs[k]++
				if p.samples[k] == "" {
					p.samples[k] = err.Error()
				}
				// A dead or refusing server would otherwise be hammered in
				// a tight loop; this keeps the error counts meaningful.
				time.Sleep(time.Millisecond)
			}
		}(&parts[i], rqs[i])
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return loadResult{}, err
	}
	r := loadResult{Conc: o.Conc, Window: o.Duration}
	var all []time.Duration
	for _, p := range parts {
		all = append(all, p.lat...)
		r.Errs.add(p.errs)
		for k, s := range p.samples {
			if r.Samples[k] == "" {
				r.Samples[k] = s
			}
		}
	}
	r.OK = len(all)
	r.Lat = summarize(all)
	if o.Keep {
		r.raw = all
	}
	r.PerSec = float64(r.OK) / o.Duration.Seconds()
	return r, nil
}

// checkReply compares what was read to EOF with the reply wanted (the
// greeting, or the greeting and the echoed line).
func checkReply(b, want []byte) error {
	if !bytes.Equal(b, want) {
		if len(b) > 32 {
			b = b[:32]
		}
		return fmt.Errorf("%w: %q", errWrongReply, b)
	}
	return nil
}

// rawClient connects with blocking syscalls: socket, connect, (write,
// shutdown,) read, read, close, and nothing else, so that the generator
// takes as little of the machine's CPU from the server as it can.
// SO_SNDTIMEO bounds connect and the write, SO_RCVTIMEO each read.
// rq.write, when not empty, is written at once after connecting.
func rawClient(addr netip.AddrPort, timeout time.Duration, rq request) client {
	sa := &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	buf := make([]byte, 64)
	return func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		defer unix.Close(fd)
		deadline := time.Now().Add(timeout)
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		err = unix.Connect(fd, sa)
		if err == unix.EINTR {
			// With a timeout set, a signal interrupts connect instead of
			// restarting it (signal(7)); the handshake goes on: wait for it.
			err = waitConnected(fd, deadline)
		}
		if err != nil {
			return os.NewSyscallError("connect", err)
		}
		for w := 0; w < len(rq.write); {
			m, err := unix.Write(fd, rq.write[w:])
			if err == unix.EINTR && time.Now().Before(deadline) {
				continue
			}
			if err != nil {
				return os.NewSyscallError("write", err)
			}
			w += m
		}
		if rq.closeWrite {
			if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
				return os.NewSyscallError("shutdown", err)
			}
		}
		n := 0
		for {
			if n == len(buf) {
				return checkReply(buf, rq.want) // far longer than the reply
			}
			m, err := unix.Read(fd, buf[n:])
			if err == unix.EINTR && time.Now().Before(deadline) {
				continue
			}
			if err != nil {
				return os.NewSyscallError("read", err)
			}
			if m == 0 {
				return checkReply(buf[:n], rq.want)
			}
			n += m
		}
	}
}

func waitConnected(fd int, deadline time.Time) error {
	for {
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms <= 0 {
			return unix.ETIMEDOUT
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.ETIMEDOUT
		}
		soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soerr != 0 {
			return unix.Errno(soerr)
		}
		return nil
	}
}

// netClient connects the ordinary Go way; rq.write, when not empty, is
// written at once after connecting.
func netClient(addr netip.AddrPort, timeout time.Duration, rq request) client {
	ta := net.TCPAddrFromAddrPort(addr)
	d := net.Dialer{Timeout: timeout}
	buf := make([]byte, 64)
	return func() error {
		deadline := time.Now().Add(timeout)
		c, err := d.Dial("tcp", ta.String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(deadline)
		if len(rq.write) > 0 {
			if _, err := c.Write(rq.write); err != nil {
				return err
			}
		}
		if rq.closeWrite {
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				return err
			}
		}
		n := 0
		for {
			if n == len(buf) {
				return checkReply(buf, rq.want)
			}
			m, err := c.Read(buf[n:])
			n += m
			if errors.Is(err, io.EOF) {
				return checkReply(buf[:n], rq.want)
			}
			if err != nil {
				return err
			}
		}
	}
}
