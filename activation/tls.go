package activation

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/waiter-go/waiter/config"
)

// ErrTLS is wrapped by every error of TLSConfig, ReadTLSFiles and
// TLSConfigFromPEM, for errors.Is.
var ErrTLS = errors.New("activation: TLS settings refused")

// TLSSettingError names the ssl_* option at fault and its value: the file's
// path, or the cipher's name. It unwraps to ErrTLS and to the cause, so that
// errors.Is(err, fs.ErrNotExist) works on a missing file.
type TLSSettingError struct {
	Key   string // the option, e.g. "ssl_key_file"
	Value string // the path or value as given
	Err   error
}

func (e *TLSSettingError) Error() string {
	msg := e.Err.Error()
	// An *fs.PathError repeats the path the message already names.
	var pe *fs.PathError
	if errors.As(e.Err, &pe) && pe.Path == e.Value {
		msg = pe.Err.Error()
	}
	return fmt.Sprintf("activation: %s %q: %s", e.Key, e.Value, msg)
}

func (e *TLSSettingError) Unwrap() []error { return []error{ErrTLS, e.Err} }

func settingErr(key, value string, format string, a ...any) error {
	return &TLSSettingError{Key: key, Value: value, Err: fmt.Errorf(format, a...)}
}

// TLSPEM is what the ssl_* files held when they were read. A master reads
// the files and hands the bytes to its workers, so that a worker serves what
// the master checked, whatever the files hold by the time it starts.
type TLSPEM struct {
	Cert []byte `json:"cert"`
	Key  []byte `json:"key"`
	CA   []byte `json:"ca,omitempty"` // nil without ssl_ca_file
	// KeyMode is the key file's permission bits, for the warning.
	KeyMode fs.FileMode `json:"key_mode"`
}

// TLSConfig builds the server's TLS settings from the ssl_* options: it is
// ReadTLSFiles then TLSConfigFromPEM. The files are read at start and on
// reload, so that a missing, unreadable or mismatched file is refused with
// its name before anything is served. The error is a *TLSSettingError.
//
// warnings lists what is allowed but unwise: a key others can read or
// write, a certificate out of its validity period, insecure or ineffective
// cipher suites, ssl_* options set while ssl is off.
func TLSConfig(o config.Options) (cfg *tls.Config, warnings []string, err error) {
	p, err := ReadTLSFiles(o)
	if err != nil {
		return nil, nil, err
	}
	return TLSConfigFromPEM(o, p)
}

// ReadTLSFiles reads the ssl_* files, each once, so that a certificate
// replaced while it is read is never paired with the other half of the old
// one. With ssl off it reads nothing.
func ReadTLSFiles(o config.Options) (TLSPEM, error) {
	var p TLSPEM
	if !o.SSL {
		return p, nil
	}
	var err error
	if p.Cert, _, err = readTLSFile("ssl_cert_file", o.SSLCertFile); err != nil {
		return p, err
	}
	var fi fs.FileInfo
	if p.Key, fi, err = readTLSFile("ssl_key_file", o.SSLKeyFile); err != nil {
		return p, err
	}
	p.KeyMode = fi.Mode().Perm()
	if o.SSLCAFile != "" {
		if p.CA, _, err = readTLSFile("ssl_ca_file", o.SSLCAFile); err != nil {
			return p, err
		}
	}
	return p, nil
}

