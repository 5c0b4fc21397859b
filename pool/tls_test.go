package pool_test

// TLS (issue 6): every ssl_* option proven against a real server process,
// with certificates made here by crypto/x509.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/waiter-go/waiter/config"
	"github.com/waiter-go/waiter/hooks"
	"github.com/waiter-go/waiter/pool"
)

// tlsPKI is a test CA with a server certificate for 127.0.0.1 in files, and
// client certificates: one from the CA, one from a CA the server does not
// know.
type tlsPKI struct {
	t      *testing.T
	dir    string
	caFile string
	cert   string // the server's certificate file
	key    string // and its key file (mode 0600)
	roots  *x509.CertPool
	client tls.Certificate // CN=client, from the CA
	wrong  tls.Certificate // CN=intruder, from another CA
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial atomic.Int64
}

func newTLSPKI(t *testing.T) *tlsPKI {
	t.Helper()
	p := &tlsPKI{t: t, dir: t.TempDir()}
	p.ca, p.caKey = tlsNewCA(t, "waiter test CA", &p.serial)
	p.caFile = filepath.Join(p.dir, "ca.pem")
	tlsWrite(t, p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.ca.Raw}), 0o644)
	p.roots = x509.NewCertPool()
	p.roots.AddCert(p.ca)
	p.cert, p.key = filepath.Join(p.dir, "server.pem"), filepath.Join(p.dir, "server.key")
	p.writeServer("server-1")
	p.client = p.issueClient("client", p.ca, p.caKey)
	otherCA, otherKey := tlsNewCA(t, "wrong CA", &p.serial)
	p.wrong = p.issueClient("intruder", otherCA, otherKey)
	return p
}

func tlsNewCA(t *testing.T, cn string, serial *atomic.Int64) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func (p *tlsPKI) issue(cn string, usage x509.ExtKeyUsage, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (der []byte, key *ecdsa.PrivateKey) {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial.Add(1)), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	return der, key
}

