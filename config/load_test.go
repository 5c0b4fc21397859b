package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadGood(t *testing.T) {
	o := Default()
	var extra struct {
		Echo bool `yaml:"echo"`
	}
	_, err := Load("good.yaml", []byte(`
listen: "[::1]:7000"
prefork: 8
maxfork: 32
timeout: 2.5
px_idle: 1m
graceful_timeout: 500ms
ssl_ciphers: TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
prop_sigusr: true
echo: true
`), &o, &extra)
	if err != nil {
		t.Fatal(err)
	}
	if o.Listen != "[::1]:7000" || o.Prefork != 8 || o.Maxfork != 32 || !o.PropSigusr || !extra.Echo {
		t.Fatalf("have %+v %+v", o, extra)
	}
	if o.Timeout.D() != 2500*time.Millisecond || o.PxIdle.D() != time.Minute || o.GracefulTimeout.D() != 500*time.Millisecond {
		t.Fatalf("durations: have %s %s %s", o.Timeout, o.PxIdle, o.GracefulTimeout)
	}
	if len(o.SSLCiphers) != 2 {
		t.Fatalf("ciphers: have %q", o.SSLCiphers)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
}

// Each bad file is refused with the file, the line and the key named.
func TestLoadBad(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		// A key no option has.
		{"unknown key", "prefork: 2\nprefrok: 3\n", `bad.yaml:2: key "prefrok": value "3": unknown key`},
		// An int given a word.
		{"wrong type int", "maxfork: lots\n", `bad.yaml:1: key "maxfork": value "lots": want an integer`},
		// A bool given a number.
		{"wrong type bool", "nofork: 2\n", `bad.yaml:1: key "nofork": value "2": want true or false`},
		// A duration that is neither seconds nor Go's form.
		{"wrong duration", "\ntimeout: soon\n", `bad.yaml:2: key "timeout": value "soon": "soon" is neither`},
		// A list where a scalar belongs.
		{"list for scalar", "port: [1, 2]\n", `bad.yaml:1: key "port"`},
		// A key set twice.
		{"duplicate", "port: 1\nport: 2\n", `bad.yaml:2: key "port": value "2": duplicate key (first set at line 1)`},
		// Not YAML at all.
		{"not yaml", "port: [1,\n", `bad.yaml:`},
		// Not a mapping.
		{"a list", "- port\n", `want a mapping of options`},
		// Empty.
		{"empty", "", `the file is empty`},
		{"only comments", "# nothing\n", `the file is empty`},
		// A null value.
		{"null", "port:\n", `bad.yaml:1: key "port": value "": want an integer, have nothing`},
		// An int too large for its type.
		{"overflow", "port: 99999999999999999999\n", `bad.yaml:1: key "port"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Default()
			_, err := Load("bad.yaml", []byte(tc.yaml), &o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error containing %q, have %v", tc.want, err)
			}
		})
	}
}

// Impossible values are refused by Validate, and Locate names the line.
func TestValidateAndLocate(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"maxfork below prefork", "prefork: 8\nmaxfork: 4\n", `bad.yaml:2: key "maxfork": value "4": maxfork must not be less than prefork (8)`},
		{"negative timeout", "timeout: -1\n", `bad.yaml:1: key "timeout": value "-1s": must not be negative`},
		{"port out of range", "port: 70000\n", `bad.yaml:1: key "port": value "70000": want a port number`},
		{"bad listen", "listen: nowhere\n", `bad.yaml:1: key "listen": value "nowhere"`},
		{"bad listen host", "listen: example.com:80\n", `host must be an IP address`},
		{"ssl without cert", "ssl: true\n", `ssl_cert_file`},
		{"bad tls version", "ssl_min_version: \"1.5\"\n", `bad.yaml:1: key "ssl_min_version"`},
		{"negative spares", "spares: -1\n", `key "spares"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Default()
			lines, err := Load("bad.yaml", []byte(tc.yaml), &o)
			if err != nil {
				t.Fatal(err)
			}
			o.Normalize()
			err = Locate(o.Validate(), "bad.yaml", lines)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want %q, have %v", tc.want, err)
			}
			if !errors.Is(err, ErrInvalid) && !strings.Contains(err.Error(), "bad.yaml") {
				t.Fatalf("want a located or ErrInvalid error, have %v", err)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	o := Default()
	o.Prefork = -4
	o.Timeout = 0
	o.PxIdle = Duration(500 * time.Millisecond)
	o.Normalize()
	if o.Prefork != 4 || o.Maxfork != 4 || !o.FixedPool() {
		t.Fatalf("negative prefork: want a fixed pool of 4, have %d/%d", o.Prefork, o.Maxfork)
	}
	if o.Timeout != DefaultTimeout || o.PxIdle != DefaultPxIdle {
		t.Fatalf("defaults: have timeout %s px_idle %s", o.Timeout, o.PxIdle)
	}
	o.Timeout = Duration(2 * time.Hour)
	if notes := o.Normalize(); len(notes) != 1 || o.Timeout.D() != time.Hour {
		t.Fatalf("timeout clamp: have %s %v", o.Timeout, notes)
	}
}

func TestFlagsOverrideFile(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	f := NewFlags(fs, &Options{})
	if err := fs.Parse([]string{"-prefork", "3", "-px-idle", "2s", "-nofork"}); err != nil {
		t.Fatal(err)
	}
	o := Default()
	if _, err := Load("f.yaml", []byte("prefork: 9\nmaxfork: 20\n"), &o); err != nil {
		t.Fatal(err)
	}
	if err := f.Apply(&o); err != nil {
		t.Fatal(err)
	}
	if o.Prefork != 3 || o.Maxfork != 20 || o.PxIdle.D() != 2*time.Second || !o.Nofork {
		t.Fatalf("have prefork %d maxfork %d px_idle %s nofork %v", o.Prefork, o.Maxfork, o.PxIdle, o.Nofork)
	}
	fs = flag.NewFlagSet("x", flag.ContinueOnError)
	f = NewFlags(fs, &Options{})
	fs.Parse([]string{"-prefork", "many"})
	err := f.Apply(&o)
	if err == nil || !strings.Contains(err.Error(), `flag -prefork: value "many": want an integer`) {
		t.Fatalf("bad flag: have %v", err)
	}
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := LoadFile(filepath.Join(dir, "missing.yaml"), &Options{})
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: have %v", err)
	}
	p := filepath.Join(dir, "secret.yaml")
	os.WriteFile(p, []byte("port: 1\n"), 0)
	if os.Geteuid() == 0 {
		t.Log("running as root: an unreadable file is still readable; checked only as non-root")
		return
	}
	if _, err := LoadFile(p, &Options{}); err == nil || !strings.Contains(err.Error(), "secret.yaml") {
		t.Fatalf("unreadable: have %v", err)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte("prefork: 8\nmaxfork: 32\ntimeout: 4\n"))
	f.Add([]byte("listen: \"[::1]:80\"\nssl: true\n"))
	f.Add([]byte("- a\n- b\n"))
	f.Add([]byte("port: &a 1\nmaxfork: *a\n"))
	f.Add([]byte("timeout: 1e400\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		o := Default()
		lines, err := Load("fuzz.yaml", b, &o)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce.File != "fuzz.yaml" {
				t.Fatalf("an error that does not name the file: %v", err)
			}
			return
		}
		o.Normalize()
		_ = Locate(o.Validate(), "fuzz.yaml", lines)
	})
}

