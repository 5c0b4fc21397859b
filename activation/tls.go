package activation

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/waiter-go/waiter/config"
)

// TLSConfig builds the server's TLS settings from the ssl_* options. Each
// file is read here, at start and on reload, so that a missing, unreadable
// or mismatched file is refused with its name before anything is served.
// warnings lists what is allowed but unwise (a key readable by others).
func TLSConfig(o config.Options) (cfg *tls.Config, warnings []string, err error) {
	if !o.SSL {
		return nil, nil, nil
	}
	for _, f := range []struct{ key, path string }{{"ssl_cert_file", o.SSLCertFile}, {"ssl_key_file", o.SSLKeyFile}} {
		if _, err := os.ReadFile(f.path); err != nil {
			return nil, nil, fmt.Errorf("activation: %s %s: %w", f.key, f.path, err)
		}
	}
	cert, err := tls.LoadX509KeyPair(o.SSLCertFile, o.SSLKeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("activation: ssl_cert_file %s with ssl_key_file %s: %w", o.SSLCertFile, o.SSLKeyFile, err)
	}
	if fi, err := os.Stat(o.SSLKeyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		warnings = append(warnings, fmt.Sprintf("ssl_key_file %s is readable by others (mode %#o): chmod 600 it", o.SSLKeyFile, fi.Mode().Perm()))
	}
	cfg = &tls.Config{Certificates: []tls.Certificate{cert}}
	switch o.SSLMinVersion {
	case "1.0":
		cfg.MinVersion = tls.VersionTLS10
	case "1.1":
		cfg.MinVersion = tls.VersionTLS11
	case "1.3":
		cfg.MinVersion = tls.VersionTLS13
	default:
		cfg.MinVersion = tls.VersionTLS12
	}
	if o.SSLCAFile != "" {
		pem, err := os.ReadFile(o.SSLCAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("activation: ssl_ca_file %s: %w", o.SSLCAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("activation: ssl_ca_file %s: no PEM certificate in it", o.SSLCAFile)
		}
		cfg.ClientCAs = pool
	}
	switch {
	case o.SSLVerifyMode <= 0:
		cfg.ClientAuth = tls.NoClientCert
	case o.SSLVerifyMode == 1:
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	default:
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if o.SSLVerifyMode > 0 && cfg.ClientCAs == nil {
		return nil, nil, errors.New("activation: ssl_verify_mode > 0 needs ssl_ca_file to verify client certificates with")
	}
	if len(o.SSLCiphers) > 0 {
		ids, err := cipherIDs(o.SSLCiphers)
		if err != nil {
			return nil, nil, err
		}
		cfg.CipherSuites = ids
	}
	return cfg, warnings, nil
}

// cipherIDs maps Go's cipher suite names (TLS 1.2; TLS 1.3 suites are not
// configurable in crypto/tls) to their ids.
func cipherIDs(names []string) ([]uint16, error) {
	known := map[string]uint16{}
	for _, c := range tls.CipherSuites() {
		known[c.Name] = c.ID
	}
	for _, c := range tls.InsecureCipherSuites() {
		known[c.Name] = c.ID
	}
	var out []uint16
	for _, n := range names {
		id, ok := known[strings.TrimSpace(n)]
		if !ok {
			return nil, fmt.Errorf("activation: ssl_ciphers: unknown cipher suite %q (Go names such as TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)", n)
		}
		out = append(out, id)
	}
	return out, nil
}
