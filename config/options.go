// Package config holds waiter's options: their names (those of Net::Waiter,
// lower-cased), their defaults, their validation, and their loading from YAML
// files and command-line flags.
//
// It is a leaf package so that the server, the pool, the socket code and a
// user's main can all share one Options type without import cycles.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Options are a server's settings. The yaml keys are Net::Waiter's option
// names in lower case, plus the ones waiter adds (listen, max_requests, ...).
// Build one with Default, change fields in Go or load a file over it, then
// call Validate (Run does).
type Options struct {
	// Listen is a "host:port", "[v6]:port" or unix socket path to bind when
	// systemd passes no socket. It overrides Port.
	Listen string `yaml:"listen" json:"listen,omitempty"`
	// Port is bound on 127.0.0.1 when Listen is empty and systemd passes
	// no socket. 0 asks the kernel for a free port.
	Port int `yaml:"port" json:"port"`

	// Prefork > 0 starts that many workers that accept by themselves and
	// grow up to Maxfork; < 0 is a fixed pool of |Prefork|; 0 forks one
	// worker process per client (forking mode).
	Prefork int `yaml:"prefork" json:"prefork"`
	Maxfork int `yaml:"maxfork" json:"maxfork"`
	// Nofork serves one client at a time in one process.
	Nofork bool `yaml:"nofork" json:"nofork,omitempty"`
	// Spares, in forking mode, is how many workers wait ready to be handed
	// a client, so that no client waits for a process to start.
	Spares int `yaml:"spares" json:"spares"`
	// MaxforkWait, in forking mode, is how long the pool may stay full
	// (maxfork workers busy) while clients wait in the listen backlog;
	// past it the master accepts them and hands each to on_maxforked
	// (Net::Waiter's refusal, kept for sustained overload). 0: the default;
	// 1ms sheds at once, as Net::Waiter did.
	MaxforkWait Duration `yaml:"maxfork_wait" json:"maxfork_wait"`

	// DeferAccept sets TCP_DEFER_ACCEPT on the listeners: the kernel hands
	// a connection to a worker once the client has sent something, or
	// after a second. For protocols where the client speaks first (HTTP,
	// most request-reply ones), the worker that accepts reads at once
	// instead of sleeping until the request comes; wrong where the server
	// speaks first (a greeting, SMTP): such a client would wait a second.
	// proxy_protocol implies it.
	DeferAccept bool `yaml:"defer_accept" json:"defer_accept,omitempty"`
	// ProxyProtocol reads a PROXY protocol header (v1 or v2, as HAProxy,
	// nginx and cloud balancers send) from every client before anything
	// else; the address it carries is the client's everywhere.
	ProxyProtocol bool `yaml:"proxy_protocol" json:"proxy_protocol,omitempty"`
	// ProxyFrom lists the CIDRs (or addresses) allowed to connect and send
	// the header: a connection from elsewhere is closed. Empty: any source
	// (every client must send the header).
	ProxyFrom []string `yaml:"proxy_from" json:"proxy_from,omitempty"`
	// ProxyTimeout bounds the wait for the header. 0: the default.
	ProxyTimeout Duration `yaml:"proxy_timeout" json:"proxy_timeout"`
	// MaxPerSource (0: off) is the most clients one address (after PROXY)
	// may have served at once across the pool; the next is passed to
	// on_source_limited and closed.
	MaxPerSource int `yaml:"max_per_source" json:"max_per_source,omitempty"`

	// Timeout is the accept timeout: on_prefork_child_idle and
	// on_forking_idle run each time it passes with no client.
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// PxIdle is how long a prefork worker may wait for a client before it
	// exits (the master replaces it if the pool needs it).
	PxIdle Duration `yaml:"px_idle" json:"px_idle"`
	// MaxRequests retires a worker after that many clients (0: never).
	// Each worker's limit is staggered by up to 10% so they do not all
	// retire at once.
	MaxRequests int `yaml:"max_requests" json:"max_requests,omitempty"`
	// GracefulTimeout bounds how long a stop or reload waits for busy
	// workers before it kills them.
	GracefulTimeout Duration `yaml:"graceful_timeout" json:"graceful_timeout"`
	// RequestTimeout (0: off) is how long a worker may be busy with one
	// client before its stacks are logged and it is killed.
	RequestTimeout Duration `yaml:"request_timeout" json:"request_timeout,omitempty"`
	// ClientTimeout (0: off) is an idle read/write deadline set on each
	// client connection before on_process runs.
	ClientTimeout Duration `yaml:"client_timeout" json:"client_timeout,omitempty"`

	// SSL serves TLS on every listener with the ssl_* settings.
	SSL              bool     `yaml:"ssl" json:"ssl,omitempty"`
	SSLCertFile      string   `yaml:"ssl_cert_file" json:"ssl_cert_file,omitempty"`
	SSLKeyFile       string   `yaml:"ssl_key_file" json:"ssl_key_file,omitempty"`
	SSLCAFile        string   `yaml:"ssl_ca_file" json:"ssl_ca_file,omitempty"`
	SSLVerifyMode    int      `yaml:"ssl_verify_mode" json:"ssl_verify_mode,omitempty"`
	SSLMinVersion    string   `yaml:"ssl_min_version" json:"ssl_min_version,omitempty"`
	SSLCiphers       []string `yaml:"ssl_ciphers" json:"ssl_ciphers,omitempty"`
	HandshakeTimeout Duration `yaml:"handshake_timeout" json:"handshake_timeout"`

	// Backlog is the listen backlog of a socket waiter binds itself
	// (0: the kernel's net.core.somaxconn, which also caps any larger
	// value). systemd's sockets have their own (Backlog= in the .socket).
	Backlog int `yaml:"backlog" json:"backlog,omitempty"`

	// Control is the path of the master's control socket (waiterctl):
	// "" is $RUNTIME_DIRECTORY/control under systemd and off outside it;
	// "off" is off everywhere. It is created mode 0600, and only its
	// owner's uid and root are answered.
	Control string `yaml:"control" json:"control,omitempty"`
	// MetricsListen is a host:port on which the master serves Prometheus
	// metrics at /metrics ("" : off).
	MetricsListen string `yaml:"metrics_listen" json:"metrics_listen,omitempty"`
	// MaxWorkerRSS retires a worker whose resident memory is above it,
	// after its current client (0: off). The master samples it each second.
	MaxWorkerRSS Size `yaml:"max_worker_rss" json:"max_worker_rss,omitempty"`
	// MaxWorkerRSSHard kills a worker above it at once, its goroutine
	// stacks written to the log first (0: off).
	MaxWorkerRSSHard Size `yaml:"max_worker_rss_hard" json:"max_worker_rss_hard,omitempty"`
	// SlowRequest (0: off) logs, once per client, the stacks of a worker
	// busy with one client for longer than this, and the client's
	// address; the worker goes on (request_timeout is the kill).
	SlowRequest Duration `yaml:"slow_request" json:"slow_request,omitempty"`

	// PropSigusr forwards USR1/USR2 from the master to every worker.
	PropSigusr bool `yaml:"prop_sigusr" json:"prop_sigusr,omitempty"`
	// Debug turns on debug log lines (log_debug).
	Debug bool `yaml:"debug" json:"debug,omitempty"`
}

