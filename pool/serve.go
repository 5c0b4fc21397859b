package pool

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/activation"
	"github.com/waiter-go/waiter/config"
	"github.com/waiter-go/waiter/hooks"
	"github.com/waiter-go/waiter/internal/hookrun"
)

// fdConn makes a net.Conn of a connected socket fd and closes fd. net.FileConn
// works on a duplicate, which it puts in the netpoller.
func fdConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "client")
	c, err := net.FileConn(f)
	f.Close()
	return c, err
}

// idleConn applies client_timeout: each Read and Write may wait at most d,
// so a client that sends nothing, or reads nothing, frees its worker.
//
// d is 0 during a TLS handshake, which handshake_timeout bounds as a whole:
// a deadline renewed on each Read would let a client that trickles a byte
// at a time hold the worker, and one that sends nothing hold it for
// client_timeout instead.
type idleConn struct {
	net.Conn
	d time.Duration
}

func (c *idleConn) Read(b []byte) (int, error) {
	if c.d > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(c.d))
	}
	return c.Conn.Read(b)
}

func (c *idleConn) Write(b []byte) (int, error) {
	if c.d > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(c.d))
	}
	return c.Conn.Write(b)
}

// Unwrap returns the connection under the deadlines.
func (c *idleConn) Unwrap() net.Conn { return c.Conn }

// accepted runs on_accept_ok: the one call site, in whichever process
// accepted the client.
func (s *Server) accepted(c net.Conn) { s.hk.AcceptOK(c) }

// closeClient runs on_close and closes the client: the one call site, after
// on_process and after on_maxforked alike.
func (s *Server) closeClient(c net.Conn) {
	s.hk.Close(c)
	c.Close()
	s.client.Store(nil)
}

// serve runs one client through the seed's hook order: (on_accept_ok),
// TLS handshake, on_process, on_close. It returns whether the worker goes
// on serving and whether the client counts as failed.
//
// What ends a worker is on_process returning ErrStopWorker, an error marked
// with hooks.Fatal, or a panic. Anything else is the client's failure: an
// I/O error the client caused (a reset, EOF, a broken pipe, an expired
// client_timeout) is logged at debug, any other error at warning (one line
// a second at most for a flood), and the worker serves the next client. A
// client that resets must not cost a process.
func (w *worker) serve(c net.Conn, runAcceptOK bool) (more, failed bool) {
	s := w.s
	w.slot.setPeer(addrPort(c.RemoteAddr())) // counted by others from here (fromSource)
	var idle *idleConn
	if w.o.ClientTimeout > 0 {
		idle = &idleConn{Conn: c} // under the tls.Conn, so hooks still see a *tls.Conn
		c = idle
	}
	w.conn.Store(&connBox{c})
	defer w.conn.Store(nil)
	if w.tls != nil {
		tc := tls.Server(c, w.tls)
		c.SetDeadline(time.Now().Add(w.o.HandshakeTimeout.D()))
		if err := tc.Handshake(); err != nil {
			te := &hooks.TLSError{Peer: c.RemoteAddr(), Err: err}
			w.warnf("tls", c, "waiter: %v", te)
			s.hk.SSLError(te)
			c.Close()
			return true, true
		}
		c.SetDeadline(time.Time{})
		c = tc
	}
	if w.o.MaxPerSource > 0 {
		// After the handshake, so that on_source_limited can tell a TLS
		// client why in words it can read.
		if a := addrPort(c.RemoteAddr()); a.IsValid() {
			// Unmapped: a dual-stack socket gives IPv4 clients as
			// ::ffff:a.b.c.d, and the scoreboard keeps them unmapped.
			if n := w.sb.fromSource(a.Addr().Unmap()); n > w.o.MaxPerSource {
				w.warnf("source", c, "waiter: %s has %d other clients being served or arriving (max_per_source %d): closing this one", a.Addr().Unmap(), n-1, w.o.MaxPerSource)
				s.hk.SourceLimited(c)
				s.closeClient(c)
				return true, true
			}
		}
	}
	if idle != nil {
		idle.d = w.o.ClientTimeout.D()
	}
	s.client.Store(&connBox{c})
	if runAcceptOK {
		s.accepted(c)
	}
	err := s.hk.Process(w.cctx, c)
	s.closeClient(c)
	if err == nil {
		return true, false
	}
	var pe *hookrun.PanicError
	switch {
	case errors.Is(err, hooks.ErrStopWorker):
		w.log.Debug("waiter: on_process asked to stop after this client")
		return false, false
	case errors.As(err, &pe):
		// Logged with its stack by the runner. The process's state may be
		// broken: this worker ends.
		return false, true
	case errors.Is(err, hooks.ErrFatal):
		w.log.WithFields(logrus.Fields{"PEER": peer(c), "HOOK": "on_process"}).Errorf("waiter: on_process: %v: the worker ends", err)
		return false, true
	case clientFault(err):
		w.log.WithFields(logrus.Fields{"PEER": peer(c), "HOOK": "on_process"}).Debugf("waiter: client: %v", err)
		return true, true
	default:
		w.warnf("on_process", c, "waiter: on_process: %v", err)
		return true, true
	}
}

