package pool

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/waiter-go/waiter/activation"
	"github.com/waiter-go/waiter/hooks"
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
// TLS handshake, on_process, on_close. It returns whether the process should
// serve more clients (false when on_process returned an error) and whether
// the client counts as failed.
func (s *Server) serve(c net.Conn, runAcceptOK bool) (more, failed bool) {
	var idle *idleConn
	if s.Options.ClientTimeout > 0 {
		idle = &idleConn{Conn: c} // under the tls.Conn, so hooks still see a *tls.Conn
		c = idle
	}
	if cfg := s.tls.Load(); cfg != nil {
		tc := tls.Server(c, cfg)
		c.SetDeadline(time.Now().Add(s.Options.HandshakeTimeout.D()))
		if err := tc.Handshake(); err != nil {
			te := &hooks.TLSError{Peer: c.RemoteAddr(), Err: err}
			s.log.WithField("PEER", peer(c)).Warnf("waiter: %v", te)
			s.hk.SSLError(te)
			c.Close()
			return true, true
		}
		c.SetDeadline(time.Time{})
		c = tc
	}
	if idle != nil {
		idle.d = s.Options.ClientTimeout.D()
	}
	s.client.Store(&connBox{c})
	if runAcceptOK {
		s.accepted(c)
	}
	err := s.hk.Process(c)
	s.closeClient(c)
	if err == nil {
		return true, false
	}
	var pe *hooks.PanicError
	switch {
	case errors.Is(err, hooks.ErrStopWorker):
		s.log.Debug("waiter: on_process asked to stop after this client")
		return false, false
	case errors.As(err, &pe):
		// Logged with its stack by the runner; the server goes on.
		return false, true
	default:
		s.log.WithFields(logrus.Fields{"PEER": peer(c), "HOOK": "on_process"}).Warnf("waiter: on_process: %v", err)
		return false, true
	}
}

func peer(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// loadTLS reads the certificates (at start, and on reload in the master and
// at start in each worker), so a new client sees a rotated certificate.
// Warnings are logged by the process that serves alone or supervises: the
// master has logged them already for the options a worker starts with, and
// in forking mode a worker starts for every client.
func (s *Server) loadTLS() error {
	var p activation.TLSPEM
	var err error
	if s.child {
		p, err = readTLSFd(s.tlsFd, s.Options.SSL)
	} else {
		p, err = activation.ReadTLSFiles(s.Options)
	}
	if err != nil {
		return err
	}
	cfg, warns, err := activation.TLSConfigFromPEM(s.Options, p)
	if err != nil {
		return err
	}
	if !s.child {
		// Encoded once here, not for each worker started.
		b, err := json.Marshal(p)
		if err != nil {
			return fmt.Errorf("pool: TLS for the workers: %w", err)
		}
		s.tlsPEM = b
		for _, w := range warns {
			s.log.Warnf("waiter: %s", w)
		}
	}
	s.tls.Store(cfg)
	return nil
}