// TLSConfigFromPEM builds the TLS settings from the options and what their
// files held; errors and warnings name the files as the options do.
func TLSConfigFromPEM(o config.Options, p TLSPEM) (cfg *tls.Config, warnings []string, err error) {
	if !o.SSL {
		var set []string
		for _, f := range []struct {
			key string
			on  bool
		}{
			{"ssl_cert_file", o.SSLCertFile != ""}, {"ssl_key_file", o.SSLKeyFile != ""},
			{"ssl_ca_file", o.SSLCAFile != ""}, {"ssl_verify_mode", o.SSLVerifyMode != 0},
			{"ssl_ciphers", len(o.SSLCiphers) > 0},
		} {
			if f.on {
				set = append(set, f.key)
			}
		}
		if len(set) > 0 {
			// Serving plaintext where TLS was meant is worth a line in the log.
			warnings = append(warnings, fmt.Sprintf("ssl is off: %s set but not used; clients are served in plaintext", strings.Join(set, ", ")))
		}
		return nil, warnings, nil
	}
	certPEM, keyPEM := p.Cert, p.Key
	leaf, err := checkCertPEM(o.SSLCertFile, certPEM)
	if err != nil {
		return nil, nil, err
	}
	if err := checkKeyPEM(o.SSLKeyFile, keyPEM); err != nil {
		return nil, nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, settingErr("ssl_key_file", o.SSLKeyFile, "does not go with ssl_cert_file %q: %w", o.SSLCertFile, err)
	}
	if cert.Leaf == nil { // GODEBUG=x509keypairleaf=0
		cert.Leaf = leaf
	}
	// Group-readable is not flagged: a key of mode 0640 in the ssl-cert group
	// is Debian's convention for services that do not run as root. Anyone
	// who may write the key may replace it, whoever may read it.
	if perm := p.KeyMode.Perm(); perm&0o022 != 0 {
		warnings = append(warnings, fmt.Sprintf("ssl_key_file %s is writable by others (mode %#o): chmod go-w it", o.SSLKeyFile, perm))
	} else if perm&0o004 != 0 {
		warnings = append(warnings, fmt.Sprintf("ssl_key_file %s is readable by others (mode %#o): chmod o-r it, or 600", o.SSLKeyFile, perm))
	}
	now := time.Now()
	switch {
	case now.After(cert.Leaf.NotAfter):
		warnings = append(warnings, fmt.Sprintf("ssl_cert_file %s expired on %s", o.SSLCertFile, cert.Leaf.NotAfter.UTC().Format(time.RFC3339)))
	case now.Before(cert.Leaf.NotBefore):
		warnings = append(warnings, fmt.Sprintf("ssl_cert_file %s is not valid before %s", o.SSLCertFile, cert.Leaf.NotBefore.UTC().Format(time.RFC3339)))
	}

	cfg = &tls.Config{Certificates: []tls.Certificate{cert}}
	switch o.SSLMinVersion {
	case "1.0":
		cfg.MinVersion = tls.VersionTLS10
	case "1.1":
		cfg.MinVersion = tls.VersionTLS11
	case "", "1.2":
		cfg.MinVersion = tls.VersionTLS12
	case "1.3":
		cfg.MinVersion = tls.VersionTLS13
	default:
		// Validate refuses it too; a caller that skipped it must not get a
		// silent default.
		return nil, nil, settingErr("ssl_min_version", o.SSLMinVersion, "want 1.0, 1.1, 1.2 or 1.3")
	}

	switch {
	case o.SSLVerifyMode <= 0:
		cfg.ClientAuth = tls.NoClientCert
	case o.SSLVerifyMode == 1:
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	default:
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if o.SSLCAFile != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(p.CA) {
			return nil, nil, settingErr("ssl_ca_file", o.SSLCAFile, "no PEM CERTIFICATE in it")
		}
		cfg.ClientCAs = pool
		if o.SSLVerifyMode <= 0 {
			warnings = append(warnings, fmt.Sprintf("ssl_ca_file %s is not used: ssl_verify_mode is 0, so no client certificate is asked for", o.SSLCAFile))
		}
	} else if o.SSLVerifyMode > 0 {
		// Go would verify against the system roots: any client with a
		// certificate from a public CA would be let in.
		return nil, nil, settingErr("ssl_verify_mode", fmt.Sprint(o.SSLVerifyMode), "needs ssl_ca_file, the CA that client certificates are verified with")
	}

	if len(o.SSLCiphers) > 0 {
		ids, warns, err := cipherIDs(o.SSLCiphers, cert.Leaf, cfg.MinVersion)
		if err != nil {
			return nil, nil, err
		}
		cfg.CipherSuites = ids
		warnings = append(warnings, warns...)
	}
	return cfg, warnings, nil
}

// readTLSFile reads one file whole and stats the file it read, not the path,
// so that the mode checked is that of the content used.
func readTLSFile(key, path string) ([]byte, fs.FileInfo, error) {
	if path == "" {
		return nil, nil, settingErr(key, path, "ssl is on: a file is required")
	}
	// O_NONBLOCK: a FIFO in the way must be refused, not waited on.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, &TLSSettingError{Key: key, Value: path, Err: err}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, &TLSSettingError{Key: key, Value: path, Err: err}
	}
	switch {
	case fi.IsDir():
		return nil, nil, settingErr(key, path, "is a directory")
	case !fi.Mode().IsRegular():
		return nil, nil, settingErr(key, path, "not a regular file (mode %s)", fi.Mode())
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, &TLSSettingError{Key: key, Value: path, Err: err}
	}
	return b, fi, nil
}

// checkCertPEM finds the leaf certificate, so that a wrong file is named as
// such rather than by tls.X509KeyPair's message about both inputs.
func checkCertPEM(path string, b []byte) (*x509.Certificate, error) {
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		leaf, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, settingErr("ssl_cert_file", path, "the first certificate: %w", err)
		}
		return leaf, nil
	}
	if hasPrivateKey(b) {
		return nil, settingErr("ssl_cert_file", path, "holds a private key and no CERTIFICATE: are the cert and key files swapped?")
	}
	return nil, settingErr("ssl_cert_file", path, "no PEM CERTIFICATE in it")
}