// Defaults, as in Net::Waiter where it has one.
const (
	DefaultPort            = 9123
	DefaultMaxfork         = 1024
	DefaultSpares          = 2
	DefaultTimeout         = Duration(4 * time.Second)
	DefaultPxIdle          = Duration(31 * time.Second)
	DefaultGracefulTimeout = Duration(30 * time.Second)
	DefaultHandshake       = Duration(10 * time.Second)
	// DefaultMaxforkWait rides out a burst that clients would wait through
	// (their connect and reply timeouts are commonly 10 to 30 s), and under
	// sustained overload tells clients "busy" through on_maxforked well
	// before they time out on their own.
	DefaultMaxforkWait = Duration(10 * time.Second)
	// DefaultProxyTimeout: a balancer sends the header with its first
	// packet; a client that has sent nothing in 5 s is not a balancer.
	DefaultProxyTimeout = Duration(5 * time.Second)
	maxTimeout          = Duration(3600 * time.Second)
)

// Default returns the options Net::Waiter starts from: forking mode on port
// 9123, up to 1024 workers, a 4 s accept timeout and a 31 s prefork idle time.
func Default() Options {
	return Options{
		Port:             DefaultPort,
		Maxfork:          DefaultMaxfork,
		Spares:           DefaultSpares,
		Timeout:          DefaultTimeout,
		PxIdle:           DefaultPxIdle,
		GracefulTimeout:  DefaultGracefulTimeout,
		HandshakeTimeout: DefaultHandshake,
		SSLMinVersion:    "1.2",
		MaxforkWait:      DefaultMaxforkWait,
		ProxyTimeout:     DefaultProxyTimeout,
	}
}

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("config: invalid option")