// A YAML syntax error is named at its own line: yaml.v3's "line N" is one
// early for some errors (an unclosed [ on line 2 said line 1).
func TestYAMLSyntaxErrorLine(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		line int
	}{
		{"prefork: 2\nmaxfork: [oops\n", 2},
		{"prefork: 2\n  maxfork: 3\n", 2},
		{"prefork: 2\nmaxfork: 3\n\tspares: 1\n", 3},
		{"prefork: 2\ntimeout: \"unclosed\nmaxfork: 3\n", 2},
		{"- a\nprefork: 2\n", 2},
	} {
		var o Options
		_, err := Load("bad.yaml", []byte(tc.yaml), &o)
		var ce *Error
		if !errors.As(err, &ce) || ce.Line != tc.line || !strings.Contains(err.Error(), fmt.Sprintf("bad.yaml:%d: not valid YAML", tc.line)) {
			t.Errorf("%q: want bad.yaml:%d, have %v", tc.yaml, tc.line, err)
		}
		if strings.Contains(err.Error(), "yaml: line") {
			t.Errorf("%q: yaml's own line number left in: %v", tc.yaml, err)
		}
	}
}

// Values that used to be taken and misbehave: a timeout under 10 ms (the
// accept wait timed out before it looked), a verify mode above 2.
func TestValidateRefusesSilentMisbehaviour(t *testing.T) {
	for _, tc := range []struct {
		mut  func(*Options)
		want string
	}{
		{func(o *Options) { o.Timeout = Duration(time.Millisecond) }, "option timeout"},
		{func(o *Options) { o.Timeout = Duration(500 * time.Microsecond) }, "option timeout"},
		{func(o *Options) { o.SSLVerifyMode = 5 }, "option ssl_verify_mode"},
	} {
		o := Default()
		tc.mut(&o)
		o.Normalize()
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want %q refused, have %v", tc.want, err)
		}
	}
}
