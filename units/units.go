package units

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"net"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/waiter-go/waiter/config"
)

//go:embed templates/*.tmpl
var templateFS embed.FS

// Defaults that Generate fills in for zero fields of Params.
const (
	// DefaultWatchdog is WatchdogSec=: long enough for a GC pause or a slow
	// disk, short enough that a wedged master is replaced within seconds.
	DefaultWatchdog = 10 * time.Second
	// StopMargin is added to GracefulTimeout for TimeoutStopSec=: the master
	// kills its last workers at graceful_timeout (checked every 100 ms), then
	// reaps them and runs on_server_close, before systemd's SIGKILL.
	StopMargin = 5 * time.Second
	// DefaultStartTimeout is TimeoutStartSec=. systemd 252 bounds a reload
	// (ExecReload=) by it as well as a start; the master gives a new
	// generation 60 s to become ready, so 90 s leaves waiterctl room to
	// hear the result and say it.
	DefaultStartTimeout = 90 * time.Second
	// ReloadMargin is how long before TimeoutStartSec= waiterctl gives up
	// waiting for a reload (its -timeout): it then exits 1 with its reason,
	// rather than being killed by systemd with none.
	ReloadMargin = 5 * time.Second
	// FDStoreMax is FileDescriptorStoreMax= of a NoSocket service, and the
	// $FDSTORE it sets for systemd 252: the master keeps its one listening
	// socket there; the rest is room for a daemon that binds more.
	FDStoreMax = 4
	// DefaultHost is the address a NoSocket service binds: the daemon's
	// own default without -listen.
	DefaultHost = "127.0.0.1"
)

// ControlSocket is where the master of NAME.service listens for waiterctl:
// $RUNTIME_DIRECTORY/control, with RuntimeDirectory=NAME.
func ControlSocket(name string) string { return "/run/" + name + "/control" }

// Params describe a daemon built on waiter. Only Name and Port are required.
type Params struct {
	// Name names the units (NAME.socket, NAME.service, NAME-accept.socket,
	// NAME-accept@.service) and, by default, the binary and its config:
	// letters, digits, '_', '.' and '-', starting with a letter, digit or
	// '_', at most 64 characters.
	Name string
	// Port is the TCP port of NAME.socket (all addresses, IPv4 and IPv6).
	Port int
	// AcceptPort is the port of NAME-accept.socket; 0 means Port+1.
	AcceptPort int
	// Exec is the daemon's binary; "" means /usr/bin/NAME.
	Exec string
	// Config is the daemon's YAML file, passed as -config; "" means
	// /etc/NAME/NAME.yaml.
	Config string
	// Description is the units' Description=; "" means "NAME, a waiter
	// daemon". One line; a '%' is escaped for systemd.
	Description string
	// GracefulTimeout must equal the daemon's graceful_timeout; 0 means
	// waiter's default (30 s). TimeoutStopSec= is this plus StopMargin.
	GracefulTimeout time.Duration
	// Watchdog is WatchdogSec=; 0 means DefaultWatchdog, a negative value
	// leaves the watchdog off.
	Watchdog time.Duration
	// StartTimeout is TimeoutStartSec=, which bounds a start and, on
	// systemd 252, a reload too; 0 means DefaultStartTimeout.
	StartTimeout time.Duration
	// Waiterctl is the path of waiterctl on the machines the units run on,
	// e.g. /usr/bin/waiterctl. When set, ExecReload= is `WAITERCTL -s
	// /run/NAME/control -timeout T reload` (T is StartTimeout minus
	// ReloadMargin), so that `systemctl reload` fails when the master
	// refuses the file or the new generation does not start. "" keeps
	// `NAME -check` and `kill -HUP`, which fail only on a file that -check
	// refuses.
	Waiterctl string
	// NoAccept leaves out the Accept=yes pair (NAME-accept.socket and
	// NAME-accept@.service): only NAME.socket and NAME.service are written,
	// and AcceptPort must be 0.
	NoAccept bool
	// NoSocket writes NAME.service alone, for a daemon that binds its own
	// socket: no NAME.socket and no Accept=yes pair (AcceptPort must be
	// 0), ExecStart= passes -listen HOST:PORT, and the master keeps the
	// socket in systemd's file descriptor store (FileDescriptorStoreMax=,
	// and Environment=FDSTORE= for systemd 252, see FDStoreMax), so that a
	// restart refuses no client.
	NoSocket bool
	// Host is the IP address a NoSocket service binds; "" means
	// DefaultHost. "::" is every address, IPv6 and IPv4. Without NoSocket
	// it must be "": NAME.socket listens on every address.
	Host string
	// Directives are the daemon's own settings, added to the units' sections
	// (see Directive), in this order: StateDirectory= for a daemon that
	// keeps files, Environment=, LimitNOFILE= ...
	Directives []Directive
	// DropIns are files written as NAME.service.d/NAME.conf and, with the
	// Accept=yes pair, NAME-accept@.service.d/NAME.conf (see DropIn).
	DropIns []DropIn
}