// FieldError names the option that is wrong, its value and why.
type FieldError struct {
	Key    string // the yaml key, e.g. "maxfork"
	Value  string // the value as given
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("option %s: value %q: %s", e.Key, e.Value, e.Reason)
}

func (e *FieldError) Unwrap() error { return ErrInvalid }

// Normalize applies Net::Waiter's rules that change values rather than refuse
// them: a negative prefork is a fixed pool, a zero timeout or a px_idle under
// a second means the default, and timeout is clamped to one hour. It returns
// a note for each value it changed, for the log.
func (o *Options) Normalize() []string {
	var notes []string
	if o.Prefork < 0 {
		o.Prefork = -o.Prefork
		if o.Maxfork != o.Prefork {
			o.Maxfork = o.Prefork
		}
	}
	if o.Maxfork == 0 {
		o.Maxfork = DefaultMaxfork
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Timeout > maxTimeout {
		notes = append(notes, fmt.Sprintf("timeout %s clamped to %s", o.Timeout, maxTimeout))
		o.Timeout = maxTimeout
	}
	if o.PxIdle >= 0 && o.PxIdle < Duration(time.Second) {
		o.PxIdle = DefaultPxIdle
	}
	if o.GracefulTimeout == 0 {
		o.GracefulTimeout = DefaultGracefulTimeout
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = DefaultHandshake
	}
	if o.MaxforkWait == 0 {
		o.MaxforkWait = DefaultMaxforkWait
	}
	if o.ProxyTimeout == 0 {
		o.ProxyTimeout = DefaultProxyTimeout
	}
	if o.SSLMinVersion == "" {
		o.SSLMinVersion = "1.2"
	}
	return notes
}

// FixedPool reports whether the pool never grows or shrinks (negative
// prefork in the user's terms).
func (o *Options) FixedPool() bool { return o.Prefork > 0 && o.Prefork == o.Maxfork }

// Validate refuses impossible values. It returns the first *FieldError.
// Call it after Normalize; a negative prefork must be normalized first.
func (o *Options) Validate() error {
	bad := func(key string, v any, reason string) error {
		return &FieldError{Key: key, Value: fmt.Sprint(v), Reason: reason}
	}
	if o.Port < 0 || o.Port > 65535 {
		return bad("port", o.Port, "want a port number from 0 to 65535")
	}
	if o.Listen != "" && !strings.HasPrefix(o.Listen, "/") && !strings.HasPrefix(o.Listen, "@") {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return bad("listen", o.Listen, "want host:port, [v6]:port or an absolute unix socket path")
		}
		if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return bad("listen", o.Listen, "port must be a number from 0 to 65535")
		}
		if host != "" && net.ParseIP(host) == nil && host != "localhost" {
			return bad("listen", o.Listen, "host must be an IP address or localhost (no name lookups at start)")
		}
	}
	if o.Maxfork < 1 {
		return bad("maxfork", o.Maxfork, "want at least 1")
	}
	if o.Maxfork > 65536 {
		return bad("maxfork", o.Maxfork, "want at most 65536")
	}
	if o.Prefork < 0 {
		return bad("prefork", o.Prefork, "negative prefork must be normalized first (a fixed pool)")
	}
	if o.Prefork > o.Maxfork {
		return bad("maxfork", o.Maxfork, fmt.Sprintf("maxfork must not be less than prefork (%d)", o.Prefork))
	}
	if o.Spares < 0 || o.Spares > 256 {
		return bad("spares", o.Spares, "want 0 to 256")
	}
	if o.MaxRequests < 0 {
		return bad("max_requests", o.MaxRequests, "want 0 (no limit) or more")
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{
		{"timeout", o.Timeout}, {"px_idle", o.PxIdle}, {"graceful_timeout", o.GracefulTimeout},
		{"request_timeout", o.RequestTimeout}, {"client_timeout", o.ClientTimeout},
		{"handshake_timeout", o.HandshakeTimeout}, {"slow_request", o.SlowRequest},
		{"maxfork_wait", o.MaxforkWait}, {"proxy_timeout", o.ProxyTimeout},
	} {
		if d.v < 0 {
			return bad(d.key, d.v, "must not be negative")
		}
	}
	if o.Timeout < Duration(10*time.Millisecond) {
		return bad("timeout", o.Timeout, "want at least 10ms: the accept timeout paces the idle hooks, and below that they would spin")
	}
	if o.MaxPerSource < 0 {
		return bad("max_per_source", o.MaxPerSource, "want 0 (off) or more")
	}
	if len(o.ProxyFrom) > 0 && !o.ProxyProtocol {
		return bad("proxy_from", strings.Join(o.ProxyFrom, ","), "is set but proxy_protocol is off")
	}
	for _, c := range o.ProxyFrom {
		if _, err := ParseSource(c); err != nil {
			return bad("proxy_from", c, err.Error())
		}
	}
	if o.Backlog < 0 || o.Backlog > 1<<20 {
		return bad("backlog", o.Backlog, "want 0 (the kernel's somaxconn) to 1048576")
	}
	if o.Control != "" && o.Control != "off" && !strings.HasPrefix(o.Control, "/") {
		return bad("control", o.Control, "want an absolute path for the control socket, or off")
	}
	if len(o.Control) > 107 {
		return bad("control", o.Control, "a unix socket path has at most 107 bytes")
	}
	if o.MetricsListen != "" {
		host, port, err := net.SplitHostPort(o.MetricsListen)
		if err != nil {
			return bad("metrics_listen", o.MetricsListen, "want host:port, e.g. 127.0.0.1:9124")
		}
		if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return bad("metrics_listen", o.MetricsListen, "port must be a number from 0 to 65535")
		}
		if host != "" && net.ParseIP(host) == nil && host != "localhost" {
			return bad("metrics_listen", o.MetricsListen, "host must be an IP address or localhost")
		}
	}
	if o.MaxWorkerRSS != 0 && o.MaxWorkerRSS < 1<<20 {
		return bad("max_worker_rss", o.MaxWorkerRSS, "want 0 (off) or at least 1M: a Go process starts above that")
	}
	if o.MaxWorkerRSSHard != 0 && o.MaxWorkerRSSHard < 1<<20 {
		return bad("max_worker_rss_hard", o.MaxWorkerRSSHard, "want 0 (off) or at least 1M: a Go process starts above that")
	}
	if o.MaxWorkerRSS != 0 && o.MaxWorkerRSSHard != 0 && o.MaxWorkerRSSHard < o.MaxWorkerRSS {
		return bad("max_worker_rss_hard", o.MaxWorkerRSSHard, fmt.Sprintf("must not be below max_worker_rss (%s)", o.MaxWorkerRSS))
	}
	if o.SlowRequest > 0 && o.SlowRequest < Duration(10*time.Millisecond) {
		return bad("slow_request", o.SlowRequest, "want 0 (off) or at least 10ms")
	}
	if o.SSLVerifyMode < 0 || o.SSLVerifyMode > 2 {
		return bad("ssl_verify_mode", o.SSLVerifyMode, "want 0 (none), 1 (verify if given) or 2 (require)")
	}
	switch o.SSLMinVersion {
	case "1.0", "1.1", "1.2", "1.3":
	default:
		return bad("ssl_min_version", o.SSLMinVersion, "want 1.0, 1.1, 1.2 or 1.3")
	}
	if o.SSL {
		if o.SSLCertFile == "" {
			return bad("ssl_cert_file", "", "ssl is on: a certificate file is required")
		}
		if o.SSLKeyFile == "" {
			return bad("ssl_key_file", "", "ssl is on: a key file is required")
		}
	}
	return nil
}

// Mode names the process model the options select.
func (o *Options) Mode() string {
	switch {
	case o.Nofork:
		return "nofork"
	case o.Prefork > 0:
		return "prefork"
	}
	return "forking"
}

// ParseSource reads one proxy_from entry: a CIDR (10.0.0.0/8, fd00::/8) or
// a single address (taken as /32 or /128). An IPv4-mapped one
// (::ffff:10.0.0.0/104) is taken as the IPv4 CIDR it maps: sources are
// matched unmapped, as a dual-stack socket's IPv4 clients are.
func ParseSource(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("want a CIDR such as 10.0.0.0/8 or an address")
		}
		if a := p.Addr(); a.Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("an IPv4-mapped CIDR needs at least 96 bits (::ffff:0.0.0.0/96 is every IPv4 address)")
			}
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("want a CIDR such as 10.0.0.0/8 or an address")
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
