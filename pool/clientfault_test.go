package pool

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/waiter-go/waiter/hooks"
)

// tcpPair returns the two ends of a real TCP connection on 127.0.0.1.
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { c.Close(); r.c.Close() })
	return r.c.(*net.TCPConn), c.(*net.TCPConn)
}

// reset makes the kernel send a RST: close with SO_LINGER 0.
func reset(t *testing.T, c *net.TCPConn) {
	t.Helper()
	if err := c.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// readErr reads from c until an error (a few seconds at most).
func readErr(t *testing.T, c net.Conn) error {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 512)
	for {
		if _, err := c.Read(buf); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("no error from the peer within 5 s")
			}
			return err
		}
	}
}

func wantFault(t *testing.T, what string, err error, want bool) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	if got := clientFault(err); got != want {
		t.Errorf("%s: clientFault(%T %q) = %v, want %v", what, err, err, got, want)
	}
}

// Errors made for real on real sockets.
func TestClientFaultRealTCP(t *testing.T) {
	t.Run("reset: ECONNRESET on read, EPIPE on write", func(t *testing.T) {
		srv, cl := tcpPair(t)
		reset(t, cl)
		err := readErr(t, srv)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("want ECONNRESET from a reset peer, have %v", err)
		}
		wantFault(t, "read after a reset", err, true)
		// The reset was reported; the next write finds the pipe broken.
		_, err = srv.Write([]byte("hello"))
		if !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("want EPIPE writing after a reset, have %v", err)
		}
		wantFault(t, "write after a reset", err, true)
	})
	t.Run("reset: a write first", func(t *testing.T) {
		srv, cl := tcpPair(t)
		reset(t, cl)
		time.Sleep(50 * time.Millisecond) // let the RST arrive
		var err error
		for i := 0; i < 100 && err == nil; i++ {
			_, err = srv.Write([]byte("hello"))
		}
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("want ECONNRESET or EPIPE writing to a reset peer, have %v", err)
		}
		wantFault(t, "write to a reset peer", err, true)
	})
	t.Run("EOF", func(t *testing.T) {
		srv, cl := tcpPair(t)
		cl.Close()
		err := readErr(t, srv)
		if err != io.EOF {
			t.Fatalf("want io.EOF, have %v", err)
		}
		wantFault(t, "read after the peer closed", err, true)
	})
	t.Run("unexpected EOF", func(t *testing.T) {
		srv, cl := tcpPair(t)
		cl.Write([]byte("abc"))
		cl.Close()
		_, err := io.ReadFull(srv, make([]byte, 10))
		if err != io.ErrUnexpectedEOF {
			t.Fatalf("want io.ErrUnexpectedEOF, have %v", err)
		}
		wantFault(t, "a short message", err, true)
	})
	t.Run("deadline", func(t *testing.T) {
		srv, _ := tcpPair(t)
		srv.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		_, err := srv.Read(make([]byte, 1))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("want os.ErrDeadlineExceeded, have %v", err)
		}
		wantFault(t, "an expired read deadline (client_timeout)", err, true)
		srv.SetWriteDeadline(time.Now().Add(-time.Second))
		_, err = srv.Write([]byte("x"))
		wantFault(t, "an expired write deadline", err, true)
	})
	t.Run("closed under the hook", func(t *testing.T) {
		srv, _ := tcpPair(t)
		srv.Close()
		_, err := srv.Read(make([]byte, 1))
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("want net.ErrClosed, have %v", err)
		}
		wantFault(t, "a read on a closed connection", err, true)
	})
}

// selfSigned returns a server certificate for 127.0.0.1.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TLS errors made for real: a TLS server fed plain text, a client that
// refuses the server's certificate, a record that does not decrypt.
func TestClientFaultRealTLS(t *testing.T) {
	cfg := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
	handshake := func(srv net.Conn) error {
		srv.SetDeadline(time.Now().Add(5 * time.Second))
		return tls.Server(srv, cfg).Handshake()
	}
	t.Run("plain text", func(t *testing.T) {
		srv, cl := tcpPair(t)
		go cl.Write([]byte("GET / HTTP/1.0\r\nHost: x\r\n\r\n"))
		err := handshake(srv)
		var rh tls.RecordHeaderError
		if !errors.As(err, &rh) || rh.Msg != "first record does not look like a TLS handshake" {
			t.Fatalf("want a RecordHeaderError, have %T %v", err, err)
		}
		wantFault(t, "plain text to a TLS server", err, true)
		wantFault(t, "the same as on_ssl_error sees it", &hooks.TLSError{Peer: cl.LocalAddr(), Err: err}, true)
		wantFault(t, "the same wrapped", fmt.Errorf("on_process: %w", err), true)
	})
	t.Run("an SSLv2 hello", func(t *testing.T) {
		srv, cl := tcpPair(t)
		go cl.Write([]byte{0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15})
		wantFault(t, "an SSLv2 hello", handshake(srv), true)
	})
	t.Run("the client refuses our certificate", func(t *testing.T) {
		srv, cl := tcpPair(t)
		go func() {
			c := tls.Client(cl, &tls.Config{ServerName: "127.0.0.1"}) // no CA: unknown authority
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Handshake()
		}()
		err := handshake(srv)
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "remote error" {
			t.Fatalf("want a remote error (an alert from the client), have %T %v", err, err)
		}
		// Not a tls.AlertError over TCP: crypto/tls uses its unexported
		// alert type there.
		var ae tls.AlertError
		if errors.As(err, &ae) {
			t.Logf("crypto/tls now reports a received alert as tls.AlertError: %v", err)
		}
		wantFault(t, "an alert from the client", err, true)
	})
	t.Run("a record that does not decrypt", func(t *testing.T) {
		srv, cl := tcpPair(t)
		done := make(chan error, 1)
		go func() {
			c := tls.Client(cl, &tls.Config{InsecureSkipVerify: true})
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := c.Handshake(); err != nil {
				done <- err
				return
			}
			// Application data of junk, under the TLS layer.
			rec := append([]byte{0x17, 0x03, 0x03, 0x00, 0x40}, make([]byte, 0x40)...)
			_, err := cl.Write(rec)
			done <- err
		}()
		srv.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Server(srv, cfg)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		_, err := tc.Read(make([]byte, 100))
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "local error" {
			t.Fatalf("want a local error (the alert we sent), have %T %v", err, err)
		}
		wantFault(t, "junk in place of a record", err, true)
	})
}