func (p *tlsPKI) issueClient(cn string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) tls.Certificate {
	der, key := p.issue(cn, x509.ExtKeyUsageClientAuth, ca, caKey)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// writeServer issues a server certificate named cn and replaces the server's
// files with it, each by a rename, as a careful rotation does.
func (p *tlsPKI) writeServer(cn string) {
	p.t.Helper()
	der, key := p.issue(cn, x509.ExtKeyUsageServerAuth, p.ca, p.caKey)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	tlsWrite(p.t, p.key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	tlsWrite(p.t, p.cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func tlsWrite(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// opts are the scenario's options with TLS on and this PKI's files.
func (p *tlsPKI) opts(mode string, mut func(*config.Options)) config.Options {
	return opts(func(o *config.Options) {
		o.SSL = true
		o.SSLCertFile, o.SSLKeyFile = p.cert, p.key
		switch mode {
		case "nofork":
			o.Nofork = true
		case "prefork":
			o.Prefork, o.Maxfork = 2, 2
		case "forking":
			o.Prefork, o.Spares, o.Maxfork = 0, 2, 16
		default:
			p.t.Fatalf("mode %q", mode)
		}
		if mut != nil {
			mut(o)
		}
	})
}

// client returns a client config that trusts the test CA and presents
// cert when asked (none when nil). GetClientCertificate sends the certificate
// whatever CAs the server names, so the wrong one reaches the server too.
func (p *tlsPKI) clientConfig(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: p.roots, ServerName: "127.0.0.1"}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return cfg
}

// tlsTalk sends one command line over TLS and reads the reply to EOF. A
// refusal may show only when reading: in TLS 1.3 the client's handshake
// ends before the server has checked the client's certificate.
func tlsTalk(addr, cmd string, cfg *tls.Config) (string, tls.ConnectionState, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", tls.ConnectionState{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return "", tls.ConnectionState{}, err
	}
	st := tc.ConnectionState()
	if _, err := io.WriteString(tc, cmd+"\n"); err != nil {
		return "", st, err
	}
	b, err := io.ReadAll(tc)
	return string(b), st, err
}

func mustTLSTalk(t *testing.T, addr, cmd string, cfg *tls.Config) (string, tls.ConnectionState) {
	t.Helper()
	s, st, err := tlsTalk(addr, cmd, cfg)
	if err != nil {
		t.Fatalf("%s over TLS: %v", cmd, err)
	}
	return s, st
}

func serverCN(st tls.ConnectionState) string {
	if len(st.PeerCertificates) == 0 {
		return ""
	}
	return st.PeerCertificates[0].Subject.CommonName
}

var tlsModes = []string{"nofork", "prefork", "forking"}

// A handshake and hello world in each process model; the hooks see TLS in
// use and no client certificate.
func TestTLSHello(t *testing.T) {
	pk := newTLSPKI(t)
	for _, mode := range tlsModes {
		t.Run(mode, func(t *testing.T) {
			p := start(t, pk.opts(mode, nil))
			have, st := mustTLSTalk(t, p.addr, "hello", pk.clientConfig(nil))
			if have != "hello world\n" {
				t.Fatalf("want hello world, have %q", have)
			}
			if st.Version != tls.VersionTLS13 || serverCN(st) != "server-1" {
				t.Fatalf("want TLS 1.3 with server-1's certificate, have version %#x, %q", st.Version, serverCN(st))
			}
			if have, _ := mustTLSTalk(t, p.addr, "subject", pk.clientConfig(nil)); have != "tls=true subject=\"\"\n" {
				t.Fatalf("subject: want tls=true and none, have %q", have)
			}
			// And plaintext is not served on the TLS port.
			if s, err := talk(p.addr, "hello"); err == nil && strings.Contains(s, "hello world") {
				t.Fatalf("plaintext client served on the TLS port: %q", s)
			}
			eventually(t, 5*time.Second, "on_ssl_error for the plaintext client", func() bool { return p.count("on_ssl_error") == 1 })
		})
	}
}

// A plaintext client on the TLS port: on_ssl_error, a warning naming the
// peer, and the next client is served.
func TestTLSPlaintextClient(t *testing.T) {
	pk := newTLSPKI(t)
	p := start(t, pk.opts("nofork", nil))
	c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	local := c.LocalAddr().String()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "hello\n")
	b, _ := io.ReadAll(c) // the server closes; an alert record at most
	if bytes.Contains(b, []byte("hello world")) {
		t.Fatalf("a plaintext client was served: %q", b)
	}
	eventually(t, 5*time.Second, "on_ssl_error", func() bool { return p.count("on_ssl_error") == 1 })
	if have, _ := mustTLSTalk(t, p.addr, "hello", pk.clientConfig(nil)); have != "hello world\n" {
		t.Fatalf("the next client: want hello world, have %q", have)
	}
	// stderr is copied by another goroutine than the one that saw the event.
	eventually(t, 5*time.Second, "a warning with PEER="+local+" and the reason", func() bool {
		for _, l := range strings.Split(p.stderr.String(), "\n") {
			if strings.Contains(l, "tls handshake with "+local) {
				return strings.Contains(l, "level=warning") && strings.Contains(l, `PEER="`+local+`"`) &&
					strings.Contains(l, "does not look like a TLS handshake")
			}
		}
		return false
	})
	if n := p.count("on_ssl_error"); n != 1 {
		t.Fatalf("on_ssl_error: want 1, have %d", n)
	}
}

// The hook's argument, which the scenario does not record: a *hooks.TLSError
// with the reason and the peer. The server runs in the test process.
func TestTLSHookArgumentInProcess(t *testing.T) {
	pk := newTLSPKI(t)
	o := pk.opts("nofork", func(o *config.Options) {
		o.Listen = "127.0.0.1:0"
		o.SSLVerifyMode, o.SSLCAFile = 1, pk.caFile
	})
	addrs := make(chan string, 1)
	sslErrs := make(chan error, 4)
	seen := make(chan string, 4)
	var srv *pool.Server
	srv = pool.New(o, hooks.Set{
		OnListenOK: func() { addrs <- srv.Listeners()[0].Addr.String() },
		OnSSLError: func(err error) { sslErrs <- err },
		OnProcess: func(_ context.Context, c net.Conn) error {
			seen <- fmt.Sprintf("ssl=%v subject=%s", srv.SSLInUse(), srv.PeerCertificateSubject())
			_, err := io.WriteString(c, "ok\n")
			return err
		},
	})
	var logBuf syncBuffer
	srv.Logger = logrus.New()
	srv.Logger.Out = &logBuf
	srv.Logger.Formatter = &logrus.TextFormatter{DisableColors: true}
	done := make(chan error, 1)
	go func() { done <- srv.Run() }()
	defer func() {
		srv.BreakMainLoop()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the in-process server did not stop")
		}
	}()
	var addr string
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatalf("Run returned %v:\n%s", err, logBuf.String())
	case <-time.After(10 * time.Second):
		t.Fatal("the in-process server did not listen")
	}

	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	local := c.LocalAddr().String()
	io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.ReadAll(c)
	c.Close()
	select {
	case err := <-sslErrs:
		var te *hooks.TLSError
		if !errors.As(err, &te) {
			t.Fatalf("on_ssl_error: want a *hooks.TLSError, have %T %v", err, err)
		}
		if te.Peer == nil || te.Peer.String() != local {
			t.Fatalf("on_ssl_error: want the peer %s, have %v", local, te.Peer)
		}
		if te.Err == nil || !strings.Contains(err.Error(), "does not look like a TLS handshake") || !strings.Contains(err.Error(), local) {
			t.Fatalf("on_ssl_error: want the reason and the peer in %q", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no on_ssl_error")
	}
	// on_process sees TLS, and the client's subject when it sent one.
	for _, tc := range []struct {
		cert *tls.Certificate
		want string
	}{{nil, "ssl=true subject="}, {&pk.client, "ssl=true subject=CN=client"}} {
		if s, _, err := tlsTalk(addr, "x", pk.clientConfig(tc.cert)); err != nil || s != "ok\n" {
			t.Fatalf("want ok, have %q, %v", s, err)
		}
		select {
		case have := <-seen:
			if have != tc.want {
				t.Fatalf("in on_process: want %q, have %q", tc.want, have)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("on_process did not run")
		}
	}
	if !strings.Contains(logBuf.String(), "level=warning") || !strings.Contains(logBuf.String(), `PEER="`+local+`"`) {
		t.Fatalf("want a warning with the peer %s:\n%s", local, logBuf.String())
	}
}

// Each ssl_verify_mode against a client with no certificate, one from
// another CA and one from the server's CA. The subject is what on_process
// sees (PeerCertificateSubject); a refused client is an on_ssl_error and
// the server goes on to the next.
func TestTLSVerifyModes(t *testing.T) {
	pk := newTLSPKI(t)
	const refused = "refused"
	for _, tc := range []struct {
		mode               int
		none, wrong, right string
	}{
		// 0: no certificate asked for, so none is seen, even the right one.
		{0, "", "", ""},
		// 1: verified if given; none is fine, the wrong one is refused.
		{1, "", refused, "CN=client"},
		// 2: required and verified.
		{2, refused, refused, "CN=client"},
	} {
		t.Run(fmt.Sprintf("mode %d", tc.mode), func(t *testing.T) {
			p := start(t, pk.opts("nofork", func(o *config.Options) { o.SSLVerifyMode, o.SSLCAFile = tc.mode, pk.caFile }))
			refusals := 0
			for _, c := range []struct {
				name string
				cert *tls.Certificate
				want string
			}{{"none", nil, tc.none}, {"wrong", &pk.wrong, tc.wrong}, {"right", &pk.client, tc.right}} {
				s, _, err := tlsTalk(p.addr, "subject", pk.clientConfig(c.cert))
				if c.want == refused {
					refusals++
					if err == nil {
						t.Fatalf("%s certificate: want refused, have %q", c.name, s)
					}
					eventually(t, 5*time.Second, "on_ssl_error for the "+c.name+" certificate", func() bool { return p.count("on_ssl_error") == refusals })
					continue
				}
				want := fmt.Sprintf("tls=true subject=%q\n", c.want)
				if err != nil || s != want {
					t.Fatalf("%s certificate: want %q, have %q, %v", c.name, want, s, err)
				}
			}
			if n := p.count("on_ssl_error"); n != refusals {
				t.Fatalf("on_ssl_error: want %d, have %d", refusals, n)
			}
		})
	}
}

// ssl_min_version: TLS 1.1 is refused by default and served when allowed;
// 1.3 refuses TLS 1.2.
func TestTLSMinVersion(t *testing.T) {
	pk := newTLSPKI(t)
	only := func(v uint16) *tls.Config {
		c := pk.clientConfig(nil)
		c.MinVersion, c.MaxVersion = v, v
		return c
	}
	for _, tc := range []struct {
		min    string // "" leaves the default
		client uint16
		ok     bool
	}{
		{"", tls.VersionTLS11, false},
		{"", tls.VersionTLS10, false},
		{"", tls.VersionTLS12, true},
		{"", tls.VersionTLS13, true},
		{"1.1", tls.VersionTLS11, true},
		{"1.1", tls.VersionTLS10, false},
		{"1.3", tls.VersionTLS12, false},
		{"1.3", tls.VersionTLS13, true},
	} {
		name := fmt.Sprintf("min %s client %s", cmp.Or(tc.min, "default"), tls.VersionName(tc.client))
		t.Run(name, func(t *testing.T) {
			p := start(t, pk.opts("nofork", func(o *config.Options) {
				if tc.min != "" {
					o.SSLMinVersion = tc.min
				}
			}))
			s, st, err := tlsTalk(p.addr, "hello", only(tc.client))
			if !tc.ok {
				if err == nil {
					t.Fatalf("want refused, have %q over %s", s, tls.VersionName(st.Version))
				}
				eventually(t, 5*time.Second, "on_ssl_error", func() bool { return p.count("on_ssl_error") == 1 })
				eventually(t, 5*time.Second, "the version named as the reason", func() bool {
					return strings.Contains(p.stderr.String(), "offered only unsupported versions")
				})
				return
			}
			if err != nil || s != "hello world\n" || st.Version != tc.client {
				t.Fatalf("want hello world over %s, have %q over %s, %v", tls.VersionName(tc.client), s, tls.VersionName(st.Version), err)
			}
		})
	}
}

// ssl_ciphers limits TLS 1.2 to the suites named; TLS 1.3 is unaffected.
func TestTLSCiphers(t *testing.T) {
	pk := newTLSPKI(t)
	tls12 := func(suites ...uint16) *tls.Config {
		c := pk.clientConfig(nil)
		c.MaxVersion, c.CipherSuites = tls.VersionTLS12, suites
		return c
	}
	p := start(t, pk.opts("nofork", func(o *config.Options) {
		o.SSLCiphers = []string{"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"}
	}))
	// Offered both: the one named is chosen, though Go prefers AES-128.
	s, st, err := tlsTalk(p.addr, "hello", tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384))
	if err != nil || s != "hello world\n" || st.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 {
		t.Fatalf("want hello world with AES-256, have %q with %s, %v", s, tls.CipherSuiteName(st.CipherSuite), err)
	}
	// Offered only one not named: refused.
	if s, _, err := tlsTalk(p.addr, "hello", tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)); err == nil {
		t.Fatalf("a suite not in ssl_ciphers: want refused, have %q", s)
	}
	eventually(t, 5*time.Second, "on_ssl_error", func() bool { return p.count("on_ssl_error") == 1 })
	// TLS 1.3 suites are not configurable and still served.
	if s, st := mustTLSTalk(t, p.addr, "hello", pk.clientConfig(nil)); s != "hello world\n" || st.Version != tls.VersionTLS13 {
		t.Fatalf("TLS 1.3: want hello world, have %q over %s", s, tls.VersionName(st.Version))
	}

	// The contrast: without ssl_ciphers the same client is served, with Go's
	// preferred AES-128.
	q := start(t, pk.opts("nofork", nil))
	s, st, err = tlsTalk(q.addr, "hello", tls12(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384))
	if err != nil || s != "hello world\n" || st.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 {
		t.Fatalf("default suites: want hello world with AES-128, have %q with %s, %v", s, tls.CipherSuiteName(st.CipherSuite), err)
	}
}

// stall opens a client that sends part (or none) of a handshake and then
// nothing.
func stall(t *testing.T, addr string, partial []byte) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if len(partial) > 0 {
		if _, err := c.Write(partial); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// closedByServer reports whether the server closed c within d.
func closedByServer(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// A client that never completes its handshake holds the one nofork server
// only for handshake_timeout, then is dropped with on_ssl_error and the next
// client is served.
func TestTLSHandshakeTimeoutNofork(t *testing.T) {
	pk := newTLSPKI(t)
	const hs = 300 * time.Millisecond
	for _, tc := range []struct {
		name    string
		partial []byte
	}{
		{"silent", nil},
		// The first bytes of a handshake record, then nothing.
		{"partial hello", []byte{0x16, 0x03, 0x01, 0x00}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, pk.opts("nofork", func(o *config.Options) { o.HandshakeTimeout = config.Duration(hs) }))
			// The server is up and the stalled client is the next it accepts.
			mustTLSTalk(t, p.addr, "hello", pk.clientConfig(nil))
			c := stall(t, p.addr, tc.partial)
			t0 := time.Now()
			have, _ := mustTLSTalk(t, p.addr, "hello", pk.clientConfig(nil))
			took := time.Since(t0)
			if have != "hello world\n" {
				t.Fatalf("the next client: want hello world, have %q", have)
			}
			// Behind the stalled client, and not much longer than the timeout.
			if took < hs-50*time.Millisecond || took > hs+2*time.Second {
				t.Fatalf("the next client was served after %s; want about handshake_timeout %s", took, hs)
			}
			if !closedByServer(c, 2*time.Second) {
				t.Fatal("the stalled client is still connected")
			}
			eventually(t, 5*time.Second, "on_ssl_error", func() bool { return p.count("on_ssl_error") == 1 })
			eventually(t, 5*time.Second, "the timeout logged", func() bool { return strings.Contains(p.stderr.String(), "i/o timeout") })
		})
	}
}

// With client_timeout longer than handshake_timeout, the handshake must still
// end at handshake_timeout.
func TestTLSHandshakeTimeoutWithClientTimeout(t *testing.T) {
	pk := newTLSPKI(t)
	const hs = 300 * time.Millisecond
	p := start(t, pk.opts("nofork", func(o *config.Options) {
		o.HandshakeTimeout = config.Duration(hs)
		o.ClientTimeout = config.Duration(5 * time.Second)
	}))
	mustTLSTalk(t, p.addr, "hello", pk.clientConfig(nil))
	c := stall(t, p.addr, nil)
	if !closedByServer(c, hs+2*time.Second) {
		t.Fatalf("the stalled client was not dropped after handshake_timeout %s", hs)
	}
	// And client_timeout still applies once the handshake is done.
	if have, _ := mustTLSTalk(t, p.addr, "hello", pk.clientConfig(nil)); have != "hello world\n" {
		t.Fatalf("want hello world, have %q", have)
	}
}

// In a pool the handshake is the worker's: a stalled client holds one worker
// (prefork) or one process (forking), never the master's accept loop, and
// others are served at once, long before handshake_timeout.
func TestTLSHandshakeStallHoldsOneWorker(t *testing.T) {
	pk := newTLSPKI(t)
	for _, mode := range []string{"prefork", "forking"} {
		t.Run(mode, func(t *testing.T) {
			p := start(t, pk.opts(mode, func(o *config.Options) { o.HandshakeTimeout = config.Duration(20 * time.Second) }))
			if mode == "prefork" {
				eventually(t, 10*time.Second, "2 workers", func() bool { return p.count("on_child_start") == 2 })
			}
			mustTLSTalk(t, p.addr, "hello", pk.clientConfig(nil))
			c := stall(t, p.addr, nil)
			if mode == "prefork" {
				// The stalled client and this one: both workers busy.
				eventually(t, 10*time.Second, "the stalled client taken by a worker", func() bool {
					s, _, err := tlsTalk(p.addr, "busy", pk.clientConfig(nil))
					return err == nil && strings.HasPrefix(s, "busy=2 all=2 ")
				})
			}
			for i := 0; i < 5; i++ {
				t0 := time.Now()
				if have, _ := mustTLSTalk(t, p.addr, "hello", pk.clientConfig(nil)); have != "hello world\n" {
					t.Fatalf("client %d: want hello world, have %q", i, have)
				}
				if took := time.Since(t0); took > 3*time.Second {
					t.Fatalf("client %d waited %s behind the stalled one", i, took)
				}
			}
			if n := p.count("on_ssl_error"); n != 0 {
				t.Fatalf("on_ssl_error before the stalled client gave up: %d", n)
			}
			c.Close()
			eventually(t, 5*time.Second, "on_ssl_error for the stalled client", func() bool { return p.count("on_ssl_error") == 1 })
		})
	}
}

// A certificate rotated on disk and announced with HUP is what the next
// client sees; a client in the middle of being served is not cut, and a
// broken rotation is refused with the running certificate kept.
func TestTLSReloadRotatesCertificate(t *testing.T) {
	for _, mode := range tlsModes {
		t.Run(mode, func(t *testing.T) {
			pk := newTLSPKI(t)
			p := start(t, pk.opts(mode, func(o *config.Options) { o.GracefulTimeout = config.Duration(30 * time.Second) }))
			cfg := pk.clientConfig(nil)
			if _, st := mustTLSTalk(t, p.addr, "hello", cfg); serverCN(st) != "server-1" {
				t.Fatalf("before: want server-1, have %q", serverCN(st))
			}
			// An established client, in on_process across the reload.
			old, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", p.addr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer old.Close()
			old.SetDeadline(time.Now().Add(60 * time.Second))
			io.WriteString(old, "reset\n")
			rd := make([]byte, 6)
			if _, err := io.ReadFull(old, rd); err != nil || string(rd) != "ready\n" {
				t.Fatalf("established client: have %q, %v", rd, err)
			}

			if mode == "prefork" {
				// Workers read the files when they start (see the forking
				// skip below): both must have done so before the rotation.
				eventually(t, 10*time.Second, "2 workers", func() bool { return p.count("on_child_start") == 2 })
			}

			pk.writeServer("server-2")
			p.signal(syscall.SIGHUP)
			switch mode {
			case "nofork":
				// The one in-process worker is busy with the old client: the
				// new generation waits for it (never two serving at once).
				eventually(t, 10*time.Second, "the reload begun", func() bool {
					return strings.Contains(p.stderr.String(), "reloading: starting generation 2")
				})
			case "prefork":
				// The new generation is ready and the old one's idle worker
				// gone; its other worker is busy with the old client.
				eventually(t, 20*time.Second, "the reload done", func() bool {
					return strings.Contains(p.stderr.String(), "reloaded: generation 2 serving") && p.count("on_child_exit") == 1
				})
			case "forking":
				// Once the new spares are ready the old ones get no client.
				eventually(t, 20*time.Second, "the reload done", func() bool {
					return strings.Contains(p.stderr.String(), "reloaded: generation 2 serving")
				})
			}
			// The old client is still served: the server writes after it
			// closes its side.
			if err := old.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			rest, err := io.ReadAll(old)
			if err != nil || string(rest) != "one\ntwo\n" {
				t.Fatalf("established client after the reload: want one, two; have %q, %v", rest, err)
			}
			if cn := serverCN(old.ConnectionState()); cn != "server-1" {
				t.Fatalf("established client: want server-1 still, have %q", cn)
			}
			for i := 0; i < 3; i++ {
				if have, st := mustTLSTalk(t, p.addr, "hello", cfg); have != "hello world\n" || serverCN(st) != "server-2" {
					t.Fatalf("after the reload, client %d: want hello world from server-2, have %q from %q", i, have, serverCN(st))
				}
			}

			// A broken rotation: HUP is refused and server-2 goes on.
			tlsWrite(t, pk.cert, []byte("half a certificate\n"), 0o644)
			p.signal(syscall.SIGHUP)
			eventually(t, 10*time.Second, "the refusal logged", func() bool {
				return strings.Contains(p.stderr.String(), `ssl_cert_file \"`+pk.cert+`\": no PEM CERTIFICATE`)
			})
			for i := 0; i < 3; i++ {
				if have, st := mustTLSTalk(t, p.addr, "hello", cfg); have != "hello world\n" || serverCN(st) != "server-2" {
					t.Fatalf("after a refused reload, client %d: want hello world from server-2, have %q from %q", i, have, serverCN(st))
				}
			}
			if n := p.count("on_ssl_error"); n != 0 {
				t.Fatalf("on_ssl_error: want none, have %d", n)
			}
		})
	}
}

// A missing, unreadable or mismatched cert or key stops the start with the
// file named; a key others can read is a warning, logged once by the master
// and not by every worker.
func TestTLSStartChecks(t *testing.T) {
	pk := newTLSPKI(t)
	other := newTLSPKI(t)
	missing := filepath.Join(pk.dir, "missing.pem")
	for _, tc := range []struct {
		name string
		mut  func(*config.Options)
		want string
	}{
		{"cert missing", func(o *config.Options) { o.SSLCertFile = missing }, `ssl_cert_file \"` + missing + `\": no such file or directory`},
		{"key missing", func(o *config.Options) { o.SSLKeyFile = missing }, `ssl_key_file \"` + missing + `\": no such file or directory`},
		{"key mismatched", func(o *config.Options) { o.SSLKeyFile = other.key }, `ssl_key_file \"` + other.key + `\": does not go with ssl_cert_file \"` + pk.cert + `\"`},
		{"key is the cert", func(o *config.Options) { o.SSLKeyFile = pk.cert }, `ssl_key_file \"` + pk.cert + `\": no PEM PRIVATE KEY`},
		{"verify without ca", func(o *config.Options) { o.SSLVerifyMode = 2 }, `ssl_verify_mode \"2\": needs ssl_ca_file`},
		{"unknown cipher", func(o *config.Options) { o.SSLCiphers = []string{"ECDHE-ECDSA-AES128-GCM-SHA256"} }, `ssl_ciphers \"ECDHE-ECDSA-AES128-GCM-SHA256\": unknown cipher suite`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, pk.opts("prefork", tc.mut))
			if code := p.wait(10 * time.Second); code != pool.ExitConfig {
				t.Fatalf("exit code: want %d, have %d", pool.ExitConfig, code)
			}
			log := p.stderr.String()
			if !strings.Contains(log, "not starting: activation: ") || !strings.Contains(log, tc.want) {
				t.Fatalf("want %s in the log:\n%s", tc.want, log)
			}
			if n := p.count("on_server_begin"); n != 0 {
				t.Fatalf("on_server_begin ran %d times before the refusal", n)
			}
		})
	}

	t.Run("key readable by others", func(t *testing.T) {
		if err := os.Chmod(pk.key, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(pk.key, 0o600)
		p := start(t, pk.opts("prefork", nil))
		eventually(t, 10*time.Second, "2 workers", func() bool { return p.count("on_child_start") == 2 })
		if have, _ := mustTLSTalk(t, p.addr, "hello", pk.clientConfig(nil)); have != "hello world\n" {
			t.Fatalf("want hello world, have %q", have)
		}
		warning := "ssl_key_file " + pk.key + " is readable by others (mode 0644)"
		eventually(t, 5*time.Second, "the warning logged", func() bool { return strings.Contains(p.stderr.String(), warning) })
		time.Sleep(200 * time.Millisecond) // time for a worker's copy to show, were there one
		log := p.stderr.String()
		if n := strings.Count(log, warning); n != 1 {
			t.Fatalf("want the warning once, have it %d times:\n%s", n, log)
		}
		if !strings.Contains(log, "level=warning msg=\"waiter: ssl_key_file "+pk.key) {
			t.Fatalf("want it at warning level:\n%s", log)
		}
	})
}