// warnf logs a warning about one client, at most one line a second of each
// kind across the pool (the scoreboard keeps the pace for every process):
// a flood of bad clients gives a line a second with a count.
func (w *worker) warnf(kind string, c net.Conn, format string, a ...any) {
	k := 0
	switch kind {
	case "on_process":
		k = 1
	case "proxy":
		k = 2
	case "source":
		k = 3
	}
	ok, held := w.sb.allowWarn(k, monotonic())
	if !ok {
		return
	}
	l := w.log.WithField("PEER", peer(c))
	if kind == "on_process" {
		l = l.WithField("HOOK", "on_process")
	}
	msg := fmt.Sprintf(format, a...)
	if held > 0 {
		// Counted by kind, pool-wide: the others need not share this
		// line's reason.
		msg += fmt.Sprintf(" (and %d more %s warnings since the last line)", held, map[int]string{0: "TLS", 1: "on_process", 2: "PROXY", 3: "max_per_source"}[k])
	}
	l.Warn(msg)
}

func peer(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// addrPort is a TCP peer's address for the scoreboard; invalid for others.
func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	return netip.AddrPort{}
}

// masterTLS reads and checks the TLS files for a generation of workers: the
// master's job, at start and on each reload, so that a broken rotation is
// refused before any worker sees it. It returns the config (for the
// in-process worker) and the files as JSON (for worker processes, which get
// them in a sealed memfd rather than reading files that may have changed).
func masterTLS(o config.Options) (*tls.Config, []byte, []string, error) {
	if !o.SSL {
		return nil, nil, nil, nil
	}
	p, err := activation.ReadTLSFiles(o)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, warns, err := activation.TLSConfigFromPEM(o, p)
	if err != nil {
		return nil, nil, nil, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("pool: TLS for the workers: %w", err)
	}
	return cfg, b, warns, nil
}

// tlsFromPEM is a worker process's TLS config, from what the master checked.
func tlsFromPEM(o config.Options, p activation.TLSPEM) (*tls.Config, error) {
	if !o.SSL {
		return nil, nil
	}
	cfg, _, err := activation.TLSConfigFromPEM(o, p)
	return cfg, err
}

// maxProxyHeader bounds the header read: v1 is at most 107 bytes, and a
// v2 header's TLVs from the balancers in use are well under this.
const maxProxyHeader = 1536

