package activation

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/waiter-go/waiter/config"
)

// The child role of TestTLSConfigUnreadable: TestMain lives in env_test.go,
// so the marker is checked in init, which runs before it.
func init() {
	if os.Getenv("ACTTEST_TLS_CHILD") == "" {
		return
	}
	var o config.Options
	o.SSL = true
	o.SSLCertFile = os.Getenv("ACTTEST_TLS_CERT")
	o.SSLKeyFile = os.Getenv("ACTTEST_TLS_KEY")
	_, _, err := TLSConfig(o)
	if err == nil {
		os.Stdout.WriteString("no error\n")
	} else {
		os.Stdout.WriteString(err.Error() + "\n")
	}
	os.Exit(0)
}

// tlsFiles is a CA and a server certificate signed by it, written as PEM.
type tlsFiles struct {
	dir, ca, cert, key string
}

// writePEM writes one PEM block to dir/name with mode 0600 and returns
// the path.
func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func keyDER(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// newTLSFiles writes a CA and a server certificate for 127.0.0.1 whose key
// is k (ECDSA P-256 when nil), valid from notBefore for a day.
func newTLSFiles(t *testing.T, k crypto.Signer, notBefore time.Time) tlsFiles {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: notBefore, NotAfter: notBefore.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	if k == nil {
		if k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "server"},
		NotBefore: notBefore, NotAfter: notBefore.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, k.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tlsFiles{
		dir:  dir,
		ca:   writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER),
		cert: writePEM(t, dir, "cert.pem", "CERTIFICATE", der),
		key:  writePEM(t, dir, "key.pem", "PRIVATE KEY", keyDER(t, k)),
	}
}

func (f tlsFiles) opts(mut func(*config.Options)) config.Options {
	o := config.Default()
	o.SSL = true
	o.SSLCertFile, o.SSLKeyFile = f.cert, f.key
	if mut != nil {
		mut(&o)
	}
	return o
}

func TestTLSConfigOff(t *testing.T) {
	cfg, warns, err := TLSConfig(config.Default())
	if cfg != nil || warns != nil || err != nil {
		t.Fatalf("ssl off: have %v, %q, %v; want nil, nil, nil", cfg, warns, err)
	}
	// Files set and ssl forgotten: plaintext where TLS was meant.
	o := config.Default()
	o.SSLCertFile, o.SSLKeyFile = "/c.pem", "/k.pem"
	cfg, warns, err = TLSConfig(o)
	if cfg != nil || err != nil || len(warns) != 1 || !strings.Contains(warns[0], "ssl is off: ssl_cert_file, ssl_key_file set") {
		t.Fatalf("ssl off with files: have %v, %q, %v; want a warning naming the options", cfg, warns, err)
	}
}

func TestTLSConfigSettings(t *testing.T) {
	f := newTLSFiles(t, nil, time.Now().Add(-time.Hour))
	for _, tc := range []struct {
		name       string
		mut        func(*config.Options)
		minVersion uint16
		auth       tls.ClientAuthType
		ciphers    []uint16
	}{
		// The defaults: TLS 1.2 and up, no client certificate, Go's suites.
		{"defaults", nil, tls.VersionTLS12, tls.NoClientCert, nil},
		{"min 1.0", func(o *config.Options) { o.SSLMinVersion = "1.0" }, tls.VersionTLS10, tls.NoClientCert, nil},
		{"min 1.1", func(o *config.Options) { o.SSLMinVersion = "1.1" }, tls.VersionTLS11, tls.NoClientCert, nil},
		{"min 1.3", func(o *config.Options) { o.SSLMinVersion = "1.3" }, tls.VersionTLS13, tls.NoClientCert, nil},
		// An empty version (options not normalized) is the default.
		{"min empty", func(o *config.Options) { o.SSLMinVersion = "" }, tls.VersionTLS12, tls.NoClientCert, nil},
		{"verify 1", func(o *config.Options) { o.SSLVerifyMode, o.SSLCAFile = 1, f.ca }, tls.VersionTLS12, tls.VerifyClientCertIfGiven, nil},
		{"verify 2", func(o *config.Options) { o.SSLVerifyMode, o.SSLCAFile = 2, f.ca }, tls.VersionTLS12, tls.RequireAndVerifyClientCert, nil},
		// IO::Socket::SSL's usual 3 (PEER | FAIL_IF_NO_PEER_CERT) requires too.
		{"verify 3", func(o *config.Options) { o.SSLVerifyMode, o.SSLCAFile = 3, f.ca }, tls.VersionTLS12, tls.RequireAndVerifyClientCert, nil},
		// Names as written in YAML, with stray blanks; the order is kept.
		{"ciphers", func(o *config.Options) {
			o.SSLCiphers = []string{" TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 ", ""}
		}, tls.VersionTLS12, tls.NoClientCert, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, warns, err := TLSConfig(f.opts(tc.mut))
			if err != nil {
				t.Fatal(err)
			}
			if len(warns) != 0 {
				t.Errorf("have warnings %q, want none", warns)
			}
			if len(cfg.Certificates) != 1 || cfg.Certificates[0].Leaf == nil || cfg.Certificates[0].Leaf.Subject.CommonName != "server" {
				t.Errorf("have certificates %v, want the server's", cfg.Certificates)
			}
			if cfg.MinVersion != tc.minVersion {
				t.Errorf("MinVersion: have %#x, want %#x", cfg.MinVersion, tc.minVersion)
			}
			if cfg.ClientAuth != tc.auth {
				t.Errorf("ClientAuth: have %v, want %v", cfg.ClientAuth, tc.auth)
			}
			if (cfg.ClientCAs != nil) != (tc.auth != tls.NoClientCert) {
				t.Errorf("ClientCAs: have %v, want a pool exactly when verifying", cfg.ClientCAs)
			}
			if !equalIDs(cfg.CipherSuites, tc.ciphers) {
				t.Errorf("CipherSuites: have %#x, want %#x", cfg.CipherSuites, tc.ciphers)
			}
		})
	}
}

