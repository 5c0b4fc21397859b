package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
		"-graceful-timeout", p.GracefulTimeout.String(), "-out", dir)
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
	dir := filepath.Join(tmp, "units")
	code, _, stderr := runUnits("-name", "myd", "-port", "7000", "-exec", bin, "-out", dir)
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
// binary not installed (Analyze stands in for it).
func TestUnitsCheck(t *testing.T) {
	needAnalyzer(t)
	code, _, stderr := runUnits("-name", "myd", "-port", "7000", "-exec", "/nonexistent/myd", "-out", t.TempDir(), "-check")
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
