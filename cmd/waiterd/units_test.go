package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/waiter-go/waiter/units"
)

// runUnits runs `waiterd units ARGS` and returns its exit code and output.
func runUnits(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = unitsMain(args, &o, &e)
	return code, o.String(), e.String()
}

func TestUnitsWritesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "dir") // created by -out
	code, stdout, stderr := runUnits("-name", "myd", "-port", "7000", "-exec", "/opt/myd/myd", "-out", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if stdout != "" {
		t.Errorf("want nothing on stdout with -out DIR, have %q", stdout)
	}
	want, err := units.Generate(units.Params{Name: "myd", Port: 7000, Exec: "/opt/myd/myd"})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		t.Errorf("want %d files in %s, have %d", len(want), dir, len(entries))
	}
	for name, w := range want {
		have, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Error(err)
			continue
		}
		if !bytes.Equal(have, w) {
			t.Errorf("%s: not what units.Generate writes:\nwant:\n%s\nhave:\n%s", name, w, have)
		}
		if !strings.Contains(stderr, "wrote "+filepath.Join(dir, name)) {
			t.Errorf("stderr does not say it wrote %s: %q", name, stderr)
		}
	}
}

// TestUnitsWaiterd: the command with waiterd's settings writes exactly the
// units shipped in units/.
func TestUnitsWaiterd(t *testing.T) {
	p := units.Waiterd()
	dir := t.TempDir()
	code, _, stderr := runUnits("-name", p.Name, "-port", strconv.Itoa(p.Port), "-description", p.Description,
		"-graceful-timeout", p.GracefulTimeout.String(), "-waiterctl", p.Waiterctl, "-out", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, name := range units.FileNames("waiterd") {
		want, err := os.ReadFile(filepath.Join("..", "..", "units", name))
		if err != nil {
			t.Fatal(err)
		}
		have, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(have, want) {
			t.Errorf("%s differs from units/%s", name, name)
		}
	}
}

func TestUnitsStdout(t *testing.T) {
	for _, args := range [][]string{
		{"-name", "myd", "-port", "7000", "-out", "-"},
		{"-name", "myd", "-port", "7000"}, // - is the default
	} {
		code, stdout, stderr := runUnits(args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr)
		}
		want, err := units.Generate(units.Params{Name: "myd", Port: 7000})
		if err != nil {
			t.Fatal(err)
		}
		// Split the output back into files on the ==> NAME <== lines.
		parts := regexp.MustCompile(`(?m)^==> (\S+) <==\n`).FindAllStringSubmatchIndex(stdout, -1)
		if len(parts) != len(want) {
			t.Fatalf("%v: want %d files on stdout, have %d:\n%s", args, len(want), len(parts), stdout)
		}
		for i, m := range parts {
			name := stdout[m[2]:m[3]]
			end := len(stdout)
			if i+1 < len(parts) {
				end = parts[i+1][0] - 1 // the blank line between files
			}
			if have := stdout[m[1]:end]; have != string(want[name]) {
				t.Errorf("%v: %s on stdout:\nwant:\n%s\nhave:\n%s", args, name, want[name], have)
			}
			if name != units.FileNames("myd")[i] {
				t.Errorf("%v: file %d is %s, want %s", args, i, name, units.FileNames("myd")[i])
			}
		}
	}
}

func TestUnitsWatchdogOff(t *testing.T) {
	code, stdout, stderr := runUnits("-name", "myd", "-port", "7000", "-watchdog", "0")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(stdout, "WatchdogSec=") {
		t.Errorf("-watchdog 0: want no WatchdogSec=, have:\n%s", stdout)
	}
	code, stdout, _ = runUnits("-name", "myd", "-port", "7000", "-watchdog", "30s", "-graceful-timeout", "1m")
	if code != 0 || !strings.Contains(stdout, "\nWatchdogSec=30s\n") || !strings.Contains(stdout, "\nTimeoutStopSec=65s\n") {
		t.Errorf("-watchdog 30s -graceful-timeout 1m: exit %d, want WatchdogSec=30s and TimeoutStopSec=65s in:\n%s", code, stdout)
	}
}

