package units

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/waiter-go/waiter/config"
)

var update = flag.Bool("update", false, "rewrite waiterd's unit files in this directory from Generate(Waiterd())")

// The threshold the units must meet, on systemd-analyze's 0-10 scale: 2.0 is
// the top of its "OK" band.
const threshold = 2.0

// TestGolden keeps the unit files shipped in this directory exactly what
// Generate writes for waiterd. Run `go test ./units -run Golden -update`
// after changing a template.
func TestGolden(t *testing.T) {
	files, err := Generate(Waiterd())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range FileNames("waiterd") {
		want := files[name]
		if *update {
			if err := os.WriteFile(name, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		have, err := os.ReadFile(name)
		if err != nil {
			t.Fatalf("%v (run go test ./units -run Golden -update to write it)", err)
		}
		if !bytes.Equal(have, want) {
			t.Errorf("%s differs from Generate(Waiterd()) (go test ./units -run Golden -update rewrites it):\n%s", name, lineDiff(string(want), string(have)))
		}
	}
	// No stray unit file: whatever is here is generated.
	var stray []string
	for _, pat := range []string{"*.service", "*.socket"} {
		m, _ := filepath.Glob(pat)
		for _, f := range m {
			if _, ok := files[f]; !ok {
				stray = append(stray, f)
			}
		}
	}
	if len(stray) > 0 {
		t.Errorf("unit files that Generate does not write: %v", stray)
	}
}

// goldenCases are generated sets kept in testdata/NAME/, one per case, for
// the options waiterd's own units do not use. -update rewrites them too.
var goldenCases = map[string]Params{
	// A daemon that keeps state, needs the network up and reads a drop-in
	// of its own; with the Accept=yes pair, which gets the same settings,
	// and a waiterctl of its own package (build-deb.sh -waiterctl).
	"kvd": {
		Name: "kvd", Port: 7300, Description: "kvd key-value store", GracefulTimeout: 10 * time.Second,
		Waiterctl: "/usr/libexec/kvd/waiterctl",
		Directives: []Directive{
			{"Unit", "Wants", "network-online.target"},
			{"Unit", "After", "network-online.target"},
			{"Service", "StateDirectory", "kvd"},
			{"Service", "CacheDirectory", "kvd"},
			// Its own runtime directory, beside NAME.service's /run/kvd.
			{"Service", "RuntimeDirectory", "kvd-sockets"},
			{"Service", "Environment", "KVD_DATA=/var/lib/kvd"},
			{"Service", "LimitNOFILE", "65536"},
			{"Socket", "KeepAlive", "yes"},
		},
		DropIns: []DropIn{
			{"20-memory.conf", []byte("[Service]\nMemoryHigh=512M\nMemoryMax=1G\n")},
			{"10-network.conf", []byte("# kvd's hooks connect nowhere: no network but its sockets.\n[Service]\nPrivateNetwork=yes\n")},
		},
	},
	// Without the Accept=yes pair: two units, and port 65535 is allowed;
	// reloads with -check and kill -HUP; its own RuntimeDirectory=solo
	// repeats the generator's (systemd merges the two), and a longer start.
	"noaccept": {
		Name: "solo", Port: 65535, NoAccept: true, Watchdog: -1, StartTimeout: 2 * time.Minute,
		Directives: []Directive{{"Service", "LogsDirectory", "solo"}, {"Service", "RuntimeDirectory", "solo"}},
	},
	// NAME.service alone, binding every address itself, its socket kept in
	// systemd's fd store; with waiterctl, and a [Unit] directive of its own.
	"nosocket": {
		Name: "edge", Port: 7400, NoSocket: true, Host: "::", Description: "edge, binds its own socket",
		GracefulTimeout: 20 * time.Second, Waiterctl: "/usr/bin/waiterctl",
		Directives: []Directive{{"Unit", "After", "network.target"}},
	},
}

// TestGoldenCases keeps testdata/NAME/ exactly what Generate writes for
// goldenCases[NAME]; `go test ./units -run Golden -update` rewrites them.
func TestGoldenCases(t *testing.T) {
	for name, p := range goldenCases {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("testdata", name)
			files, err := Generate(p)
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range p.Files() {
				path := filepath.Join(dir, f)
				if *update {
					if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(path, files[f], 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				have, err := os.ReadFile(path)
				if err != nil {
					t.Errorf("%v (run go test ./units -run Golden -update to write it)", err)
					continue
				}
				if !bytes.Equal(have, files[f]) {
					t.Errorf("%s differs from Generate (go test ./units -run Golden -update rewrites it):\n%s", path, lineDiff(string(files[f]), string(have)))
				}
			}
			// Every file there is one that Generate writes.
			err = filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
				if err != nil || e.IsDir() {
					return err
				}
				rel, _ := filepath.Rel(dir, path)
				if _, ok := files[rel]; !ok {
					t.Errorf("%s: Generate does not write it", path)
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
}

// lineDiff names the first line where have departs from want.
func lineDiff(want, have string) string {
	w, h := strings.Split(want, "\n"), strings.Split(have, "\n")
	for i := 0; i < len(w) || i < len(h); i++ {
		var wl, hl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(h) {
			hl = h[i]
		}
		if wl != hl {
			return fmt.Sprintf("line %d:\n want %q\n have %q", i+1, wl, hl)
		}
	}
	return "(same lines)"
}

// TestWaiterdGracefulTimeout ties TimeoutStopSec= to the config the .deb
// installs: its graceful_timeout must be the one the units were made for.
func TestWaiterdGracefulTimeout(t *testing.T) {
	b, err := os.ReadFile("../packaging/waiterd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	v, ok := m["graceful_timeout"]
	if !ok {
		t.Fatal("packaging/waiterd.yaml sets no graceful_timeout; the units assume 20s")
	}
	d, err := config.ParseDuration(fmt.Sprint(v))
	if err != nil {
		t.Fatal(err)
	}
	if have, want := Waiterd().GracefulTimeout, d.D(); have != want {
		t.Errorf("Waiterd().GracefulTimeout is %s, packaging/waiterd.yaml has graceful_timeout %s: change one, then go test ./units -run Golden -update", have, want)
	}
}

// unitLines returns the non-comment lines of a unit file.
func unitLines(b []byte) []string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func hasLine(b []byte, line string) bool {
	for _, l := range unitLines(b) {
		if l == line {
			return true
		}
	}
	return false
}

func TestGenerateDefaults(t *testing.T) {
	files, err := Generate(Params{Name: "myd", Port: 7000})
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	want := append([]string(nil), FileNames("myd")...)
	sort.Strings(want)
	if fmt.Sprint(names) != fmt.Sprint(want) {
		t.Fatalf("files: want %v, have %v", want, names)
	}
	for _, c := range []struct{ file, line string }{
		{"myd.socket", "ListenStream=7000"},
		{"myd.socket", "FileDescriptorName=myd"},
		{"myd.service", "Description=myd, a waiter daemon"},
		{"myd.service", "Requires=myd.socket"},
		{"myd.service", "ExecStart=/usr/bin/myd -config /etc/myd/myd.yaml"},
		// No waiterctl: the file is checked, then the master signalled.
		{"myd.service", "ExecReload=/usr/bin/myd -check -config /etc/myd/myd.yaml"},
		{"myd.service", "ExecReload=/bin/kill -HUP $MAINPID"},
		// The control socket's directory, /run/myd.
		{"myd.service", "RuntimeDirectory=myd"},
		{"myd.service", "TimeoutStartSec=90s"},
		// waiter's default graceful_timeout (30s) plus StopMargin.
		{"myd.service", "TimeoutStopSec=35s"},
		{"myd.service", "WatchdogSec=10s"},
		{"myd.service", "KillMode=mixed"},
		{"myd.service", "Also=myd.socket"},
		// Port+1.
		{"myd-accept.socket", "ListenStream=7001"},
		{"myd-accept.socket", "Accept=yes"},
		{"myd-accept@.service", "ExecStart=/usr/bin/myd -config /etc/myd/myd.yaml"},
		{"myd-accept@.service", "StandardInput=null"},
	} {
		if !hasLine(files[c.file], c.line) {
			t.Errorf("%s: no line %q in:\n%s", c.file, c.line, files[c.file])
		}
	}
	// Socket activated: the service binds nothing and keeps no fd store
	// (see README.md: it Requires its socket).
	for _, f := range []string{"myd.service", "myd-accept@.service"} {
		for _, l := range unitLines(files[f]) {
			if strings.HasPrefix(l, "FileDescriptorStoreMax=") || strings.Contains(l, "FDSTORE") || strings.Contains(l, "-listen") {
				t.Errorf("%s: want no fd store or -listen, have %q", f, l)
			}
		}
	}
	// An Accept=yes instance has no control socket, and must not remove the
	// pool's directory when it ends; nor does it reload.
	for _, prefix := range []string{"RuntimeDirectory", "RuntimeDirectoryPreserve", "ExecReload"} {
		for _, f := range []string{"myd.service", "myd-accept@.service"} {
			for _, l := range unitLines(files[f]) {
				if strings.HasPrefix(l, prefix+"=") && (f == "myd-accept@.service" || prefix == "RuntimeDirectoryPreserve") {
					t.Errorf("%s: want no %s=, have %q", f, prefix, l)
				}
			}
		}
	}
	// One sandbox for both services: the accept instances are no less exposed.
	sandbox := func(b []byte) string {
		_, s, ok := strings.Cut(string(b), "# Sandbox.")
		if !ok {
			t.Fatal("no sandbox section")
		}
		s, _, _ = strings.Cut(s, "\n[")
		return s
	}
	if a, b := sandbox(files["myd.service"]), sandbox(files["myd-accept@.service"]); a != b {
		t.Errorf("the two services' sandboxes differ:\n%s", lineDiff(a, b))
	}
}

func TestGenerateOptions(t *testing.T) {
	for _, c := range []struct {
		name  string
		p     Params
		file  string
		want  []string // lines that must be there
		never []string // line prefixes that must not
	}{
		{
			// Every field set: nothing is derived from Name but the unit names.
			name: "all set",
			p: Params{Name: "my.d", Port: 80, AcceptPort: 8080, Exec: "/opt/my.d/bin/serve", Config: "/etc/my.d.yaml",
				Description: "My daemon", GracefulTimeout: 90 * time.Second, Watchdog: 2500 * time.Millisecond},
			file: "my.d.service",
			want: []string{"ExecStart=/opt/my.d/bin/serve -config /etc/my.d.yaml", "Description=My daemon",
				"TimeoutStopSec=95s", "WatchdogSec=2500ms", "Requires=my.d.socket"},
		},
		{
			name: "accept port", p: Params{Name: "a", Port: 80, AcceptPort: 8080}, file: "a-accept.socket",
			want: []string{"ListenStream=8080"},
		},
		{
			// A negative watchdog leaves WatchdogSec= out, and its comment.
			name: "no watchdog", p: Params{Name: "w", Port: 1, Watchdog: -1}, file: "w.service",
			never: []string{"WatchdogSec=", "# The master pings"},
		},
		{
			// '%' starts a specifier in Description=.
			name: "percent", p: Params{Name: "p", Port: 1, Description: "100% up"}, file: "p.service",
			want: []string{"Description=100%% up"},
		},
		{
			name: "sub-second graceful", p: Params{Name: "g", Port: 1, GracefulTimeout: 1500 * time.Millisecond}, file: "g.service",
			want: []string{"TimeoutStopSec=6500ms"},
		},
		{
			// waiterctl reloads, on the control socket in the service's
			// runtime directory, giving up ReloadMargin before systemd would.
			name: "waiterctl", p: Params{Name: "w.d", Port: 1, Waiterctl: "/usr/bin/waiterctl"}, file: "w.d.service",
			want:  []string{"ExecReload=/usr/bin/waiterctl -s /run/w.d/control -timeout 85s reload", "RuntimeDirectory=w.d", "TimeoutStartSec=90s"},
			never: []string{"ExecReload=/bin/kill", "ExecReload=/usr/bin/w.d ", "# The file is checked first"},
		},
		{
			name: "waiterctl, longer start", p: Params{Name: "w", Port: 1, Waiterctl: "/opt/w/ctl", StartTimeout: 3 * time.Minute}, file: "w.service",
			want: []string{"ExecReload=/opt/w/ctl -s /run/w/control -timeout 175s reload", "TimeoutStartSec=180s"},
		},
		{
			name: "sub-second start", p: Params{Name: "w", Port: 1, Waiterctl: "/usr/bin/waiterctl", StartTimeout: 20500 * time.Millisecond}, file: "w.service",
			want: []string{"ExecReload=/usr/bin/waiterctl -s /run/w/control -timeout 15500ms reload", "TimeoutStartSec=20500ms"},
		},
		{
			// Without waiterctl, no word of it in ExecReload=.
			name: "no waiterctl", p: Params{Name: "k", Port: 1}, file: "k.service",
			want:  []string{"ExecReload=/usr/bin/k -check -config /etc/k/k.yaml", "ExecReload=/bin/kill -HUP $MAINPID"},
			never: []string{"ExecReload=/usr/bin/waiterctl", "# waiterctl asks the master"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			files, err := Generate(c.p)
			if err != nil {
				t.Fatal(err)
			}
			b := files[c.file]
			if b == nil {
				t.Fatalf("no %s", c.file)
			}
			for _, l := range c.want {
				if !hasLine(b, l) {
					t.Errorf("no line %q in:\n%s", l, b)
				}
			}
			for _, p := range c.never {
				for _, l := range strings.Split(string(b), "\n") {
					if strings.HasPrefix(l, p) {
						t.Errorf("want no line starting %q, have %q", p, l)
					}
				}
			}
		})
	}
}

func TestGenerateInvalid(t *testing.T) {
	ok := Params{Name: "myd", Port: 7000}
	with := func(f func(*Params)) Params { p := ok; f(&p); return p }
	for _, c := range []struct {
		name  string
		p     Params
		field string
	}{
		{"no name", with(func(p *Params) { p.Name = "" }), "Name"},
		// '@' makes a template name: myd@.service, myd@.socket.
		{"at sign", with(func(p *Params) { p.Name = "my@d" }), "Name"},
		{"slash", with(func(p *Params) { p.Name = "my/d" }), "Name"},
		{"space", with(func(p *Params) { p.Name = "my d" }), "Name"},
		{"leading dash", with(func(p *Params) { p.Name = "-myd" }), "Name"},
		{"leading dot", with(func(p *Params) { p.Name = ".myd" }), "Name"},
		{"too long", with(func(p *Params) { p.Name = strings.Repeat("a", 65) }), "Name"},
		{"port 0", with(func(p *Params) { p.Port = 0 }), "Port"},
		{"port 65536", with(func(p *Params) { p.Port = 65536 }), "Port"},
		{"negative port", with(func(p *Params) { p.Port = -1 }), "Port"},
		// Port+1 would be 65536.
		{"port 65535, no accept port", with(func(p *Params) { p.Port = 65535 }), "AcceptPort"},
		{"accept port = port", with(func(p *Params) { p.AcceptPort = 7000 }), "AcceptPort"},
		{"accept port 70000", with(func(p *Params) { p.AcceptPort = 70000 }), "AcceptPort"},
		{"relative exec", with(func(p *Params) { p.Exec = "bin/myd" }), "Exec"},
		{"exec with space", with(func(p *Params) { p.Exec = "/usr/bin/my d" }), "Exec"},
		// '%' would be a specifier, '$' a variable.
		{"exec with percent", with(func(p *Params) { p.Exec = "/usr/bin/my%d" }), "Exec"},
		{"exec with dollar", with(func(p *Params) { p.Exec = "/usr/bin/$myd" }), "Exec"},
		{"exec with dot-dot", with(func(p *Params) { p.Exec = "/usr/../bin/myd" }), "Exec"},
		{"exec is a directory", with(func(p *Params) { p.Exec = "/usr/bin/" }), "Exec"},
		{"relative config", with(func(p *Params) { p.Config = "myd.yaml" }), "Config"},
		{"config with quote", with(func(p *Params) { p.Config = `/etc/"myd".yaml` }), "Config"},
		{"two-line description", with(func(p *Params) { p.Description = "my\nd" }), "Description"},
		// A trailing '\' would continue the line.
		{"backslash description", with(func(p *Params) { p.Description = `my d\` }), "Description"},
		{"padded description", with(func(p *Params) { p.Description = " myd" }), "Description"},
		{"graceful 500ms", with(func(p *Params) { p.GracefulTimeout = 500 * time.Millisecond }), "GracefulTimeout"},
		{"negative graceful", with(func(p *Params) { p.GracefulTimeout = -time.Second }), "GracefulTimeout"},
		{"graceful 2h", with(func(p *Params) { p.GracefulTimeout = 2 * time.Hour }), "GracefulTimeout"},
		{"watchdog 100ms", with(func(p *Params) { p.Watchdog = 100 * time.Millisecond }), "Watchdog"},
		{"relative waiterctl", with(func(p *Params) { p.Waiterctl = "waiterctl" }), "Waiterctl"},
		{"waiterctl with space", with(func(p *Params) { p.Waiterctl = "/usr/bin/waiter ctl" }), "Waiterctl"},
		{"waiterctl is a directory", with(func(p *Params) { p.Waiterctl = "/usr/bin/" }), "Waiterctl"},
		// A mix-up of -exec and -waiterctl: the daemon has no reload command.
		{"waiterctl is the daemon", with(func(p *Params) { p.Waiterctl = "/usr/bin/myd" }), "Waiterctl"},
		// waiterctl's -timeout would be under ReloadMargin.
		{"start timeout 5s", with(func(p *Params) { p.StartTimeout = 5 * time.Second }), "StartTimeout"},
		{"negative start timeout", with(func(p *Params) { p.StartTimeout = -time.Second }), "StartTimeout"},
		{"start timeout 2h", with(func(p *Params) { p.StartTimeout = 2 * time.Hour }), "StartTimeout"},
		{"start timeout as a directive", with(func(p *Params) { p.Directives = []Directive{{"Service", "TimeoutStartSec", "30"}} }), "Directives"},
		// It would reset the list, the control socket's directory with it.
		{"empty runtime directory", with(func(p *Params) { p.Directives = []Directive{{"Service", "RuntimeDirectory", ""}} }), "Directives"},
		// An Accept=yes instance ending would remove /run/myd under the master.
		{"the pool's runtime directory with the accept pair", with(func(p *Params) {
			p.Directives = []Directive{{"Service", "RuntimeDirectory", "other myd"}}
		}), "Directives"},
		{"under the pool's runtime directory with the accept pair", with(func(p *Params) {
			p.Directives = []Directive{{"Service", "RuntimeDirectory", "myd/sub"}}
		}), "Directives"},
		{"the pool's runtime directory linked", with(func(p *Params) {
			p.Directives = []Directive{{"Service", "RuntimeDirectory", "myd:myd-link"}}
		}), "Directives"},
		{"accept port without accept pair", with(func(p *Params) { p.NoAccept, p.AcceptPort = true, 7001 }), "AcceptPort"},
		// NoSocket writes NAME.service alone.
		{"accept port without a socket", with(func(p *Params) { p.NoSocket, p.AcceptPort = true, 7001 }), "AcceptPort"},
		// NAME.socket listens on every address: a host would be ignored.
		{"host with the socket", with(func(p *Params) { p.Host = "127.0.0.1" }), "Host"},
		// The daemon resolves no name at start.
		{"host name", with(func(p *Params) { p.NoSocket, p.Host = true, "localhost" }), "Host"},
		{"host with a port", with(func(p *Params) { p.NoSocket, p.Host = true, "127.0.0.1:80" }), "Host"},
		{"host with a zone", with(func(p *Params) { p.NoSocket, p.Host = true, "fe80::1%eth0" }), "Host"},
		{"host in brackets", with(func(p *Params) { p.NoSocket, p.Host = true, "[::1]" }), "Host"},
		{"socket directive without a socket", with(func(p *Params) {
			p.NoSocket, p.Directives = true, []Directive{{"Socket", "KeepAlive", "yes"}}
		}), "Directives"},
		// The store's size and $FDSTORE must agree: the generator sets both.
		{"fd store size without a socket", with(func(p *Params) {
			p.NoSocket, p.Directives = true, []Directive{{"Service", "FileDescriptorStoreMax", "16"}}
		}), "Directives"},
		{"FDSTORE without a socket", with(func(p *Params) {
			p.NoSocket, p.Directives = true, []Directive{{"Service", "Environment", "A=1 \"FDSTORE=0\""}}
		}), "Directives"},
		{"directive in no section", with(func(p *Params) { p.Directives = []Directive{{"", "StateDirectory", "x"}} }), "Directives"},
		{"directive with a newline", with(func(p *Params) { p.Directives = []Directive{{"Service", "Environment", "A=1\nUser=root"}} }), "Directives"},
		{"directive the generator owns", with(func(p *Params) { p.Directives = []Directive{{"Service", "ExecStart", "/bin/sh"}} }), "Directives"},
		{"absolute state directory", with(func(p *Params) { p.Directives = []Directive{{"Service", "StateDirectory", "/var"}} }), "Directives"},
		{"drop-in name", with(func(p *Params) { p.DropIns = []DropIn{{"x", []byte("[Service]\nA=1\n")}} }), "DropIns"},
		{"drop-in content", with(func(p *Params) { p.DropIns = []DropIn{{"x.conf", []byte("A=1\n")}} }), "DropIns"},
		{"two drop-ins of one name", with(func(p *Params) {
			p.DropIns = []DropIn{{"x.conf", []byte("[Service]\nA=1\n")}, {"x.conf", []byte("[Service]\nB=1\n")}}
		}), "DropIns"},
	} {
		t.Run(c.name, func(t *testing.T) {
			files, err := Generate(c.p)
			if err == nil {
				t.Fatalf("want an error about %s, have none and %d files", c.field, len(files))
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("want errors.Is(err, ErrInvalid), have %v", err)
			}
			var pe *ParamError
			if !errors.As(err, &pe) || pe.Field != c.field {
				t.Errorf("want a *ParamError for %s, have %#v (%v)", c.field, pe, err)
			}
			if files != nil {
				t.Errorf("want no files with an error, have %d", len(files))
			}
		})
	}
	if _, err := Generate(ok); err != nil {
		t.Errorf("the base case must be valid: %v", err)
	}
}

// needAnalyzer skips a test when systemd-analyze is missing, except in CI
// (CI=true), where its absence is a broken setup: tests/deps.sh installs it.
func needAnalyzer(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("systemd-analyze is not installed and CI=true: run tests/deps.sh (%v)", err)
		}
		t.Skipf("systemd-analyze is not installed (package systemd): %v", err)
	}
}

// analyze runs Analyze with a deadline and checks that the units are clean:
// verify prints nothing, and every service is rated at most threshold.
func analyze(t *testing.T, what string, files map[string][]byte, programs ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := Analyze(ctx, files, threshold, programs...)
	if a != nil {
		for _, s := range sortedKeys(a.Exposure) {
			t.Logf("%s: systemd-analyze security rates %s %.1f", what, s, a.Exposure[s])
		}
	}
	if err != nil {
		msg := ""
		if a != nil {
			msg = a.Complaints
		}
		t.Fatalf("%s: %v\n%s", what, err, msg)
	}
	if a.Complaints != "" {
		t.Errorf("%s: systemd-analyze printed on stderr:\n%s", what, a.Complaints)
	}
	var services []string
	for n := range files {
		if strings.HasSuffix(n, ".service") {
			services = append(services, n)
		}
	}
	if len(a.Exposure) != len(services) {
		t.Errorf("%s: rated %v, want every service of %v", what, sortedKeys(a.Exposure), services)
	}
}

func sortedKeys(m map[string]float64) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// TestAnalyzeWaiterd checks the files shipped in this directory, as they are
// on disk, with systemd-analyze verify and security.
func TestAnalyzeWaiterd(t *testing.T) {
	needAnalyzer(t)
	files := map[string][]byte{}
	for _, name := range FileNames("waiterd") {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	p, err := Waiterd().WithDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if p.Waiterctl == "" {
		t.Fatal("waiterd's units reload without waiterctl; its package ships it")
	}
	analyze(t, "waiterd", files, p.Exec, p.Waiterctl)
}

func TestAnalyzeGenerated(t *testing.T) {
	needAnalyzer(t)
	files, err := Generate(Params{Name: "myd", Port: 7000, Exec: "/opt/myd/bin/myd", Watchdog: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	analyze(t, "myd", files, "/opt/myd/bin/myd")
	// With waiterctl, which has the same base name as nothing here but
	// must be stood in for all the same; the daemon's "" is skipped.
	files, err = Generate(Params{Name: "myd", Port: 7000, Exec: "/opt/myd/bin/myd", Waiterctl: "/opt/myd/bin/waiterctl"})
	if err != nil {
		t.Fatal(err)
	}
	analyze(t, "myd with waiterctl", files, "/opt/myd/bin/myd", "", "/opt/myd/bin/waiterctl")
}

// TestAnalyzeCatches shows that Analyze fails units that are wrong or
// exposed, so that the passing tests above mean something.
func TestAnalyzeCatches(t *testing.T) {
	needAnalyzer(t)
	good, err := Generate(Params{Name: "bad", Port: 7000})
	if err != nil {
		t.Fatal(err)
	}
	clone := func() map[string][]byte {
		m := map[string][]byte{}
		for k, v := range good {
			m[k] = v
		}
		return m
	}
	copyWith := func(name, old, new string) map[string][]byte {
		m := clone()
		if !bytes.Contains(m[name], []byte(old)) {
			t.Fatalf("%s has no %q", name, old)
		}
		m[name] = bytes.Replace(m[name], []byte(old), []byte(new), 1)
		return m
	}
	for _, c := range []struct {
		name  string
		files map[string][]byte
		want  error
		say   string // in Complaints
	}{
		{"unknown key", copyWith("bad.service", "KillMode=mixed", "KillMode=mixed\nKilMode=mixed"), ErrVerify, "KilMode"},
		// A drop-in is read with its unit.
		{"unknown key in a drop-in", func() map[string][]byte {
			m := clone()
			m["bad.service.d/x.conf"] = []byte("[Service]\nStateDirectroy=bad\n")
			return m
		}(), ErrVerify, "StateDirectroy"},
		{"missing socket", func() map[string][]byte { m := clone(); delete(m, "bad.socket"); return m }(), ErrVerify, "bad.socket"},
		// ExecStart= names a binary other than the daemon's: no stand-in.
		{"missing binary", copyWith("bad-accept@.service", "ExecStart=/usr/bin/bad ", "ExecStart=/nonexistent/bad "), ErrVerify, "/nonexistent/bad"},
		// ExecReload= runs a waiterctl that Analyze was not told of.
		{"missing waiterctl", copyWith("bad.service", "ExecReload=/usr/bin/bad -check -config /etc/bad/bad.yaml\nExecReload=/bin/kill -HUP $MAINPID",
			"ExecReload=/nonexistent/waiterctl -s /run/bad/control reload"), ErrVerify, "/nonexistent/waiterctl"},
		{"no sandbox", func() map[string][]byte {
			m := clone()
			s := string(m["bad.service"])
			i, j := strings.Index(s, "# Sandbox."), strings.Index(s, "[Install]")
			if i < 0 || j < i {
				t.Fatalf("no sandbox section in:\n%s", s)
			}
			m["bad.service"] = []byte(s[:i] + s[j:])
			return m
		}(), ErrExposure, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			a, err := Analyze(ctx, c.files, threshold, "/usr/bin/bad")
			if !errors.Is(err, c.want) {
				t.Fatalf("want %v, have %v", c.want, err)
			}
			if !strings.Contains(a.Complaints, c.say) {
				t.Errorf("want complaints naming %q, have:\n%s", c.say, a.Complaints)
			}
			if c.want == ErrExposure {
				t.Logf("bad.service without its sandbox: %.1f", a.Exposure["bad.service"])
				if len(a.Over) != 1 || a.Over[0] != "bad.service" {
					t.Errorf("want Over [bad.service], have %v", a.Over)
				}
			}
		})
	}
}

// TestAnalyzeGoldenCases: systemd-analyze verify is silent on every golden
// case (drop-ins included: it reads them beside their units), and the
// daemon's own settings keep the services within the threshold.
func TestAnalyzeGoldenCases(t *testing.T) {
	needAnalyzer(t)
	for name, p := range goldenCases {
		files, err := Generate(p)
		if err != nil {
			t.Fatal(err)
		}
		p, err := p.WithDefaults()
		if err != nil {
			t.Fatal(err)
		}
		analyze(t, name, files, p.Exec, p.Waiterctl)
	}
}

// sectionOf returns the section of the first line of b that is line, or ""
// when there is none.
func sectionOf(b []byte, line string) string {
	section := ""
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "[") {
			section = strings.Trim(l, "[]")
		} else if l == line {
			return section
		}
	}
	return ""
}

func TestGenerateDirectives(t *testing.T) {
	p := Params{Name: "myd", Port: 7000, Directives: []Directive{
		{"Service", "StateDirectory", "myd"},
		{"Service", "SystemCallFilter", "@resources"},
		{"Unit", "After", "postgresql.service"},
		{"Socket", "BindIPv6Only", "both"},
	}}
	files, err := Generate(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ line, section string }{
		{"StateDirectory=myd", "Service"},
		{"SystemCallFilter=@resources", "Service"},
		{"After=postgresql.service", "Unit"},
	} {
		for _, f := range []string{"myd.service", "myd-accept@.service"} {
			if s := sectionOf(files[f], c.line); s != c.section {
				t.Errorf("%s: want %q in [%s], have it in [%s]:\n%s", f, c.line, c.section, s, files[f])
			}
		}
		for _, f := range []string{"myd.socket", "myd-accept.socket"} {
			if hasLine(files[f], c.line) {
				t.Errorf("%s: a service's %q in a socket", f, c.line)
			}
		}
	}
	for _, f := range []string{"myd.socket", "myd-accept.socket"} {
		if s := sectionOf(files[f], "BindIPv6Only=both"); s != "Socket" {
			t.Errorf("%s: want BindIPv6Only=both in [Socket], have [%s]", f, s)
		}
	}
	// After the generator's own lines, so that a single-valued setting
	// overrides them, and in the given order.
	s := string(files["myd.service"])
	if i, j, k := strings.Index(s, "\nSystemCallErrorNumber="), strings.Index(s, "\nStateDirectory="), strings.Index(s, "\nSystemCallFilter=@resources"); !(i < j && j < k) {
		t.Errorf("myd.service: want the directives after the sandbox, in order:\n%s", s)
	}
	// Nothing else changed: without its directive lines (and their
	// comment), each file is the one without directives.
	plain, err := Generate(Params{Name: "myd", Port: 7000})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		var kept []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "# This daemon's own settings") {
				continue
			}
			own := false
			for _, d := range p.Directives {
				own = own || l == d.String()
			}
			if !own {
				kept = append(kept, l)
			}
		}
		have := strings.Join(kept, "\n")
		if name == "myd.service" || name == "myd-accept@.service" {
			// The blank line before the service's own settings.
			have = strings.Replace(have, "SystemCallErrorNumber=EPERM\n\n", "SystemCallErrorNumber=EPERM\n", 1)
		}
		if want := string(plain[name]); have != want {
			t.Errorf("%s: more than the directives changed:\n%s", name, lineDiff(want, have))
		}
	}
}

func TestGenerateNoAccept(t *testing.T) {
	p := Params{Name: "myd", Port: 7000, NoAccept: true}
	files, err := Generate(p)
	if err != nil {
		t.Fatal(err)
	}
	if have, want := sortedNames(files), "[myd.service myd.socket]"; have != want {
		t.Errorf("NoAccept: want files %s, have %s", want, have)
	}
	if fmt.Sprint(p.Files()) != "[myd.socket myd.service]" {
		t.Errorf("Files(): %v", p.Files())
	}
	// The pool's units are those of the full set.
	all, err := Generate(Params{Name: "myd", Port: 7000})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if !bytes.Equal(b, all[name]) {
			t.Errorf("%s differs with NoAccept:\n%s", name, lineDiff(string(all[name]), string(b)))
		}
	}
	if d, err := p.WithDefaults(); err != nil || d.AcceptPort != 0 {
		t.Errorf("NoAccept: want AcceptPort 0 after defaults, have %d (%v)", d.AcceptPort, err)
	}
}

// TestGenerateNoSocket: NAME.service alone, which binds HOST:PORT itself
// and keeps the socket in the fd store, and is otherwise the
// socket-activated service: the same reload, runtime directory, watchdog,
// stop and sandbox.
func TestGenerateNoSocket(t *testing.T) {
	for _, c := range []struct {
		name   string
		p      Params
		listen string
	}{
		{"default host", Params{Name: "myd", Port: 7000, NoSocket: true, Waiterctl: "/usr/bin/waiterctl"}, "127.0.0.1:7000"},
		// -accept=false as well changes nothing.
		{"every address", Params{Name: "myd", Port: 7000, NoSocket: true, NoAccept: true, Host: "::", Waiterctl: "/usr/bin/waiterctl"}, "[::]:7000"},
		{"IPv4", Params{Name: "myd", Port: 7000, NoSocket: true, Host: "0.0.0.0", Waiterctl: "/usr/bin/waiterctl"}, "0.0.0.0:7000"},
	} {
		t.Run(c.name, func(t *testing.T) {
			files, err := Generate(c.p)
			if err != nil {
				t.Fatal(err)
			}
			if have := sortedNames(files); have != "[myd.service]" {
				t.Fatalf("want myd.service alone, have %s", have)
			}
			if have := fmt.Sprint(c.p.Files()); have != "[myd.service]" {
				t.Errorf("Files(): %s", have)
			}
			b := files["myd.service"]
			for _, l := range []string{
				"ExecStart=/usr/bin/myd -config /etc/myd/myd.yaml -listen " + c.listen,
				fmt.Sprintf("FileDescriptorStoreMax=%d", FDStoreMax),
				// systemd 252 does not pass $FDSTORE: the unit does.
				fmt.Sprintf("Environment=FDSTORE=%d", FDStoreMax),
				"ExecReload=/usr/bin/waiterctl -s /run/myd/control -timeout 85s reload",
				"RuntimeDirectory=myd",
				"WatchdogSec=10s",
				"WantedBy=multi-user.target",
			} {
				if sectionOf(b, l) == "" {
					t.Errorf("no line %q in:\n%s", l, b)
				}
			}
			// The same as the socket-activated service but for the socket
			// and the store.
			p := c.p
			p.NoSocket, p.Host = false, ""
			sock, err := Generate(p)
			if err != nil {
				t.Fatal(err)
			}
			var have, want []string
			for _, l := range unitLines(b) {
				switch {
				case strings.HasPrefix(l, "ExecStart="):
					l = strings.TrimSuffix(l, " -listen "+c.listen)
				case strings.HasPrefix(l, "FileDescriptorStoreMax="), strings.HasPrefix(l, "Environment=FDSTORE="):
					continue
				}
				have = append(have, l)
			}
			for _, l := range unitLines(sock["myd.service"]) {
				switch {
				case l == "Requires=myd.socket", l == "After=myd.socket", l == "Also=myd.socket",
					// The socket's start limit: its queued clients would
					// trip systemd's. Without a socket the default holds.
					l == "StartLimitIntervalSec=0":
					continue
				}
				want = append(want, l)
			}
			if a, b := strings.Join(want, "\n"), strings.Join(have, "\n"); a != b {
				t.Errorf("more than the socket and the store differ from the socket-activated service:\n%s", lineDiff(a, b))
			}
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "myd.socket") && !strings.HasPrefix(l, "#") {
					t.Errorf("a line naming myd.socket: %q", l)
				}
			}
			d, err := c.p.WithDefaults()
			if err != nil || !d.NoAccept || d.AcceptPort != 0 || d.Host == "" {
				t.Errorf("WithDefaults: NoAccept %v, AcceptPort %d, Host %q (%v): want true, 0 and the host", d.NoAccept, d.AcceptPort, d.Host, err)
			}
		})
	}
}

// TestGenerateNoSocketDirectives: the services' directives and drop-ins go
// to NAME.service as usual; a RuntimeDirectory= of NAME is allowed (there
// are no instances to remove it).
func TestGenerateNoSocketDirectives(t *testing.T) {
	p := Params{Name: "myd", Port: 7000, NoSocket: true,
		Directives: []Directive{{"Service", "RuntimeDirectory", "myd/sub"}, {"Service", "Environment", "A=1"}, {"Unit", "After", "network.target"}},
		DropIns:    []DropIn{{"x.conf", []byte("[Service]\nLimitNOFILE=4096\n")}}}
	files, err := Generate(p)
	if err != nil {
		t.Fatal(err)
	}
	if have := sortedNames(files); have != "[myd.service myd.service.d/x.conf]" {
		t.Errorf("files: %s", have)
	}
	for _, c := range []struct{ line, section string }{
		{"RuntimeDirectory=myd/sub", "Service"}, {"Environment=A=1", "Service"}, {"After=network.target", "Unit"},
	} {
		if s := sectionOf(files["myd.service"], c.line); s != c.section {
			t.Errorf("want %q in [%s], have [%s]", c.line, c.section, s)
		}
	}
}

// TestGenerateRuntimeDirectory: the daemon's own RuntimeDirectory= goes
// with the generator's, which stays first (the master takes the first of
// $RUNTIME_DIRECTORY's list for its control socket) and only in NAME.service.
func TestGenerateRuntimeDirectory(t *testing.T) {
	for _, c := range []struct {
		name     string
		p        Params
		pool     []string // NAME.service's RuntimeDirectory= lines, in order
		instance []string // NAME-accept@.service's
	}{
		{
			name: "none of its own",
			p:    Params{Name: "myd", Port: 7000},
			pool: []string{"RuntimeDirectory=myd"},
		},
		{
			// Its own directories on both services, as every directive.
			name:     "its own",
			p:        Params{Name: "myd", Port: 7000, Directives: []Directive{{"Service", "RuntimeDirectory", "myd-sockets myd-x/y"}}},
			pool:     []string{"RuntimeDirectory=myd", "RuntimeDirectory=myd-sockets myd-x/y"},
			instance: []string{"RuntimeDirectory=myd-sockets myd-x/y"},
		},
		{
			// With one service only, repeating the generator's is allowed:
			// systemd merges a directory listed twice.
			name: "the same, without the accept pair",
			p:    Params{Name: "myd", Port: 7000, NoAccept: true, Directives: []Directive{{"Service", "RuntimeDirectory", "myd myd/sub"}}},
			pool: []string{"RuntimeDirectory=myd", "RuntimeDirectory=myd myd/sub"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			files, err := Generate(c.p)
			if err != nil {
				t.Fatal(err)
			}
			lines := func(f string) []string {
				var out []string
				for _, l := range unitLines(files[f]) {
					if strings.HasPrefix(l, "RuntimeDirectory") {
						out = append(out, l)
					}
				}
				return out
			}
			if have := lines("myd.service"); fmt.Sprint(have) != fmt.Sprint(c.pool) {
				t.Errorf("myd.service: want %q, have %q", c.pool, have)
			}
			if have := lines("myd-accept@.service"); fmt.Sprint(have) != fmt.Sprint(c.instance) {
				t.Errorf("myd-accept@.service: want %q, have %q", c.instance, have)
			}
		})
	}
}

func sortedNames(files map[string][]byte) string {
	var n []string
	for k := range files {
		n = append(n, k)
	}
	sort.Strings(n)
	return fmt.Sprint(n)
}

func TestGenerateDropIns(t *testing.T) {
	p := Params{Name: "myd", Port: 7000, DropIns: []DropIn{
		{"b.conf", []byte("[Service]\nLimitNOFILE=4096")}, // no final newline
		{"a.conf", []byte("[Unit]\nAfter=x.service\n")},
	}}
	files, err := Generate(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"myd.socket", "myd.service", "myd.service.d/a.conf", "myd.service.d/b.conf",
		"myd-accept.socket", "myd-accept@.service", "myd-accept@.service.d/a.conf", "myd-accept@.service.d/b.conf"}
	if fmt.Sprint(p.Files()) != fmt.Sprint(want) {
		t.Errorf("Files():\nwant %v\nhave %v", want, p.Files())
	}
	if len(files) != len(want) {
		t.Errorf("want %d files, have %s", len(want), sortedNames(files))
	}
	for _, svc := range []string{"myd.service", "myd-accept@.service"} {
		if have := string(files[svc+".d/b.conf"]); have != "[Service]\nLimitNOFILE=4096\n" {
			t.Errorf("%s.d/b.conf: %q", svc, have)
		}
		if have := string(files[svc+".d/a.conf"]); have != "[Unit]\nAfter=x.service\n" {
			t.Errorf("%s.d/a.conf: %q", svc, have)
		}
	}
	// NoAccept: the pool's service only.
	p.NoAccept = true
	files, err = Generate(p)
	if err != nil {
		t.Fatal(err)
	}
	if have := sortedNames(files); have != "[myd.service myd.service.d/a.conf myd.service.d/b.conf myd.socket]" {
		t.Errorf("NoAccept with drop-ins: %s", have)
	}
}

func TestParseDirective(t *testing.T) {
	for _, c := range []struct {
		section, in string
		want        Directive
	}{
		{"Service", "StateDirectory=kvd", Directive{"Service", "StateDirectory", "kvd"}},
		// systemd's own parsing trims around '=' and the value.
		{"Service", " Environment = A=1 B=2 ", Directive{"Service", "Environment", "A=1 B=2"}},
		// An empty value resets a list.
		{"Service", "SystemCallFilter=", Directive{"Service", "SystemCallFilter", ""}},
		{"Service", "StateDirectory=kvd kvd/db:kvd-db", Directive{"Service", "StateDirectory", "kvd kvd/db:kvd-db"}},
		{"Unit", "After=network-online.target", Directive{"Unit", "After", "network-online.target"}},
		{"Socket", "KeepAlive=yes", Directive{"Socket", "KeepAlive", "yes"}},
		// Specifiers are the user's to use, outside directory settings.
		{"Service", "Environment=HOME=%S/kvd", Directive{"Service", "Environment", "HOME=%S/kvd"}},
	} {
		d, err := ParseDirective(c.section, c.in)
		if err != nil || d != c.want {
			t.Errorf("ParseDirective(%q, %q) = %#v, %v; want %#v", c.section, c.in, d, err, c.want)
		}
	}
	for _, c := range []struct{ section, in, say string }{
		{"Install", "WantedBy=x.target", "unknown section"},
		{"service", "StateDirectory=kvd", "unknown section"},
		{"Service", "StateDirectory", "want Key=Value"},
		{"Service", "=kvd", "no key"},
		{"Service", "State Directory=kvd", "a key of letters and digits"},
		{"Service", "Environment=A=1\nExecStartPre=/bin/evil", "newline"},
		{"Service", "Environment=A=1\rB", "newline"},
		{"Service", "Environment=A=\x1b[1m", "control character"},
		{"Service", `Environment=A=1 \`, "continue the line"},
		{"Service", "Environment=\xff", "UTF-8"},
		{"Service", "ExecStart=/bin/sh", "-exec"},
		{"Service", "Type=simple", "Type=notify"},
		{"Service", "KillMode=process", "KillMode=mixed"},
		{"Service", "TimeoutStopSec=5", "-graceful-timeout"},
		{"Service", "TimeoutStartSec=5", "-start-timeout"},
		{"Service", "TimeoutSec=5", "-start-timeout and -graceful-timeout"},
		{"Service", "ExecReload=/bin/true", "-waiterctl"},
		{"Service", "WatchdogSec=0", "-watchdog"},
		{"Unit", "Description=x", "-description"},
		{"Socket", "Accept=yes", "-accept=false"},
		{"Socket", "ListenStream=80", "-port"},
		// The package's purge removes these directories: they must be
		// plain relative paths.
		{"Service", "StateDirectory=/var/lib/kvd", "relative"},
		{"Service", "StateDirectory=../../etc", `"../../etc"`},
		{"Service", "StateDirectory=kvd/../..", "clean path"},
		{"Service", "CacheDirectory=kvd/", "clean path"},
		{"Service", "LogsDirectory=%N", "no specifiers"},
		{"Service", "StateDirectory=a:b:c", "DIR:LINK"},
		{"Service", "StateDirectory=kvd:/tmp/x", "relative"},
	} {
		_, err := ParseDirective(c.section, c.in)
		var pe *ParamError
		if !errors.As(err, &pe) || pe.Field != "Directives" || !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseDirective(%q, %q): want a *ParamError for Directives, have %v", c.section, c.in, err)
			continue
		}
		if !strings.Contains(err.Error(), c.say) {
			t.Errorf("ParseDirective(%q, %q): want an error saying %q, have %v", c.section, c.in, c.say, err)
		}
	}
}

func TestParseDropIn(t *testing.T) {
	for _, c := range []struct{ name, content string }{
		{"limits.conf", "[Service]\nLimitNOFILE=65536\n"},
		{"10-x.conf", "# a comment\n; another\n\n[Unit]\nAfter=x.service\n[Service]\nEnvironment=A=1 \\\n  B=2\n[Install]\nAlias=y.service\n"},
		{"crlf.conf", "[Service]\r\nLimitNOFILE=1\r\n"},
		{"x.conf", "[X-Mine]\nAnything=goes\n"},
		// Resetting and replacing ExecStart= is what drop-ins are for.
		{"exec.conf", "[Service]\nExecStart=\nExecStart=/usr/bin/myd -config /etc/myd/other.yaml\n"},
	} {
		if _, err := ParseDropIn(c.name, []byte(c.content)); err != nil {
			t.Errorf("ParseDropIn(%q, %q): %v", c.name, c.content, err)
		}
	}
	for _, c := range []struct{ name, content, say string }{
		{"limits", "[Service]\nLimitNOFILE=1\n", "ending in .conf"},
		{".conf", "[Service]\nLimitNOFILE=1\n", "ending in .conf"},
		{"../x.conf", "[Service]\nLimitNOFILE=1\n", "letters, digits"},
		{".hidden.conf", "[Service]\nLimitNOFILE=1\n", "letters, digits"},
		{"a b.conf", "[Service]\nLimitNOFILE=1\n", "letters, digits"},
		{"x.conf", "", "no Key=Value"},
		{"x.conf", "# only a comment\n[Service]\n", "no Key=Value"},
		{"x.conf", "LimitNOFILE=1\n", "before any [Section]"},
		{"x.conf", "[Socket]\nBacklog=1\n", "[Socket]: want a section of a service"},
		{"x.conf", "[Service\nLimitNOFILE=1\n", "want [Section]"},
		{"x.conf", "[Service]\nLimitNOFILE\n", "line 2"},
		{"x.conf", "[Service]\n=1\n", "no key"},
		{"x.conf", "[Service]\nEnvironment=A=1 \\", "continues into no line"},
		{"x.conf", "[Service]\nEnvironment=A=\x07\n", "control character"},
		{"x.conf", "[Service]\nStateDirectory=/var/lib/x\n", "relative"},
		{"x.conf", "[Service]\nLimitNOFILE=1\x00\n", "NUL"},
		{"x.conf", "[Service]\nLimitNOFILE=\xff\n", "UTF-8"},
	} {
		_, err := ParseDropIn(c.name, []byte(c.content))
		var pe *ParamError
		if !errors.As(err, &pe) || pe.Field != "DropIns" {
			t.Errorf("ParseDropIn(%q, %q): want a *ParamError for DropIns, have %v", c.name, c.content, err)
			continue
		}
		if !strings.Contains(err.Error(), c.say) {
			t.Errorf("ParseDropIn(%q, %q): want an error saying %q, have %v", c.name, c.content, c.say, err)
		}
	}
}