var (
	sigV1 = []byte("PROXY ")
	sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// readProxy reads the PROXY protocol header (v1 or v2) that a balancer
// sends before anything else, in the serving process (never the master's
// accept loop), within proxy_timeout, and returns the client's address it
// carries (nil for a LOCAL header: the balancer's own health check) and
// the bytes that came after the header in the same reads (the client's
// first bytes: the caller's conn returns them first). A connection from a
// source not in proxy_from, and one without a valid header, are refused.
// sa is the address accept(2) returned (nil: it asks getpeername).
//
// It reads on the raw fd, on this worker's own thread: one read when the
// header is in (the listener's TCP_DEFER_ACCEPT makes that the rule), a
// poll and more reads when it comes in pieces; go-proxyproto parses it.
func (w *worker) readProxy(fd int, sa net.Addr) (from net.Addr, rest []byte, err error) {
	src := addrPort(sa)
	if !src.IsValid() {
		psa, err := unix.Getpeername(fd)
		if err != nil {
			return nil, nil, fmt.Errorf("PROXY protocol: %w", err)
		}
		src = addrPort(activation.SockaddrToAddr(psa))
	}
	// A dual-stack socket's IPv4 clients come mapped (::ffff:a.b.c.d):
	// matched and named as the IPv4 addresses they are.
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	if len(w.proxyFrom) > 0 {
		ok := false
		for _, p := range w.proxyFrom {
			if src.IsValid() && p.Contains(src.Addr()) {
				ok = true
				break
			}
		}
		if !ok {
			return nil, nil, fmt.Errorf("PROXY protocol: %s is not in proxy_from", src)
		}
	}
	if w.proxyBuf == nil {
		w.proxyBuf = make([]byte, maxProxyHeader)
		w.proxyRd = bufio.NewReaderSize(&w.proxyHdr, maxProxyHeader)
	}
	buf := w.proxyBuf
	var deadline time.Time
	have := 0
	for {
		n, _, err := unix.Recvfrom(fd, buf[have:], unix.MSG_DONTWAIT) // the fd blocks: accept4 leaves it so
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
		case err != nil:
			return nil, nil, fmt.Errorf("PROXY protocol: reading the header from %s: %w", src, err)
		case n == 0:
			return nil, nil, fmt.Errorf("PROXY protocol: %s closed before its header", src)
		default:
			have += n
			size, complete, err := proxyHeaderSize(buf[:have])
			if err != nil {
				return nil, nil, fmt.Errorf("PROXY protocol: a bad header from %s: %v", src, err)
			}
			if complete {
				w.proxyHdr.Reset(buf[:size])
				w.proxyRd.Reset(&w.proxyHdr)
				h, err := proxyproto.Read(w.proxyRd)
				if err != nil {
					return nil, nil, fmt.Errorf("PROXY protocol: a bad header from %s: %v", src, err)
				}
				if have > size {
					rest = bytes.Clone(buf[size:have]) // buf is the next client's
				}
				if h.Command.IsLocal() || h.SourceAddr == nil {
					return nil, rest, nil
				}
				return h.SourceAddr, rest, nil
			}
			if have == len(buf) {
				return nil, nil, fmt.Errorf("PROXY protocol: a header from %s longer than %d bytes", src, maxProxyHeader)
			}
			continue // read until EAGAIN before polling
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(w.o.ProxyTimeout.D())
		}
		left := time.Until(deadline)
		if left <= 0 {
			if have > 0 {
				return nil, nil, fmt.Errorf("PROXY protocol: no whole header from %s within %s (proxy_timeout): %d bytes of one came", src, w.o.ProxyTimeout, have)
			}
			return nil, nil, fmt.Errorf("PROXY protocol: no header from %s within %s (proxy_timeout)", src, w.o.ProxyTimeout)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, int((left+time.Millisecond-1)/time.Millisecond)); err != nil && err != unix.EINTR {
			return nil, nil, fmt.Errorf("PROXY protocol: %s: %w", src, err)
		}
	}
}

// deferAccept keeps the listeners' TCP_DEFER_ACCEPT in step with
// defer_accept and proxy_protocol (at the start and at each reload). A
// balancer always speaks first, so the kernel can hold a connection until
// its header is in:
// the worker that accepts it then reads the header at once, instead of
// looking too early and sleeping in poll until it comes (a sleep and a
// wake-up per client: a third of plain prefork's rate, measured), and a
// connection that never sends one costs no worker for its first second.
// One second, the least the kernel counts, not proxy_timeout: held
// connections fill the SYN queue, and the wait is for a packet already on
// its way. It turns the option off again only where it, or the master
// before it (a socket from the fd store), set it: a socket from a socket
// unit may have it from DeferAcceptSec=.
func (s *Server) deferAccept(o config.Options) {
	on := o.ProxyProtocol || o.DeferAccept
	if !on && !s.deferred {
		return
	}
	d := time.Duration(0)
	if on {
		d = time.Second
	}
	for _, sk := range s.sockets {
		if err := sk.DeferAccept(d); err != nil {
			s.log.Warnf("waiter: %v (clients are served, each worker waiting for the first bytes)", err)
		}
	}
	s.deferred = on
}

// proxyHeaderSize says how long the header at the start of b is, once b
// holds all of it; an error when b cannot start one.
func proxyHeaderSize(b []byte) (size int, complete bool, err error) {
	switch {
	case bytes.HasPrefix(b, sigV2):
		if len(b) < 16 {
			return 0, false, nil
		}
		size = 16 + int(binary.BigEndian.Uint16(b[14:16]))
		if size > maxProxyHeader {
			return 0, false, fmt.Errorf("a v2 header of %d bytes (at most %d)", size, maxProxyHeader)
		}
		return size, len(b) >= size, nil
	case bytes.HasPrefix(b, sigV1):
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			if i == 0 || b[i-1] != '\r' {
				return 0, false, fmt.Errorf("a v1 header ends in a bare LF, not CRLF: %q", b[:i+1])
			}
			return i + 1, true, nil
		}
		if len(b) >= 107 {
			return 0, false, fmt.Errorf("a v1 header without its CRLF in 107 bytes")
		}
		return 0, false, nil
	case bytes.HasPrefix(sigV2, b), bytes.HasPrefix(sigV1, b):
		return 0, false, nil // the start of a signature: wait
	}
	return 0, false, fmt.Errorf("no PROXY header (the client spoke first: %q)", b[:min(len(b), 16)])
}