// TestUnitsWaiterctl: -waiterctl makes ExecReload= run waiterctl on the
// control socket, with a -timeout under -start-timeout; without it the
// file is checked and the master signalled.
func TestUnitsWaiterctl(t *testing.T) {
	for _, c := range []struct {
		name  string
		args  []string
		want  []string // lines of myd.service
		never []string // line prefixes it must not have
	}{
		{
			name:  "default",
			want:  []string{"RuntimeDirectory=myd", "TimeoutStartSec=90s", "ExecReload=/usr/bin/myd -check -config /etc/myd/myd.yaml", "ExecReload=/bin/kill -HUP $MAINPID"},
			never: []string{"ExecReload=/usr/bin/waiterctl"},
		},
		{
			name:  "waiterctl",
			args:  []string{"-waiterctl", "/usr/bin/waiterctl"},
			want:  []string{"RuntimeDirectory=myd", "TimeoutStartSec=90s", "ExecReload=/usr/bin/waiterctl -s /run/myd/control -timeout 85s reload"},
			never: []string{"ExecReload=/bin/kill", "ExecReload=/usr/bin/myd"},
		},
		{
			name: "waiterctl and a longer start",
			args: []string{"-waiterctl", "/usr/libexec/myd/waiterctl", "-start-timeout", "3m"},
			want: []string{"TimeoutStartSec=180s", "ExecReload=/usr/libexec/myd/waiterctl -s /run/myd/control -timeout 175s reload"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runUnits(append([]string{"-name", "myd", "-port", "7000"}, c.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			_, svc, _ := strings.Cut(stdout, "==> myd.service <==\n")
			svc, _, _ = strings.Cut(svc, "\n==> ")
			lines := strings.Split(svc, "\n")
			for _, w := range c.want {
				found := false
				for _, l := range lines {
					found = found || l == w
				}
				if !found {
					t.Errorf("no line %q in myd.service:\n%s", w, svc)
				}
			}
			for _, n := range c.never {
				for _, l := range lines {
					if strings.HasPrefix(l, n) {
						t.Errorf("want no line starting %q, have %q", n, l)
					}
				}
			}
			_, inst, _ := strings.Cut(stdout, "==> myd-accept@.service <==\n")
			if strings.Contains(inst, "\nRuntimeDirectory=") || strings.Contains(inst, "\nExecReload=") {
				t.Errorf("myd-accept@.service: want no RuntimeDirectory= or ExecReload=:\n%s", inst)
			}
		})
	}
}

func TestUnitsBadFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		code int
		say  string // in stderr
	}{
		{"nothing", nil, 2, "-name and -port are required"},
		{"no port", []string{"-name", "myd"}, 2, "-name and -port are required"},
		{"no name", []string{"-port", "7000"}, 2, "-name and -port are required"},
		{"unknown flag", []string{"-name", "myd", "-port", "7000", "-prot", "1"}, 2, "flag provided but not defined: -prot"},
		{"port not a number", []string{"-name", "myd", "-port", "http"}, 2, `invalid value "http" for flag -port`},
		{"port too big", []string{"-name", "myd", "-port", "70000"}, 2, `-port "70000": want a port number from 1 to 65535`},
		{"negative port", []string{"-name", "myd", "-port", "-1"}, 2, `-port "-1"`},
		{"template name", []string{"-name", "my@d", "-port", "7000"}, 2, `-name "my@d"`},
		{"name with slash", []string{"-name", "../myd", "-port", "7000"}, 2, `-name "../myd"`},
		{"relative exec", []string{"-name", "myd", "-port", "7000", "-exec", "myd"}, 2, `-exec "myd": want an absolute path`},
		{"exec with space", []string{"-name", "myd", "-port", "7000", "-exec", "/opt/my d"}, 2, `-exec "/opt/my d"`},
		{"relative config", []string{"-name", "myd", "-port", "7000", "-config", "etc/myd.yaml"}, 2, `-config "etc/myd.yaml"`},
		{"same ports", []string{"-name", "myd", "-port", "7000", "-accept-port", "7000"}, 2, `-accept-port "7000"`},
		{"graceful zero", []string{"-name", "myd", "-port", "7000", "-graceful-timeout", "0"}, 2, "-graceful-timeout 0"},
		{"graceful not a duration", []string{"-name", "myd", "-port", "7000", "-graceful-timeout", "20"}, 2, `invalid value "20" for flag -graceful-timeout`},
		{"watchdog too short", []string{"-name", "myd", "-port", "7000", "-watchdog", "100ms"}, 2, `-watchdog "100ms"`},
		{"stray argument", []string{"-name", "myd", "-port", "7000", "extra"}, 2, `unexpected argument "extra"`},
		{"empty out", []string{"-name", "myd", "-port", "7000", "-out", ""}, 2, "-out: want a directory"},
		{"out is a file", []string{"-name", "myd", "-port", "7000", "-out", file}, 1, "-out:"},
		{"directive without =", []string{"-name", "myd", "-port", "7000", "-service-directive", "StateDirectory"}, 2,
			`invalid value "StateDirectory" for flag -service-directive: [Service]: want Key=Value`},
		{"directive with a newline", []string{"-name", "myd", "-port", "7000", "-service-directive", "Environment=A=1\nUser=root"}, 2,
			"a newline would start another setting"},
		{"directive the generator owns", []string{"-name", "myd", "-port", "7000", "-service-directive", "KillMode=process"}, 2,
			"the generator writes KillMode="},
		{"absolute state directory", []string{"-name", "myd", "-port", "7000", "-service-directive", "StateDirectory=/var/lib/myd"}, 2,
			"want a path relative"},
		{"unit directive", []string{"-name", "myd", "-port", "7000", "-unit-directive", "Description=x"}, 2,
			"invalid value \"Description=x\" for flag -unit-directive"},
		{"socket directive", []string{"-name", "myd", "-port", "7000", "-socket-directive", "Accept=no"}, 2,
			"-accept=false"},
		{"missing drop-in", []string{"-name", "myd", "-port", "7000", "-dropin", "/nonexistent/x.conf"}, 2,
			"invalid value \"/nonexistent/x.conf\" for flag -dropin"},
		{"drop-in not .conf", []string{"-name", "myd", "-port", "7000", "-dropin", file}, 2, "ending in .conf"},
		{"accept port without accept pair", []string{"-name", "myd", "-port", "7000", "-accept=false", "-accept-port", "7001"}, 2,
			`-accept-port "7001": no Accept=yes pair`},
		{"relative waiterctl", []string{"-name", "myd", "-port", "7000", "-waiterctl", "waiterctl"}, 2, `-waiterctl "waiterctl": want an absolute path`},
		{"waiterctl is the daemon", []string{"-name", "myd", "-port", "7000", "-waiterctl", "/usr/bin/myd"}, 2, `-waiterctl "/usr/bin/myd": is the daemon's Exec`},
		{"start timeout zero", []string{"-name", "myd", "-port", "7000", "-start-timeout", "0"}, 2, "-start-timeout 0"},
		{"start timeout too short", []string{"-name", "myd", "-port", "7000", "-start-timeout", "5s"}, 2, `-start-timeout "5s": want 10s to 1h`},
		{"start timeout as a directive", []string{"-name", "myd", "-port", "7000", "-service-directive", "TimeoutStartSec=5min"}, 2,
			"-start-timeout"},
		{"the pool's runtime directory on the accept pair", []string{"-name", "myd", "-port", "7000", "-service-directive", "RuntimeDirectory=myd"}, 2,
			"RuntimeDirectory=myd already (its control socket)"},
		{"host without -no-socket", []string{"-name", "myd", "-port", "7000", "-host", "127.0.0.1"}, 2,
			`-host "127.0.0.1": NAME.socket listens on every address`},
		{"host name", []string{"-name", "myd", "-port", "7000", "-no-socket", "-host", "localhost"}, 2,
			`-host "localhost": want an IP address`},
		{"-no-socket with -accept", []string{"-name", "myd", "-port", "7000", "-no-socket", "-accept"}, 2,
			"-accept with -no-socket"},
		{"-no-socket with an accept port", []string{"-name", "myd", "-port", "7000", "-no-socket", "-accept-port", "7001"}, 2,
			`-accept-port "7001": no Accept=yes pair`},
		{"-no-socket with a socket directive", []string{"-name", "myd", "-port", "7000", "-no-socket", "-socket-directive", "KeepAlive=yes"}, 2,
			"no socket unit to put it in"},
		{"-no-socket with FDSTORE", []string{"-name", "myd", "-port", "7000", "-no-socket", "-service-directive", "Environment=FDSTORE=1"}, 2,
			"the two must agree"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runUnits(c.args...)
			if code != c.code {
				t.Errorf("want exit %d, have %d (stderr %q)", c.code, code, stderr)
			}
			if !strings.Contains(stderr, c.say) {
				t.Errorf("want stderr to contain %q, have %q", c.say, stderr)
			}
			if stdout != "" {
				t.Errorf("want nothing on stdout, have %q", stdout)
			}
		})
	}
}