type timeoutErr struct{ timeout bool }

func (e timeoutErr) Error() string   { return fmt.Sprintf("timeout=%v", e.timeout) }
func (e timeoutErr) Timeout() bool   { return e.timeout }
func (e timeoutErr) Temporary() bool { return false }

// Synthetic errors, wrapped the ways the standard library and hooks wrap
// them, and errors that must not count.
func TestClientFaultTable(t *testing.T) {
	sys := func(op string, errno syscall.Errno) error {
		return &net.OpError{Op: op, Net: "tcp", Err: &os.SyscallError{Syscall: op, Err: errno}}
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"EOF", io.EOF, true},
		{"unexpected EOF", io.ErrUnexpectedEOF, true},
		{"wrapped EOF", fmt.Errorf("reading the request: %w", io.EOF), true},
		{"ECONNRESET", sys("read", syscall.ECONNRESET), true},
		{"EPIPE", sys("write", syscall.EPIPE), true},
		{"ECONNABORTED", sys("accept", syscall.ECONNABORTED), true},
		{"ETIMEDOUT", sys("read", syscall.ETIMEDOUT), true},
		{"EHOSTUNREACH", sys("write", syscall.EHOSTUNREACH), true},
		{"ENETUNREACH", sys("write", syscall.ENETUNREACH), true},
		{"bare errno", syscall.ECONNRESET, true},
		{"syscall error alone", os.NewSyscallError("writev", syscall.EPIPE), true},
		{"twice wrapped", fmt.Errorf("on_process: %w", fmt.Errorf("send: %w", sys("write", syscall.EPIPE))), true},
		{"deadline", &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, true},
		{"closed", &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}, true},
		{"a net.Error timeout", fmt.Errorf("x: %w", timeoutErr{true}), true},
		{"a net.Error, no timeout", timeoutErr{false}, false},
		{"record header", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, true},
		{"record header pointer", &tls.RecordHeaderError{Msg: "oversized record received with length 20000"}, true},
		{"alert", tls.AlertError(42), true}, // bad_certificate
		{"wrapped alert", fmt.Errorf("handshake: %w", tls.AlertError(10)), true},
		{"internal error alert", tls.AlertError(alertInternalError), false},
		{"TLSError", &hooks.TLSError{Err: tls.RecordHeaderError{Msg: "x"}}, true},
		{"TLSError with EOF", &hooks.TLSError{Err: io.EOF}, true},
		// Not the client's.
		{"nil", nil, false},
		{"db down", errors.New("db down"), false},
		{"wrapped db down", fmt.Errorf("on_process: %w", errors.New("db down")), false},
		{"formatted, not wrapped", fmt.Errorf("read: %v", io.EOF), false},
		{"canceled", context.Canceled, false},
		{"wrapped canceled", fmt.Errorf("query: %w", context.Canceled), false},
		{"context deadline", context.DeadlineExceeded, false}, // a net.Error with Timeout()!
		{"wrapped context deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), false},
		{"ENOSPC", &os.PathError{Op: "write", Path: "/var/log/x", Err: syscall.ENOSPC}, false},
		{"EACCES", &os.PathError{Op: "open", Path: "/etc/x", Err: syscall.EACCES}, false},
		{"EMFILE", sys("accept", syscall.EMFILE), false},
		{"ECONNREFUSED (dialing a backend)", sys("dial", syscall.ECONNREFUSED), false},
		{"fatal", hooks.ErrFatal, false},
		{"stop worker", hooks.ErrStopWorker, false},
		{"certificate verification", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, false},
		{"some OpError", &net.OpError{Op: "remote error", Err: errors.New("not tls")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := clientFault(tc.err); got != tc.want {
				t.Fatalf("clientFault(%T %v) = %v, want %v", tc.err, tc.err, got, tc.want)
			}
		})
	}
}