func equalIDs(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTLSConfigErrors(t *testing.T) {
	f := newTLSFiles(t, nil, time.Now().Add(-time.Hour))
	other := newTLSFiles(t, nil, time.Now().Add(-time.Hour))
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaFiles := newTLSFiles(t, rsaKey, time.Now().Add(-time.Hour))
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not PEM at all\n"), 0o600)
	badDER := writePEM(t, dir, "bad-der.pem", "CERTIFICATE", []byte("not DER"))
	encrypted := filepath.Join(dir, "encrypted.pem")
	os.WriteFile(encrypted, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte("x")}), 0o600)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		mut  func(*config.Options)
		key  string // the option the error must name
		want string // and a part of its message (the value is checked too)
		is   error  // and what it must unwrap to, besides ErrTLS
	}{
		{"cert missing", func(o *config.Options) { o.SSLCertFile = missing }, "ssl_cert_file", "no such file", fs.ErrNotExist},
		{"key missing", func(o *config.Options) { o.SSLKeyFile = missing }, "ssl_key_file", "no such file", fs.ErrNotExist},
		{"ca missing", func(o *config.Options) { o.SSLCAFile = missing }, "ssl_ca_file", "no such file", fs.ErrNotExist},
		{"cert is a directory", func(o *config.Options) { o.SSLCertFile = dir }, "ssl_cert_file", "is a directory", nil},
		// A FIFO would block a plain open until a writer came.
		{"key is a fifo", func(o *config.Options) { o.SSLKeyFile = fifo }, "ssl_key_file", "not a regular file", nil},
		{"cert not PEM", func(o *config.Options) { o.SSLCertFile = garbage }, "ssl_cert_file", "no PEM CERTIFICATE", nil},
		{"cert not DER", func(o *config.Options) { o.SSLCertFile = badDER }, "ssl_cert_file", "the first certificate", nil},
		{"key not PEM", func(o *config.Options) { o.SSLKeyFile = garbage }, "ssl_key_file", "no PEM PRIVATE KEY", nil},
		{"files swapped", func(o *config.Options) { o.SSLCertFile, o.SSLKeyFile = f.key, f.cert }, "ssl_cert_file", "swapped", nil},
		{"key encrypted", func(o *config.Options) { o.SSLKeyFile = encrypted }, "ssl_key_file", "encrypted", nil},
		// The key of another certificate: named, with the certificate.
		{"key mismatched", func(o *config.Options) { o.SSLKeyFile = other.key }, "ssl_key_file", "does not go with ssl_cert_file " + `"` + f.cert + `"`, nil},
		{"ca not PEM", func(o *config.Options) { o.SSLCAFile, o.SSLVerifyMode = garbage, 1 }, "ssl_ca_file", "no PEM CERTIFICATE", nil},
		// Without a CA Go would trust the system roots for client certificates.
		{"verify without ca", func(o *config.Options) { o.SSLVerifyMode = 1 }, "ssl_verify_mode", "needs ssl_ca_file", nil},
		{"verify 2 without ca", func(o *config.Options) { o.SSLVerifyMode = 2 }, "ssl_verify_mode", "needs ssl_ca_file", nil},
		{"unknown cipher", func(o *config.Options) {
			o.SSLCiphers = []string{"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"}
		}, "ssl_ciphers", "unknown cipher suite: want Go's names", nil},
		{"openssl keyword", func(o *config.Options) { o.SSLCiphers = []string{"HIGH:!aNULL"} }, "ssl_ciphers", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", nil},
		// Only RSA suites for an ECDSA key, and the other way round.
		{"ciphers miss ecdsa key", func(o *config.Options) { o.SSLCiphers = []string{"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"} }, "ssl_ciphers", "no suite fits the ECDSA key", nil},
		{"ciphers miss rsa key", func(o *config.Options) {
			o.SSLCertFile, o.SSLKeyFile = rsaFiles.cert, rsaFiles.key
			o.SSLCiphers = []string{"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}
		}, "ssl_ciphers", "no suite fits the RSA key", nil},
		{"bad min version", func(o *config.Options) { o.SSLMinVersion = "1.4" }, "ssl_min_version", "want 1.0, 1.1, 1.2 or 1.3", nil},
		{"no cert file", func(o *config.Options) { o.SSLCertFile = "" }, "ssl_cert_file", "a file is required", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := f.opts(tc.mut)
			cfg, _, err := TLSConfig(o)
			if err == nil {
				t.Fatalf("have config %v, want an error naming %s", cfg, tc.key)
			}
			var se *TLSSettingError
			if !errors.As(err, &se) || se.Key != tc.key {
				t.Fatalf("have %v (%T), want a *TLSSettingError for %s", err, err, tc.key)
			}
			if !errors.Is(err, ErrTLS) {
				t.Errorf("have %v, want it to wrap ErrTLS", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("have %v, want it to wrap %v", err, tc.is)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "activation: "+tc.key+" ") || !strings.Contains(msg, tc.want) {
				t.Errorf("have %q, want %q and %q in it", msg, tc.key, tc.want)
			}
			if v := fileValue(o, tc.key); v != "" && !strings.Contains(msg, `"`+v+`"`) {
				t.Errorf("have %q, want the file %q named", msg, v)
			}
			// A path error is not repeated: the file is named once.
			if strings.Count(msg, missing) > 1 {
				t.Errorf("have %q, want %s named once", msg, missing)
			}
		})
	}
}

func fileValue(o config.Options, key string) string {
	switch key {
	case "ssl_cert_file":
		return o.SSLCertFile
	case "ssl_key_file":
		return o.SSLKeyFile
	case "ssl_ca_file":
		return o.SSLCAFile
	}
	return ""
}

func TestTLSConfigWarnings(t *testing.T) {
	f := newTLSFiles(t, nil, time.Now().Add(-time.Hour))
	expired := newTLSFiles(t, nil, time.Now().Add(-48*time.Hour))
	future := newTLSFiles(t, nil, time.Now().Add(time.Hour))
	for _, tc := range []struct {
		name    string
		keyMode os.FileMode
		mut     func(*config.Options)
		want    []string // a part of each warning, in order
	}{
		{"key 0600", 0o600, nil, nil},
		{"key 0400", 0o400, nil, nil},
		// Debian's ssl-cert group convention: group-readable is fine.
		{"key 0640", 0o640, nil, nil},
		{"key 0644", 0o644, nil, []string{"is readable by others (mode 0644)"}},
		{"key 0604", 0o604, nil, []string{"is readable by others (mode 0604)"}},
		// Whoever may write the key may replace it.
		{"key 0620", 0o620, nil, []string{"is writable by others (mode 0620)"}},
		{"key 0666", 0o666, nil, []string{"is writable by others (mode 0666)"}},
		{"expired", 0o600, func(o *config.Options) { o.SSLCertFile, o.SSLKeyFile = expired.cert, expired.key }, []string{"expired on"}},
		{"not yet valid", 0o600, func(o *config.Options) { o.SSLCertFile, o.SSLKeyFile = future.cert, future.key }, []string{"is not valid before"}},
		{"ca unused", 0o600, func(o *config.Options) { o.SSLCAFile = f.ca }, []string{"ssl_ca_file " + f.ca + " is not used"}},
		{"insecure cipher", 0o600, func(o *config.Options) {
			o.SSLCiphers = []string{"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"}
		}, []string{"TLS_ECDHE_ECDSA_WITH_RC4_128_SHA: insecure"}},
		{"tls 1.3 cipher", 0o600, func(o *config.Options) {
			o.SSLCiphers = []string{"TLS_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}
		}, []string{"TLS_AES_128_GCM_SHA256: TLS 1.3 suites are always on"}},
		{"only tls 1.3 ciphers", 0o600, func(o *config.Options) { o.SSLCiphers = []string{"TLS_AES_128_GCM_SHA256"} },
			[]string{"TLS 1.3 suites are always on", "Go's default TLS 1.2 suites are used"}},
		{"ciphers with min 1.3", 0o600, func(o *config.Options) {
			o.SSLMinVersion = "1.3"
			o.SSLCiphers = []string{"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}
		}, []string{"ssl_ciphers has no effect"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := f.opts(tc.mut)
			if err := os.Chmod(o.SSLKeyFile, tc.keyMode); err != nil {
				t.Fatal(err)
			}
			defer os.Chmod(o.SSLKeyFile, 0o600)
			cfg, warns, err := TLSConfig(o)
			if err != nil || cfg == nil {
				t.Fatalf("have %v, %v; want a config", cfg, err)
			}
			if len(warns) != len(tc.want) {
				t.Fatalf("have warnings %q, want %d: %q", warns, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(warns[i], w) {
					t.Errorf("warning %d: have %q, want %q in it", i, warns[i], w)
				}
			}
			if strings.HasPrefix(tc.name, "key 06") && len(tc.want) > 0 && !strings.Contains(warns[0], o.SSLKeyFile) {
				t.Errorf("have %q, want the key file named", warns[0])
			}
			if tc.name == "only tls 1.3 ciphers" && cfg.CipherSuites != nil {
				t.Errorf("CipherSuites: have %#x, want nil (Go's defaults)", cfg.CipherSuites)
			}
		})
	}
}

// TestTLSConfigUnreadable runs TLSConfig as an unprivileged user: root
// reads any file, so a key it may not read takes another uid.
func TestTLSConfigUnreadable(t *testing.T) {
	f := newTLSFiles(t, nil, time.Now().Add(-time.Hour))
	if os.Geteuid() != 0 {
		if err := os.Chmod(f.key, 0); err != nil {
			t.Fatal(err)
		}
		_, _, err := TLSConfig(f.opts(nil))
		if err == nil || !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), `ssl_key_file "`+f.key+`": permission denied`) {
			t.Fatalf("have %v, want ssl_key_file %q: permission denied", err, f.key)
		}
		return
	}
	// As root: the test binary and the files go where uid 65534 can reach
	// them, all but the key, which stays root's with mode 0600.
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	bin := filepath.Join(dir, "tls.test")
	if err := copyFile(os.Args[0], bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := copyFile(f.cert, cert, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(f.key, key, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "ACTTEST_TLS_CHILD=1", "ACTTEST_TLS_CERT="+cert, "ACTTEST_TLS_KEY="+key)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("cannot run the test binary as uid 65534: %v: %s", err, out)
	}
	want := `activation: ssl_key_file "` + key + `": permission denied`
	if strings.TrimSpace(string(out)) != want {
		t.Fatalf("have %q, want %q", out, want)
	}
}

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// What ReadTLSFiles read is what TLSConfigFromPEM serves, whatever the files
// hold later: a worker builds its settings from the master's bytes. The
// bytes survive JSON, as they would on their way to a worker.
func TestTLSConfigFromPEM(t *testing.T) {
	f := newTLSFiles(t, nil, time.Now().Add(-time.Hour))
	o := f.opts(func(o *config.Options) { o.SSLCAFile, o.SSLVerifyMode = f.ca, 2 })
	if err := os.Chmod(f.key, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := ReadTLSFiles(o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var q TLSPEM
	if err := json.Unmarshal(b, &q); err != nil {
		t.Fatal(err)
	}
	// Rotated (and the CA gone) after the read.
	next := newTLSFiles(t, nil, time.Now().Add(-time.Hour))
	for _, mv := range [][2]string{{next.cert, f.cert}, {next.key, f.key}} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(f.ca)
	cfg, warns, err := TLSConfigFromPEM(o, q)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(next.cert)
	if bytes.Equal(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cfg.Certificates[0].Certificate[0]}), want) {
		t.Fatal("have the rotated certificate, want the one read")
	}
	if !bytes.Equal(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cfg.Certificates[0].Certificate[0]}), p.Cert) {
		t.Fatal("have another certificate than the one read")
	}
	if cfg.ClientCAs == nil || cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("have ClientCAs %v, ClientAuth %v; want the CA read, required", cfg.ClientCAs, cfg.ClientAuth)
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "readable by others (mode 0644)") {
		t.Fatalf("have warnings %q, want the key's mode as read", warns)
	}
	// With ssl off nothing is read.
	off := f.opts(func(o *config.Options) { o.SSL = false; o.SSLCertFile = "/nonexistent" })
	if p, err := ReadTLSFiles(off); err != nil || p.Cert != nil {
		t.Fatalf("ssl off: have %v, %v; want nothing read", p, err)
	}
}
