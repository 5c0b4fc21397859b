// Command exclient is the end-to-end suite's client for the examples (kvd,
// tlsecho, httpd): it connects, sends -send (Go escapes: \n, \r\n), closes
// its side, reads the reply to EOF and prints it. With -ca, -cert and -key
// it speaks TLS with a client certificate. The container has no netcat and
// no openssl, so this is the suite's whole client.
//
//	exclient -addr 127.0.0.1:7070 -send 'SET k v\nGET k\nQUIT\n'
//	exclient -addr 127.0.0.1:7443 -ca ca.pem -cert alice.pem -key alice.key -send 'ping\n'
//	exclient -mkcerts DIR   writes a CA, a server certificate for 127.0.0.1,
//	                        alice's client certificate and mallory's (from
//	                        another CA), ECDSA P-256, as PEM files
//
// It exits 0 when the reply was read to EOF within -timeout, 1 otherwise
// (the error on stderr, after what was read on stdout).
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:7070", "host:port")
	send := flag.String("send", "", "what to send, with Go escapes (\\n)")
	timeout := flag.Duration("timeout", 10*time.Second, "for the whole exchange")
	ca := flag.String("ca", "", "TLS: the CA that signed the server's certificate")
	cert := flag.String("cert", "", "TLS: the client certificate")
	key := flag.String("key", "", "TLS: its key")
	mkcerts := flag.String("mkcerts", "", "write test certificates into this directory and exit")
	flag.Parse()
	if *mkcerts != "" {
		if err := makeCerts(*mkcerts); err != nil {
			fmt.Fprintln(os.Stderr, "exclient:", err)
			os.Exit(1)
		}
		return
	}
	msg, err := strconv.Unquote(`"` + *send + `"`)
	if err != nil {
		fmt.Fprintf(os.Stderr, "exclient: -send %q: %v\n", *send, err)
		os.Exit(2)
	}
	if err := exchange(*addr, msg, *timeout, *ca, *cert, *key); err != nil {
		fmt.Fprintln(os.Stderr, "exclient:", err)
		os.Exit(1)
	}
}

func exchange(addr, msg string, timeout time.Duration, ca, cert, key string) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	closeWrite := c.(*net.TCPConn).CloseWrite
	var rw io.ReadWriter = c
	if ca != "" {
		cfg, err := clientTLS(ca, cert, key)
		if err != nil {
			return err
		}
		host, _, _ := net.SplitHostPort(addr)
		cfg.ServerName = host
		tc := tls.Client(c, cfg)
		if err := tc.Handshake(); err != nil {
			return err
		}
		rw, closeWrite = tc, tc.CloseWrite
	}
	_, werr := io.WriteString(rw, msg)
	if werr == nil {
		werr = closeWrite()
	}
	// Read even when the write failed: a server that refused us (a TLS
	// alert, after a TLS 1.3 handshake the client saw succeed) said why
	// before it closed, and that is the error to show.
	if _, err := io.Copy(os.Stdout, rw); err != nil {
		return err
	}
	return werr
}

func clientTLS(ca, cert, key string) (*tls.Config, error) {
	pemCA, err := os.ReadFile(ca)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemCA) {
		return nil, fmt.Errorf("%s: no certificate", ca)
	}
	cfg := &tls.Config{RootCAs: roots}
	if cert != "" {
		kp, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, err
		}
		// Sent whichever CAs the server asks for: mallory's must reach
		// the server to be refused there.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp, nil }
	}
	return cfg, nil
}

type issued struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func makeCerts(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	serial := int64(0)
	issue := func(name string, tmpl *x509.Certificate, parent *issued) (*issued, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		serial++
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano() + serial)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(7*24*time.Hour)
		signer, signerKey := tmpl, key
		if parent != nil {
			signer, signerKey = parent.cert, parent.key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
		if err != nil {
			return nil, err
		}
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
			return nil, err
		}
		// Readable by all: the suite's client runs from a read-only share;
		// the server's copy is made 0600 where it is installed.
		if err := os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o644); err != nil {
			return nil, err
		}
		c, err := x509.ParseCertificate(der)
		return &issued{c, key}, err
	}
	caTmpl := func(cn string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	}
	leaf := func(cn string, usage x509.ExtKeyUsage, ips ...net.IP) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips}
	}
	ca, err := issue("ca", caTmpl("e2e CA"), nil)
	if err != nil {
		return err
	}
	other, err := issue("other-ca", caTmpl("another CA"), nil)
	if err != nil {
		return err
	}
	for _, l := range []struct {
		name   string
		tmpl   *x509.Certificate
		parent *issued
	}{
		{"server", leaf("tlsecho", x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1)), ca},
		{"alice", leaf("alice", x509.ExtKeyUsageClientAuth), ca},
		{"mallory", leaf("mallory", x509.ExtKeyUsageClientAuth), other},
	} {
		if _, err := issue(l.name, l.tmpl, l.parent); err != nil {
			return errors.Join(fmt.Errorf("%s", l.name), err)
		}
	}
	return nil
}