// Waiterd returns the parameters of waiterd's own units, those shipped in
// this directory: its .deb config has graceful_timeout 20 s, and the
// package ships waiterctl, which reloads.
func Waiterd() Params {
	return Params{
		Name:            "waiterd",
		Port:            config.DefaultPort,
		Description:     "waiter demo daemon",
		GracefulTimeout: 20 * time.Second,
		Waiterctl:       "/usr/bin/waiterctl",
	}
}

// ErrInvalid is wrapped by every error about a bad parameter.
var ErrInvalid = errors.New("units: invalid parameter")

// ParamError names the parameter that is wrong, its value and why.
type ParamError struct {
	Field  string // the Params field, e.g. "Port"
	Value  string
	Reason string
}

func (e *ParamError) Error() string {
	return fmt.Sprintf("units: %s %q: %s", e.Field, e.Value, e.Reason)
}

func (e *ParamError) Unwrap() error { return ErrInvalid }

var (
	nameRE = charset{first: "A-Za-z0-9_", rest: "A-Za-z0-9_.-"}
	// A path goes into ExecStart= unquoted: no space, no '%' (a specifier),
	// no '$' (a variable), no '\' or quotes.
	pathRE = charset{first: "/", rest: "A-Za-z0-9_.+@:,=/-"}
)

const maxName = 64

// FileNames returns the names of the units Generate writes for name with
// the Accept=yes pair and no drop-ins, in the order a reader wants them: the
// pool's socket and service, then the Accept=yes pair. Params.Files names
// every file of a Params.
func FileNames(name string) []string {
	return []string{name + ".socket", name + ".service", name + "-accept.socket", name + "-accept@.service"}
}

// Files returns the names of the files Generate writes for p, in the order
// a reader wants them: each service is followed by its drop-ins
// (NAME.service.d/FILE.conf, sorted as systemd reads them), the
// Accept=yes pair is left out with NoAccept, and NoSocket leaves
// NAME.service alone.
func (p Params) Files() []string {
	units := FileNames(p.Name)
	switch {
	case p.NoSocket:
		units = units[1:2]
	case p.NoAccept:
		units = units[:2]
	}
	var names []string
	for _, u := range units {
		names = append(names, u)
		if strings.HasSuffix(u, ".service") {
			for _, d := range dropInNames(p.DropIns) {
				names = append(names, u+".d/"+d)
			}
		}
	}
	return names
}

// templateOf names the template of each kind of unit file.
var templateOf = map[string]string{
	".socket": "socket.tmpl", ".service": "service.tmpl",
	"-accept.socket": "accept.socket.tmpl", "-accept@.service": "accept@.service.tmpl",
}

