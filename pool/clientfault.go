package pool

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"syscall"
)

// clientErrnos are what the kernel reports on a connection that the peer or
// the network broke.
var clientErrnos = []syscall.Errno{
	syscall.ECONNRESET,   // the peer reset (or closed with unread data)
	syscall.EPIPE,        // a write after the peer reset
	syscall.ECONNABORTED, // aborted before or during accept
	syscall.ETIMEDOUT,    // retransmissions or keepalives went unanswered
	syscall.EHOSTUNREACH, // the route to the peer went away
	syscall.ENETUNREACH,
}

// clientFault reports whether err, returned by a client connection's I/O
// (or by on_process after such I/O), was caused by the client or the network
// and not by the server: the client went away (EOF, a reset, a broken pipe),
// the network failed, client_timeout or another deadline expired, the
// connection was closed under the hook, or the peer spoke bad TLS (junk
// where a record belongs, an alert it sent, a record we had to answer with
// an alert). It sees through wrapping: *net.OpError, *os.SyscallError,
// *hooks.TLSError, fmt.Errorf's %w.
//
// It judges the error, not the connection: ECONNRESET from a backend that
// on_process talks to looks the same as one from the client. A context's
// cancellation or deadline is never the client's (it is the server's own
// timer or shutdown), nor is a certificate of the client that failed
// verification (a wrong ssl_ca_file would make every client fail that way,
// which must stay visible), nor is a TLS internal error.
func clientFault(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, net.ErrClosed) {
		return true
	}
	for _, e := range clientErrnos {
		if errors.Is(err, e) {
			return true
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// context.DeadlineExceeded is a net.Error with Timeout(): decide
		// before the test below.
		return false
	}
	var cve *tls.CertificateVerificationError
	if errors.As(err, &cve) {
		return false
	}
	if peerTLS(err) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// peerTLS reports whether err is a TLS error the peer caused.
func peerTLS(err error) bool {
	// A record header that is not TLS: "first record does not look like a
	// TLS handshake" (plain text, HTTP, a port scanner), an SSLv2 hello, a
	// wrong version, an oversized record.
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return true
	}
	var rhp *tls.RecordHeaderError
	if errors.As(err, &rhp) {
		return true
	}
	// An alert (QUIC transports return this exported type).
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return ae != alertInternalError
	}
	// Over TCP, crypto/tls reports an alert as a *net.OpError whose Err is
	// its unexported alert type: "remote error" for one the peer sent,
	// "local error" for one we sent because of what the peer sent (a bad
	// record MAC, an unexpected message, a decode error, ...).
	var oe *net.OpError
	for e := err; errors.As(e, &oe); e = oe.Err {
		if oe.Op != "remote error" && oe.Op != "local error" {
			continue
		}
		if code, ok := tlsAlert(oe.Err); ok {
			// An internal error is ours, whoever reports it.
			return code != alertInternalError
		}
	}
	return false
}

// alertInternalError is TLS's internal_error alert (RFC 8446 6.2).
const alertInternalError = 80

var tlsAlertType = reflect.TypeOf(tls.AlertError(0))

// tlsAlert returns the code of crypto/tls's unexported alert type, which has
// the same underlying type as the exported tls.AlertError.
func tlsAlert(err error) (uint8, bool) {
	if err == nil {
		return 0, false
	}
	t := reflect.TypeOf(err)
	if t.PkgPath() != tlsAlertType.PkgPath() || t.Name() != "alert" || t.Kind() != reflect.Uint8 {
		return 0, false
	}
	return uint8(reflect.ValueOf(err).Uint()), true
}