// TestTLSConfigOfTheProgram: Server.TLSConfig with a GetCertificate of the
// program's own serves TLS in every mode, and a rotated certificate is
// served at the next handshake without a reload.
func TestTLSConfigOfTheProgram(t *testing.T) {
	for _, mode := range tlsModes {
		t.Run(mode, func(t *testing.T) {
			pk := newTLSPKI(t)
			o := pk.opts(mode, nil)
			o.SSL, o.SSLCertFile, o.SSLKeyFile = false, "", ""
			p := start(t, o, "WAITERTEST_GETCERT="+pk.cert+":"+pk.key)
			cfg := pk.clientConfig(nil)
			if have, st := mustTLSTalk(t, p.addr, "subject", cfg); serverCN(st) != "server-1" || !strings.HasPrefix(have, "tls=true") {
				t.Fatalf("want server-1 and SSLInUse, have %q from %q", have, serverCN(st))
			}
			pk.writeServer("server-2")
			if _, st := mustTLSTalk(t, p.addr, "hello", cfg); serverCN(st) != "server-2" {
				t.Fatalf("after the rotation, no reload: want server-2, have %q", serverCN(st))
			}
		})
	}
}

// TestTLSJunkFloodIsRateLimited: 60 plaintext clients against TLS in every
// mode give a few warning lines with counts, not one a client, even in
// forking mode where each client has a process of its own.
func TestTLSJunkFloodIsRateLimited(t *testing.T) {
	for _, mode := range tlsModes {
		t.Run(mode, func(t *testing.T) {
			pk := newTLSPKI(t)
			p := start(t, pk.opts(mode, nil))
			t0 := time.Now()
			for i := 0; i < 60; i++ {
				c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
				io.ReadAll(c)
				c.Close()
			}
			eventually(t, 10*time.Second, "60 handshake failures", func() bool { return p.count("on_ssl_error") == 60 })
			secs := int(time.Since(t0).Seconds())
			lines := strings.Count(p.stderr.String(), "tls handshake with")
			t.Logf("%s: 60 junk clients in %ds, %d warning lines", mode, secs, lines)
			// One line a second at most, across every process.
			if lines < 1 || lines > secs+2 {
				t.Fatalf("%d warning lines for 60 junk clients in %ds, want at most one a second", lines, secs)
			}
		})
	}
}