// Generate returns the unit files for p by file name (see Params.Files):
// NAME.socket, NAME.service and, unless NoAccept, NAME-accept.socket and
// NAME-accept@.service (with NoSocket, NAME.service only), then each drop-in under each service's NAME.d/,
// after filling in defaults and validating p. The error is a *ParamError.
func Generate(p Params) (map[string][]byte, error) {
	d, err := p.resolve()
	if err != nil {
		return nil, err
	}
	drop := map[string][]byte{}
	for _, di := range p.DropIns {
		drop[di.Name] = di.Content
	}
	names := p.Files()
	out := make(map[string][]byte, len(names))
	for _, name := range names {
		if _, file, ok := strings.Cut(name, ".service.d/"); ok {
			// Copied as it is, ending in a newline.
			b := append([]byte(nil), drop[file]...)
			if len(b) > 0 && b[len(b)-1] != '\n' {
				b = append(b, '\n')
			}
			out[name] = b
			continue
		}
		tmpl := templateOf[strings.TrimPrefix(name, p.Name)]
		var b bytes.Buffer
		if err := render(&b, tmpl, d.vars()); err != nil {
			// The templates are ours and fixed: this is a bug, not bad input.
			return nil, fmt.Errorf("units: template %s: %w", tmpl, err)
		}
		out[name] = b.Bytes()
	}
	return out, nil
}

// data is what the templates see: the parameters with defaults applied and
// durations written as systemd time spans.
type data struct {
	Params
	Desc     string
	Graceful string
	Margin   string
	Stop     string
	Watchdog string // "" when off
	// TimeoutStartSec= and waiterctl's -timeout, as spans.
	Start, ReloadTimeout string
	// Control is the control socket's path; NoWaiterctl is "yes" when
	// Waiterctl is "" (the templates have no {{else}}).
	Control, NoWaiterctl string
	// Socket is "yes" unless NoSocket; Listen is what a NoSocket service
	// binds (-listen), HOST:PORT.
	Socket, Listen string
	// The Directives of each section, as lines ("" for none).
	UnitExtra, ServiceExtra, SocketExtra string
}

// WithDefaults returns p with the defaults that Generate would apply filled
// in (Exec, Config, AcceptPort, ...), or the *ParamError Generate would
// return.
func (p Params) WithDefaults() (Params, error) {
	d, err := p.resolve()
	return d.Params, err
}

