// Command tlsecho is a TLS line-echo service that requires client
// certificates, built on waiter.App: it greets each client with the common
// name of its certificate ("hello alice"), then echoes each line back until
// the client closes its side.
//
// TLS is waiter's: ssl is on and ssl_verify_mode is 2 (require a client
// certificate and verify it against ssl_ca_file) unless the file or flags
// say otherwise; ssl_cert_file, ssl_key_file and ssl_ca_file default to
// /etc/tlsecho/tlsecho.pem, tlsecho.key and clients-ca.pem.
// The handshake runs in the worker, bounded by handshake_timeout; a client
// without a certificate from that CA is refused there and never reaches
// this code. A reload (SIGHUP) re-reads the certificates.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"time"

	"github.com/waiter-go/waiter"
	"github.com/waiter-go/waiter/config"
)

// settings are tlsecho's own keys.
type settings struct {
	// Greeting comes before the client's name.
	Greeting string `yaml:"greeting"`
}

func main() {
	opts := waiter.DefaultOptions()
	opts.Port, opts.Prefork, opts.Maxfork = 7443, 2, 16
	// The files' defaults are where the package's admin puts them; the
	// configuration file or flags may name others.
	opts.SSL, opts.SSLVerifyMode = true, 2
	opts.SSLCertFile = "/etc/tlsecho/tlsecho.pem"
	opts.SSLKeyFile = "/etc/tlsecho/tlsecho.key"
	opts.SSLCAFile = "/etc/tlsecho/clients-ca.pem"
	app := &waiter.App[settings]{
		Options:  opts,
		Defaults: settings{Greeting: "hello"},
		Check: func(s *settings) error {
			if s.Greeting == "" || strings.ContainsAny(s.Greeting, "\r\n") {
				return &config.FieldError{Key: "greeting", Value: s.Greeting, Reason: "want one line of text"}
			}
			return nil
		},
		Hooks: waiter.Hooks{OnProcess: echo},
	}
	app.Main()
}

// echo is OnProcess: the greeting with the client certificate's common
// name, then the client's lines back. When the worker is told to stop (a
// stop, a reload), an idle session is told BYE and ends.
func echo(ctx context.Context, c net.Conn) error {
	cn, ok := clientName(c)
	if !ok {
		// Only with ssl_verify_mode below 2 (a configuration that does
		// not suit this service), or ssl off.
		_, err := io.WriteString(c, "ERR a client certificate is required\n")
		return err
	}
	if _, err := io.WriteString(c, waiter.Settings[settings](ctx).Greeting+" "+cn+"\n"); err != nil {
		return err
	}
	defer context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })()
	r := bufio.NewReader(c)
	for {
		// A line longer than the buffer is echoed in pieces: a client
		// cannot make the worker hold more than 4 KiB.
		chunk, err := r.ReadSlice('\n')
		if len(chunk) > 0 {
			if _, werr := c.Write(chunk); werr != nil {
				return werr
			}
		}
		switch {
		case err == nil, err == bufio.ErrBufferFull:
		case ctx.Err() != nil:
			_, err := io.WriteString(c, "BYE server stopping\n")
			return err
		case err == io.EOF:
			return nil
		default:
			return err
		}
	}
}

// clientName is the common name of the client's verified certificate.
func clientName(c net.Conn) (string, bool) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return "", false
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return "", false
	}
	return st.PeerCertificates[0].Subject.CommonName, true
}
