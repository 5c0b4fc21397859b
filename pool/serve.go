package pool

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/sirupsen/logrus"

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
	w.slot.setPeer(addrPort(c.RemoteAddr()))
	if w.o.ProxyProtocol {
		pc, err := w.proxyHeader(c)
		if err != nil {
			w.warnf("proxy", c, "waiter: %v: closed", err)
			c.Close()
			return true, true
		}
		c = pc
		w.slot.setPeer(addrPort(c.RemoteAddr())) // the client's, for status and max_per_source
	}
	if w.o.MaxPerSource > 0 {
		if a := addrPort(c.RemoteAddr()); a.IsValid() {
			if n := w.sb.fromSource(a.Addr()); n > w.o.MaxPerSource {
				w.warnf("source", c, "waiter: %s has %d clients served (max_per_source %d): closing this one", a.Addr(), n-1, w.o.MaxPerSource)
				s.hk.SourceLimited(c)
				s.closeClient(c)
				return true, true
			}
		}
	}
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
		msg += fmt.Sprintf(" (and %d more like it since the last line)", held)
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

// proxyHeader reads the PROXY protocol header (v1 or v2) that a balancer
// sends before anything else, in the serving process (never the master's
// accept loop), within proxy_timeout. The returned conn's RemoteAddr is
// the client's. A connection from a source not in proxy_from, and one
// without a valid header, are refused.
func (w *worker) proxyHeader(c net.Conn) (net.Conn, error) {
	from := addrPort(c.RemoteAddr())
	if len(w.proxyFrom) > 0 {
		ok := false
		for _, p := range w.proxyFrom {
			if from.IsValid() && p.Contains(from.Addr()) {
				ok = true
				break
			}
		}
		if !ok {
			return nil, fmt.Errorf("PROXY protocol: %s is not in proxy_from", peer(c))
		}
	}
	pc := proxyproto.NewConn(c, proxyproto.SetReadHeaderTimeout(w.o.ProxyTimeout.D()), proxyproto.WithPolicy(proxyproto.REQUIRE))
	// A zero-length read makes the library read the header now and say
	// what was wrong with it; the stream itself is untouched.
	if _, err := pc.Read(nil); err != nil {
		if errors.Is(err, proxyproto.ErrNoProxyProtocol) {
			return nil, fmt.Errorf("PROXY protocol: no header from %s within %s (proxy_timeout)", peer(c), w.o.ProxyTimeout)
		}
		return nil, fmt.Errorf("PROXY protocol: a bad header from %s: %v", peer(c), err)
	}
	return pc, nil
}