func (p Params) resolve() (data, error) {
	bad := func(field string, v any, reason string) (data, error) {
		return data{}, &ParamError{Field: field, Value: fmt.Sprint(v), Reason: reason}
	}
	switch {
	case p.Name == "":
		return bad("Name", p.Name, "required")
	case len(p.Name) > maxName:
		return bad("Name", p.Name, fmt.Sprintf("at most %d characters", maxName))
	case strings.Contains(p.Name, "@"):
		return bad("Name", p.Name, "'@' would make it a template unit name")
	case !nameRE.MatchString(p.Name):
		return bad("Name", p.Name, "want letters, digits, '_', '.' and '-', not starting with '.' or '-'")
	}
	if p.Port < 1 || p.Port > 65535 {
		return bad("Port", p.Port, "want a port number from 1 to 65535")
	}
	if p.NoSocket {
		if p.AcceptPort != 0 {
			return bad("AcceptPort", p.AcceptPort, "no Accept=yes pair to listen on it (NoSocket, -no-socket, writes NAME.service alone)")
		}
		p.NoAccept = true
		if p.Host == "" {
			p.Host = DefaultHost
		}
		// An address, not a name: the daemon resolves none at start.
		if ip := net.ParseIP(p.Host); ip == nil || strings.Contains(p.Host, "%") {
			return bad("Host", p.Host, "want an IP address, e.g. 127.0.0.1, 0.0.0.0 or :: (no name, no zone)")
		}
	} else if p.Host != "" {
		return bad("Host", p.Host, "NAME.socket listens on every address: Host is for NoSocket (-no-socket)")
	}
	if p.NoAccept {
		if p.AcceptPort != 0 {
			return bad("AcceptPort", p.AcceptPort, "no Accept=yes pair to listen on it (NoAccept, -accept=false)")
		}
	} else if p.AcceptPort == 0 {
		if p.Port == 65535 {
			return bad("AcceptPort", p.AcceptPort, "Port is 65535: set AcceptPort, Port+1 is no port")
		}
		p.AcceptPort = p.Port + 1
	}
	if !p.NoAccept && (p.AcceptPort < 1 || p.AcceptPort > 65535) {
		return bad("AcceptPort", p.AcceptPort, "want a port number from 1 to 65535")
	}
	if !p.NoAccept && p.AcceptPort == p.Port {
		return bad("AcceptPort", p.AcceptPort, "must differ from Port: two sockets cannot listen on one port")
	}
	if p.Exec == "" {
		p.Exec = "/usr/bin/" + p.Name
	}
	if p.Config == "" {
		p.Config = "/etc/" + p.Name + "/" + p.Name + ".yaml"
	}
	for _, f := range []struct{ field, v string }{{"Exec", p.Exec}, {"Config", p.Config}, {"Waiterctl", p.Waiterctl}} {
		switch {
		case f.field == "Waiterctl" && f.v == "":
			continue
		case f.field == "Waiterctl" && f.v == p.Exec:
			return bad(f.field, f.v, "is the daemon's Exec: want the path of waiterctl")
		case !strings.HasPrefix(f.v, "/"):
			return bad(f.field, f.v, "want an absolute path")
		case !pathRE.MatchString(f.v):
			return bad(f.field, f.v, "want only letters, digits and _ . + @ : , = / - (it goes unquoted into ExecStart=)")
		case path.Clean(f.v) != f.v || strings.HasSuffix(f.v, "/"):
			return bad(f.field, f.v, "want a clean path to a file (no //, /./, /../ or trailing /)")
		}
	}
	if p.Description == "" {
		p.Description = p.Name + ", a waiter daemon"
	}
	if strings.TrimSpace(p.Description) != p.Description {
		return bad("Description", p.Description, "leading or trailing space")
	}
	for _, r := range p.Description {
		if r < ' ' || r == 0x7f || r == '\\' {
			return bad("Description", p.Description, "want one line without control characters or '\\'")
		}
	}
	if p.GracefulTimeout == 0 {
		p.GracefulTimeout = config.DefaultGracefulTimeout.D()
	}
	if p.GracefulTimeout < time.Second || p.GracefulTimeout > time.Hour {
		return bad("GracefulTimeout", p.GracefulTimeout, "want 1s to 1h")
	}
	if p.StartTimeout == 0 {
		p.StartTimeout = DefaultStartTimeout
	}
	if p.StartTimeout < 2*ReloadMargin || p.StartTimeout > time.Hour {
		return bad("StartTimeout", p.StartTimeout, fmt.Sprintf("want %s to 1h (waiterctl's -timeout is %s less)", span(2*ReloadMargin), span(ReloadMargin)))
	}
	d := data{
		Desc:          strings.ReplaceAll(p.Description, "%", "%%"),
		Graceful:      span(p.GracefulTimeout),
		Margin:        span(StopMargin),
		Stop:          span(p.GracefulTimeout + StopMargin),
		Start:         span(p.StartTimeout),
		ReloadTimeout: span(p.StartTimeout - ReloadMargin),
		Control:       ControlSocket(p.Name),
		Socket:        "yes",
	}
	if p.NoSocket {
		d.Socket = ""
		d.Listen = net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
	}
	if p.Waiterctl == "" {
		d.NoWaiterctl = "yes"
	}
	switch {
	case p.Watchdog == 0:
		d.Watchdog = span(DefaultWatchdog)
	case p.Watchdog < 0:
	case p.Watchdog < time.Second || p.Watchdog > time.Hour:
		return bad("Watchdog", p.Watchdog, "want 1s to 1h, or a negative value for none")
	default:
		d.Watchdog = span(p.Watchdog)
	}
	for _, di := range p.Directives {
		if err := di.check(); err != nil {
			return data{}, err
		}
		if err := di.checkRuntime(p.Name, p.NoAccept); err != nil {
			return data{}, err
		}
		if p.NoSocket {
			if err := di.checkNoSocket(); err != nil {
				return data{}, err
			}
		}
	}
	d.UnitExtra = extra(p.Directives, "Unit", "unit")
	if s := extra(p.Directives, "Service", "service"); s != "" {
		d.ServiceExtra = "\n" + s
	}
	d.SocketExtra = extra(p.Directives, "Socket", "socket")
	seen := map[string]bool{}
	for _, di := range p.DropIns {
		if err := di.check(); err != nil {
			return data{}, err
		}
		if seen[di.Name] {
			return bad("DropIns", di.Name, "two drop-ins of this name")
		}
		seen[di.Name] = true
	}
	d.Params = p
	return d, nil
}

// span writes d as a systemd time span: whole seconds, or milliseconds.
func span(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}
