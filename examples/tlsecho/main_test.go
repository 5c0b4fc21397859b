package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/waiter-go/waiter/examples/internal/daemontest"
)

func TestMain(m *testing.M) { daemontest.Main(m) }

// cert is a certificate and its key, ECDSA P-256.
type cert struct {
	x509 *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

var serial int64

// issue makes a certificate for tmpl signed by parent (self-signed when
// parent is nil).
func issue(t *testing.T, tmpl *x509.Certificate, parent *cert) *cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.x509, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &cert{x509: c, key: key, der: der}
}

func newCA(t *testing.T, name string) *cert {
	return issue(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}, nil)
}

func newLeaf(t *testing.T, ca *cert, cn string, usage x509.ExtKeyUsage, ips ...net.IP) *cert {
	return issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: ips,
	}, ca)
}

// write writes c's certificate (and key, 0600) as PEM files; returns their
// paths.
func (c *cert) write(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.der}), 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := x509.MarshalECPrivateKey(c.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: k}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func (c *cert) tls() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.der}, PrivateKey: c.key, Leaf: c.x509}
}

// pki is the test's certificates: a CA, the server's certificate for
// 127.0.0.1, alice's client certificate from that CA, and mallory's from
// another CA.
type pki struct {
	ca, server, alice, mallory *cert
	dir, cfg                   string
}

func newPKI(t *testing.T) *pki {
	p := &pki{dir: t.TempDir()}
	p.ca = newCA(t, "tlsecho test CA")
	p.server = newLeaf(t, p.ca, "tlsecho", x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1))
	p.alice = newLeaf(t, p.ca, "alice", x509.ExtKeyUsageClientAuth)
	p.mallory = newLeaf(t, newCA(t, "another CA"), "mallory", x509.ExtKeyUsageClientAuth)
	caFile, _ := p.ca.write(t, p.dir, "ca")
	certFile, keyFile := p.server.write(t, p.dir, "server")
	p.cfg = filepath.Join(p.dir, "tlsecho.yaml")
	os.WriteFile(p.cfg, []byte("ssl_cert_file: "+certFile+"\nssl_key_file: "+keyFile+"\nssl_ca_file: "+caFile+"\n"), 0o644)
	return p
}

// dial connects as client (nil: with no certificate) and completes the
// handshake from the client's side.
func (p *pki) dial(t *testing.T, addr string, client *cert) (*tls.Conn, error) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.x509)
	cfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
	if client != nil {
		// Sent whichever CAs the server asks for (Certificates would send
		// mallory's to nobody but a server of its own CA).
		c := client.tls()
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	c := tls.Client(daemontest.Dial(t, addr), cfg)
	return c, c.Handshake()
}

// Alice is greeted by name and her lines come back; mallory (a certificate
// from another CA) and a client with none are refused in the handshake,
// logged, and the service goes on.
func TestClientCertificates(t *testing.T) {
	bin := daemontest.Build(t)
	p := newPKI(t)
	addr := daemontest.FreeAddr(t)
	d := daemontest.Start(t, bin, "-config", p.cfg, "-listen", addr)
	c, err := p.dial(t, addr, p.alice)
	if err != nil {
		t.Fatalf("alice's handshake: %v", err)
	}
	r := bufio.NewReader(c)
	if l, err := r.ReadString('\n'); l != "hello alice\n" {
		t.Fatalf("alice's greeting: %q %v", l, err)
	}
	long := strings.Repeat("x", 10000) + "\n"
	for _, line := range []string{"ping\n", "two words \n", long} {
		io.WriteString(c, line)
		if l, err := r.ReadString('\n'); l != line {
			t.Fatalf("echo of %q: %q %v", line[:min(len(line), 20)], l[:min(len(l), 20)], err)
		}
	}
	c.CloseWrite()
	if rest, err := io.ReadAll(r); len(rest) != 0 || err != nil {
		t.Fatalf("after alice closed her side: %q %v", rest, err)
	}

	for _, who := range []struct {
		name string
		cert *cert
		log  string
	}{{"mallory", p.mallory, "certificate signed by unknown authority"}, {"no certificate", nil, "client didn't provide a certificate"}} {
		// A worker logs one TLS failure a second at most.
		time.Sleep(1100 * time.Millisecond)
		c, err := p.dial(t, addr, who.cert)
		if err == nil {
			// TLS 1.3: the client's side of the handshake ends before the
			// server has checked its certificate; the refusal comes next.
			var b []byte
			b, err = io.ReadAll(c)
			if len(b) != 0 {
				t.Fatalf("%s was served: %q", who.name, b)
			}
		}
		if err == nil || !strings.Contains(err.Error(), "tls:") {
			t.Fatalf("%s: want a TLS refusal, have %v", who.name, err)
		}
		t.Logf("%s refused: %v", who.name, err)
		d.WaitLog(t, who.log, 5*time.Second)
	}
	// Still serving.
	c, err = p.dial(t, addr, p.alice)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := bufio.NewReader(c).ReadString('\n'); l != "hello alice\n" {
		t.Fatalf("after the refusals: %q %v", l, err)
	}
}