// checkKeyPEM refuses a key file without a usable private key in it.
func checkKeyPEM(path string, b []byte) error {
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if !strings.HasSuffix(blk.Type, "PRIVATE KEY") {
			continue
		}
		if blk.Type == "ENCRYPTED PRIVATE KEY" || blk.Headers["Proc-Type"] == "4,ENCRYPTED" {
			return settingErr("ssl_key_file", path, "the private key is encrypted: waiter cannot ask for a passphrase; store it decrypted (mode 600)")
		}
		return nil
	}
	return settingErr("ssl_key_file", path, "no PEM PRIVATE KEY in it")
}

func hasPrivateKey(b []byte) bool {
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return false
		}
		if strings.HasSuffix(blk.Type, "PRIVATE KEY") {
			return true
		}
	}
}

// cipherIDs maps Go's cipher suite names to ids for TLS 1.0 to 1.2. TLS 1.3
// suites are not configurable in crypto/tls (all are always on), so they
// are skipped with a warning, as is the whole list when TLS 1.3 is the
// minimum. Go picks the suite by its own preference, not the list's order.
// A list with no suite the certificate's key can sign for is refused: no
// TLS 1.2 client could connect.
func cipherIDs(names []string, leaf *x509.Certificate, minVersion uint16) (ids []uint16, warnings []string, err error) {
	known := map[string]*tls.CipherSuite{}
	for _, c := range tls.CipherSuites() {
		known[c.Name] = c
	}
	for _, c := range tls.InsecureCipherSuites() {
		known[c.Name] = c
	}
	keyKind := ""
	switch leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		keyKind = "RSA"
	case *ecdsa.PublicKey, ed25519.PublicKey:
		keyKind = "ECDSA" // Ed25519 signs in the ECDSA suites of TLS 1.2
	}
	var tls13, insecure []string
	fits := false
	for _, raw := range names {
		n := strings.TrimSpace(raw)
		if n == "" {
			continue
		}
		c, ok := known[n]
		if !ok {
			return nil, nil, settingErr("ssl_ciphers", raw, "unknown cipher suite: want Go's names (OpenSSL names and keywords such as HIGH are not understood): %s", strings.Join(tls12Names(), ", "))
		}
		if !slices.ContainsFunc(c.SupportedVersions, func(v uint16) bool { return v <= tls.VersionTLS12 }) {
			tls13 = append(tls13, n)
			continue
		}
		if c.Insecure {
			insecure = append(insecure, n)
		}
		if keyKind == "" || suiteKeyKind(n) == keyKind {
			fits = true
		}
		ids = append(ids, c.ID)
	}
	if minVersion >= tls.VersionTLS13 {
		return nil, []string{"ssl_ciphers has no effect: ssl_min_version is 1.3, whose cipher suites crypto/tls does not let be chosen"}, nil
	}
	if len(tls13) > 0 {
		warnings = append(warnings, fmt.Sprintf("ssl_ciphers: %s: TLS 1.3 suites are always on in crypto/tls and cannot be chosen; skipped", strings.Join(tls13, ", ")))
	}
	if len(ids) == 0 {
		warnings = append(warnings, "ssl_ciphers names no TLS 1.2 suite: Go's default TLS 1.2 suites are used")
		return nil, warnings, nil
	}
	if len(insecure) > 0 {
		warnings = append(warnings, fmt.Sprintf("ssl_ciphers: %s: insecure (no forward secrecy, or a broken cipher)", strings.Join(insecure, ", ")))
	}
	if !fits {
		return nil, nil, settingErr("ssl_ciphers", strings.Join(names, ","), "no suite fits the %s key of the certificate: TLS 1.2 clients could not connect", keyKind)
	}
	return ids, warnings, nil
}

// suiteKeyKind is the kind of certificate key a TLS 1.2 suite authenticates
// with, read from its name.
func suiteKeyKind(name string) string {
	switch {
	case strings.Contains(name, "_ECDSA_"):
		return "ECDSA"
	case strings.Contains(name, "_ECDHE_RSA_"), strings.HasPrefix(name, "TLS_RSA_"):
		return "RSA"
	}
	return ""
}

// tls12Names lists the secure suites one may name, for the error message.
func tls12Names() []string {
	var out []string
	for _, c := range tls.CipherSuites() {
		if slices.Contains(c.SupportedVersions, tls.VersionTLS12) {
			out = append(out, c.Name)
		}
	}
	return out
}