func TestUnitsHelp(t *testing.T) {
	code, _, stderr := runUnits("-h")
	if code != 0 || !strings.Contains(stderr, "usage: waiterd units -name NAME -port PORT") || !strings.Contains(stderr, "-graceful-timeout") {
		t.Errorf("-h: exit %d, stderr %q", code, stderr)
	}
}

// needAnalyzer skips a test when systemd-analyze is missing, except in CI
// (CI=true), where its absence is a broken setup: tests/deps.sh installs it.
func needAnalyzer(t *testing.T) string {
	t.Helper()
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("systemd-analyze is not installed and CI=true: run tests/deps.sh (%v)", err)
		}
		t.Skipf("systemd-analyze is not installed (package systemd): %v", err)
	}
	return tool
}

// TestUnitsAnalyze runs systemd-analyze itself, as an administrator would,
// on the units the command writes for a daemon "myd" whose binary exists.
func TestUnitsAnalyze(t *testing.T) {
	tool := needAnalyzer(t)
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin", "myd")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctl := filepath.Join(tmp, "bin", "waiterctl")
	if err := os.WriteFile(ctl, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "units")
	code, _, stderr := runUnits("-name", "myd", "-port", "7000", "-exec", bin, "-waiterctl", ctl, "-out", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	analyze := func(args ...string) (stdout, stderr string, err error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var o, e bytes.Buffer
		cmd := exec.CommandContext(ctx, tool, args...)
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
	}
	var paths []string
	for _, name := range units.FileNames("myd") {
		paths = append(paths, filepath.Join(dir, name))
	}
	_, e, err := analyze(append([]string{"verify", "--man=no", "--generators=no"}, paths...)...)
	if err != nil || e != "" {
		t.Errorf("systemd-analyze verify: %v, stderr:\n%s", err, e)
	}
	level := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, name := range []string{"myd.service", "myd-accept@.service"} {
		o, e, err := analyze("security", "--offline=true", "--threshold=20", "--no-pager", filepath.Join(dir, name))
		m := level.FindStringSubmatch(o)
		if m == nil {
			t.Errorf("%s: no exposure level in:\n%s", name, o)
			continue
		}
		t.Logf("%s: systemd-analyze security rates it %s", name, m[1])
		if err != nil {
			t.Errorf("%s: systemd-analyze security --threshold=20 (2.0): %v (level %s)", name, err, m[1])
		}
		if e != "" {
			t.Errorf("%s: systemd-analyze security printed on stderr:\n%s", name, e)
		}
	}
}

// TestUnitsCheck: -check reports each service's exposure, with the daemon's
// binary and waiterctl not installed (Analyze stands in for them).
func TestUnitsCheck(t *testing.T) {
	needAnalyzer(t)
	code, _, stderr := runUnits("-name", "myd", "-port", "7000", "-exec", "/nonexistent/myd", "-waiterctl", "/nonexistent/waiterctl",
		"-out", t.TempDir(), "-check")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, name := range []string{"myd.service", "myd-accept@.service"} {
		m := regexp.MustCompile(regexp.QuoteMeta(name) + `: exposure ([0-9.]+)`).FindStringSubmatch(stderr)
		if m == nil {
			t.Errorf("-check: no exposure for %s in:\n%s", name, stderr)
			continue
		}
		if v, _ := strconv.ParseFloat(m[1], 64); v > 2.0 {
			t.Errorf("-check: %s rated %s, want 2.0 or less", name, m[1])
		}
	}
	if !strings.Contains(stderr, "no complaints") {
		t.Errorf("-check: want \"no complaints\", have:\n%s", stderr)
	}
}

// writeFile writes content to dir/name and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestUnitsOwnSettings: the directive flags, -dropin and -accept=false give
// what units.Generate gives for the same Params, and only those files.
func TestUnitsOwnSettings(t *testing.T) {
	tmp := t.TempDir()
	limits := writeFile(t, tmp, "limits.conf", "[Service]\nLimitNOFILE=65536\n")
	net := writeFile(t, tmp, "10-net.conf", "[Service]\nPrivateNetwork=yes\n")
	base := []string{"-name", "kvd", "-port", "7300",
		"-service-directive", "StateDirectory=kvd", "-service-directive", "Environment=KVD_DATA=/var/lib/kvd",
		"-unit-directive", "After=network-online.target", "-socket-directive", "KeepAlive=yes",
		"-dropin", limits, "-dropin", net}
	p := units.Params{Name: "kvd", Port: 7300,
		Directives: []units.Directive{
			{Section: "Service", Key: "StateDirectory", Value: "kvd"},
			{Section: "Service", Key: "Environment", Value: "KVD_DATA=/var/lib/kvd"},
			{Section: "Unit", Key: "After", Value: "network-online.target"},
			{Section: "Socket", Key: "KeepAlive", Value: "yes"},
		},
		DropIns: []units.DropIn{
			{Name: "limits.conf", Content: []byte("[Service]\nLimitNOFILE=65536\n")},
			{Name: "10-net.conf", Content: []byte("[Service]\nPrivateNetwork=yes\n")},
		},
	}
	for _, accept := range []bool{true, false} {
		p.NoAccept = !accept
		dir := filepath.Join(tmp, fmt.Sprint("units-", accept))
		code, _, stderr := runUnits(append(base, "-accept="+strconv.FormatBool(accept), "-out", dir)...)
		if code != 0 {
			t.Fatalf("-accept=%v: exit %d: %s", accept, code, stderr)
		}
		want, err := units.Generate(p)
		if err != nil {
			t.Fatal(err)
		}
		var have []string
		err = filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(dir, path)
			have = append(have, rel)
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if !bytes.Equal(b, want[rel]) {
				t.Errorf("-accept=%v: %s: not what units.Generate writes:\nwant:\n%s\nhave:\n%s", accept, rel, want[rel], b)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(have)
		names := p.Files()
		sort.Strings(names)
		if fmt.Sprint(have) != fmt.Sprint(names) {
			t.Errorf("-accept=%v: want files %v, have %v", accept, names, have)
		}
		if strings.Contains(stderr, "warning") {
			t.Errorf("-accept=%v: a warning in a fresh directory: %s", accept, stderr)
		}
	}
	// Standard output names each drop-in with its directory.
	code, stdout, stderr := runUnits(append(base, "-accept=false")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	heads := regexp.MustCompile(`(?m)^==> (\S+) <==$`).FindAllStringSubmatch(stdout, -1)
	var got []string
	for _, h := range heads {
		got = append(got, h[1])
	}
	if want := "[kvd.socket kvd.service kvd.service.d/10-net.conf kvd.service.d/limits.conf]"; fmt.Sprint(got) != want {
		t.Errorf("stdout: files %v, want %s", got, want)
	}
}

// TestUnitsStale: writing fewer files into a directory that has more of the
// daemon's says which are left, and removes none.
func TestUnitsStale(t *testing.T) {
	tmp := t.TempDir()
	dropin := writeFile(t, tmp, "x.conf", "[Service]\nLimitNOFILE=1024\n")
	dir := filepath.Join(tmp, "units")
	if code, _, stderr := runUnits("-name", "myd", "-port", "7000", "-dropin", dropin, "-out", dir); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	code, _, stderr := runUnits("-name", "myd", "-port", "7000", "-accept=false", "-out", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, f := range []string{"myd-accept.socket", "myd-accept@.service", "myd.service.d/x.conf", "myd-accept@.service.d/x.conf"} {
		if !strings.Contains(stderr, "warning: "+filepath.Join(dir, f)+" was not written by this run") {
			t.Errorf("no warning about %s in:\n%s", f, stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v (it must be left alone)", f, err)
		}
	}
}

// TestUnitsDropInTwice: two drop-ins of one file name are refused.
func TestUnitsDropInTwice(t *testing.T) {
	tmp := t.TempDir()
	a := writeFile(t, tmp, "x.conf", "[Service]\nLimitNOFILE=1024\n")
	if err := os.Mkdir(filepath.Join(tmp, "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	b := writeFile(t, filepath.Join(tmp, "b"), "x.conf", "[Service]\nLimitNOFILE=2048\n")
	code, stdout, stderr := runUnits("-name", "myd", "-port", "7000", "-dropin", a, "-dropin", b)
	if code != 2 || !strings.Contains(stderr, `-dropin "x.conf": two drop-ins of this name`) || stdout != "" {
		t.Errorf("exit %d, stderr %q, stdout %d bytes", code, stderr, len(stdout))
	}
}

// TestUnitsCheckOwnSettings: -check reads the drop-ins and the directives,
// and finds them clean.
func TestUnitsCheckOwnSettings(t *testing.T) {
	needAnalyzer(t)
	tmp := t.TempDir()
	dropin := writeFile(t, tmp, "limits.conf", "[Service]\nLimitNOFILE=65536\n")
	code, _, stderr := runUnits("-name", "kvd", "-port", "7300", "-exec", "/nonexistent/kvd", "-service-directive", "StateDirectory=kvd",
		"-dropin", dropin, "-out", filepath.Join(tmp, "units"), "-check")
	if code != 0 || !strings.Contains(stderr, "no complaints") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// A misspelt key in a drop-in is found.
	bad := writeFile(t, tmp, "bad.conf", "[Service]\nLimitNOFLIE=65536\n")
	code, _, stderr = runUnits("-name", "kvd", "-port", "7300", "-exec", "/nonexistent/kvd", "-dropin", bad, "-out", filepath.Join(tmp, "bad"), "-check")
	if code != 1 || !strings.Contains(stderr, "LimitNOFLIE") {
		t.Errorf("a bad key in a drop-in: exit %d, stderr:\n%s", code, stderr)
	}
}

// TestUnitsNoSocket: -no-socket writes NAME.service alone, binding -host
// and -port itself, says that a NAME.socket left in the directory was not
// written, and -check finds it clean.
func TestUnitsNoSocket(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runUnits("-name", "myd", "-port", "7000", "-out", dir); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	code, _, stderr := runUnits("-name", "myd", "-port", "7000", "-no-socket", "-host", "::", "-waiterctl", "/usr/bin/waiterctl", "-out", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want, err := units.Generate(units.Params{Name: "myd", Port: 7000, NoSocket: true, Host: "::", Waiterctl: "/usr/bin/waiterctl"})
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 1 {
		t.Fatalf("want one file from units.Generate, have %d", len(want))
	}
	have, err := os.ReadFile(filepath.Join(dir, "myd.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, want["myd.service"]) {
		t.Errorf("myd.service: not what units.Generate writes:\nwant:\n%s\nhave:\n%s", want["myd.service"], have)
	}
	if !strings.Contains(string(have), "\nExecStart=/usr/bin/myd -config /etc/myd/myd.yaml -listen [::]:7000\n") {
		t.Errorf("no ExecStart= with -listen [::]:7000 in:\n%s", have)
	}
	if strings.Count(stderr, "wrote ") != 1 {
		t.Errorf("want one file written, stderr:\n%s", stderr)
	}
	// The earlier run's socket units would still be taken by systemd.
	for _, f := range []string{"myd.socket", "myd-accept.socket", "myd-accept@.service"} {
		if !strings.Contains(stderr, "warning: "+filepath.Join(dir, f)+" was not written by this run") {
			t.Errorf("no warning about %s in:\n%s", f, stderr)
		}
	}
	// On standard output: the one file; -accept=false is no contradiction.
	code, stdout, stderr := runUnits("-name", "myd", "-port", "7000", "-no-socket", "-accept=false")
	if code != 0 || strings.Count(stdout, "==> ") != 1 || !strings.HasPrefix(stdout, "==> myd.service <==\n") ||
		!strings.Contains(stdout, "\nExecStart=/usr/bin/myd -config /etc/myd/myd.yaml -listen 127.0.0.1:7000\n") {
		t.Errorf("stdout: exit %d (%s):\n%s", code, stderr, stdout)
	}
	if code == 0 {
		needAnalyzer(t)
		code, _, stderr = runUnits("-name", "myd", "-port", "7000", "-no-socket", "-exec", "/nonexistent/myd", "-out", filepath.Join(dir, "check"), "-check")
		if code != 0 || !strings.Contains(stderr, "no complaints") || !strings.Contains(stderr, "myd.service: exposure") {
			t.Errorf("-check: exit %d:\n%s", code, stderr)
		}
	}
}