// TestRotateAndReload: new server certificate files and a new greeting are
// taken on SIGHUP by new clients; a session connected before it is told BYE
// when its worker retires, and a stop with an idle session ends at once.
func TestRotateAndReload(t *testing.T) {
	bin := daemontest.Build(t)
	p := newPKI(t)
	addr := daemontest.FreeAddr(t)
	d := daemontest.Start(t, bin, "-config", p.cfg, "-listen", addr, "-graceful-timeout", "20")
	old, err := p.dial(t, addr, p.alice)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(old)
	r.ReadString('\n')
	first := old.ConnectionState().PeerCertificates[0].SerialNumber

	rotated := newLeaf(t, p.ca, "tlsecho", x509.ExtKeyUsageServerAuth, net.IPv4(127, 0, 0, 1))
	rotated.write(t, p.dir, "server")
	cfg, _ := os.ReadFile(p.cfg)
	os.WriteFile(p.cfg, append(cfg, "greeting: welcome\n"...), 0o644)
	d.Signal(t, syscall.SIGHUP)
	if rest, err := io.ReadAll(r); string(rest) != "BYE server stopping\n" {
		t.Fatalf("the session from before the reload: %q %v", rest, err)
	}
	var greeting string
	var serialNow *big.Int
	if !daemontest.Eventually(10*time.Second, func() bool {
		c, err := p.dial(t, addr, p.alice)
		if err != nil {
			return false
		}
		defer c.Close()
		greeting, _ = bufio.NewReader(c).ReadString('\n')
		serialNow = c.ConnectionState().PeerCertificates[0].SerialNumber
		return greeting == "welcome alice\n"
	}) {
		t.Fatalf("after the reload: %q", greeting)
	}
	if serialNow.Cmp(rotated.x509.SerialNumber) != 0 || serialNow.Cmp(first) == 0 {
		t.Fatalf("server certificate serial %v after the rotation, want %v (was %v)", serialNow, rotated.x509.SerialNumber, first)
	}

	idle, err := p.dial(t, addr, p.alice)
	if err != nil {
		t.Fatal(err)
	}
	r = bufio.NewReader(idle)
	r.ReadString('\n')
	t0 := time.Now()
	d.Signal(t, syscall.SIGTERM)
	if rest, err := io.ReadAll(r); string(rest) != "BYE server stopping\n" {
		t.Fatalf("the idle session at the stop: %q %v", rest, err)
	}
	if err := d.Wait(t, 10*time.Second); err != nil || time.Since(t0) > 2*time.Second {
		t.Fatalf("stop: %v after %s", err, time.Since(t0))
	}
	t.Logf("stop with an idle session: %s", time.Since(t0).Round(time.Millisecond))
}

// -check refuses a bad greeting, naming file and line. It does not read
// the certificate files (waiter's -check reads none; a gap): a daemon
// started without them exits 1 at once, naming the default path.
func TestCheck(t *testing.T) {
	bin := daemontest.Build(t)
	p := newPKI(t)
	if out, code := daemontest.Run(t, bin, "-check", "-config", p.cfg); code != 0 {
		t.Fatalf("good config: %d %s", code, out)
	}
	cfg, _ := os.ReadFile(p.cfg)
	os.WriteFile(p.cfg, append(cfg, "greeting: \"\"\n"...), 0o644)
	if out, code := daemontest.Run(t, bin, "-check", "-config", p.cfg); code != 1 || !strings.Contains(out, `tlsecho.yaml:4: key "greeting"`) {
		t.Fatalf("empty greeting: want exit 1 naming tlsecho.yaml:4, have %d %s", code, out)
	}
	if out, code := daemontest.Run(t, bin, "-listen", daemontest.FreeAddr(t)); code != 1 || !strings.Contains(out, `/etc/tlsecho/tlsecho.pem`) {
		t.Fatalf("no certificates: want exit 1 naming the default ssl_cert_file, have %d %s", code, out)
	}
}
