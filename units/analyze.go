package units

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Errors of Analyze.
var (
	// ErrNoAnalyzer: systemd-analyze is not installed (package systemd).
	ErrNoAnalyzer = errors.New("units: systemd-analyze not found")
	// ErrVerify: systemd-analyze printed a complaint about the units.
	ErrVerify = errors.New("units: systemd-analyze verify found problems")
	// ErrExposure: a service is rated above the threshold.
	ErrExposure = errors.New("units: a service's exposure is above the threshold")
)

// Analysis is what systemd-analyze says about a set of units.
type Analysis struct {
	// Complaints is everything systemd-analyze printed on stderr (verify
	// for all the units, then security for each service); "" when clean.
	Complaints string
	// Exposure is each service's overall exposure level, by file name, as
	// `systemd-analyze security --offline=true` rates it: 0.0 (best) to
	// 10.0. A template (NAME@.service) is rated as an instance of it.
	Exposure map[string]float64
	// Over lists the services rated above the threshold, sorted.
	Over []string
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+(?:\.[0-9]+)?)`)

// Analyze writes files (by name, as Generate returns them, drop-ins
// included) to a temporary directory and runs `systemd-analyze verify` on them all and
// `systemd-analyze security --offline=true` on each service, with threshold
// on the 0-10 scale (2.0 is "OK" and better).
//
// verify refuses an ExecStart= (or ExecReload=) binary that does not
// exist. programs are those the units were generated to run (the daemon's
// Exec and, if any, its Waiterctl; "" is skipped): each one that is not
// installed on this machine is replaced in the copies by an executable
// stand-in, so that everything else is still checked. Any other missing
// binary is a complaint.
//
// It returns an error wrapping ErrNoAnalyzer when systemd-analyze is not
// installed, ErrVerify when it complained, ErrExposure when a service is over
// the threshold (with the Analysis filled in), or the failure to run it.
func Analyze(ctx context.Context, files map[string][]byte, threshold float64, programs ...string) (*Analysis, error) {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoAnalyzer, err)
	}
	dir, err := os.MkdirTemp("", "waiter-units-")
	if err != nil {
		return nil, fmt.Errorf("units: analyze: %w", err)
	}
	defer os.RemoveAll(dir)
	if !pathRE.MatchString(dir) {
		return nil, fmt.Errorf("units: analyze: temporary directory %q cannot go into ExecStart=: set TMPDIR", dir)
	}
	// Each stand-in in a directory of its own: two programs may share a
	// base name.
	stands := map[string]string{}
	for i, prog := range programs {
		if prog == "" || stands[prog] != "" {
			continue
		}
		if _, err := os.Stat(prog); err == nil {
			continue
		}
		stand := filepath.Join(dir, "bin", strconv.Itoa(i), filepath.Base(prog))
		if err := os.MkdirAll(filepath.Dir(stand), 0o755); err != nil {
			return nil, fmt.Errorf("units: analyze: %w", err)
		}
		if err := os.WriteFile(stand, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			return nil, fmt.Errorf("units: analyze: %w", err)
		}
		stands[prog] = stand
	}
	var names, services []string
	for name, b := range files {
		for prog, stand := range stands {
			for _, key := range []string{"\nExecStart=", "\nExecReload="} {
				b = bytes.ReplaceAll(b, []byte(key+prog+" "), []byte(key+stand+" "))
			}
		}
		if !filepath.IsLocal(name) {
			return nil, fmt.Errorf("units: analyze: file name %q: want a path inside the directory", name)
		}
		// A drop-in (NAME.service.d/FILE.conf) goes beside its unit, where
		// systemd-analyze reads it with the unit.
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			return nil, fmt.Errorf("units: analyze: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return nil, fmt.Errorf("units: analyze: %w", err)
		}
		if strings.Contains(name, "/") {
			continue
		}
		names = append(names, filepath.Join(dir, name))
		if strings.HasSuffix(name, ".service") {
			services = append(services, name)
		}
	}
	sort.Strings(names)
	sort.Strings(services)

	a := &Analysis{Exposure: map[string]float64{}}
	var complaints strings.Builder
	run := func(args ...string) (stdout string, code int, err error) {
		var out, errb bytes.Buffer
		cmd := exec.CommandContext(ctx, tool, args...)
		cmd.Stdout, cmd.Stderr = &out, &errb
		cmd.Env = append(os.Environ(), "SYSTEMD_PAGER=cat", "SYSTEMD_COLORS=0", "LC_ALL=C.UTF-8")
		err = cmd.Run()
		complaints.Write(errb.Bytes())
		var ee *exec.ExitError
		if errors.As(err, &ee) && ctx.Err() == nil {
			return out.String(), ee.ExitCode(), nil
		}
		if err != nil {
			return "", -1, fmt.Errorf("units: %s %s: %w", tool, args[0], err)
		}
		return out.String(), 0, nil
	}
	// --recursive-errors=one: judge these units and what they name directly
	// (a missing NAME.socket is an error), not every unit of the
	// distribution behind sockets.target.
	out, code, err := run(append([]string{"verify", "--man=no", "--generators=no", "--recursive-errors=one"}, names...)...)
	if err != nil {
		return nil, err
	}
	if code != 0 && complaints.Len() == 0 {
		fmt.Fprintf(&complaints, "systemd-analyze verify: exit status %d\n%s", code, out)
	}
	var errs []error
	if complaints.Len() > 0 {
		errs = append(errs, ErrVerify)
	}
	limit := strconv.Itoa(int(threshold*10 + 0.5))
	for _, s := range services {
		out, code, err := run("security", "--offline=true", "--threshold="+limit, "--no-pager", filepath.Join(dir, s))
		if err != nil {
			return nil, err
		}
		m := exposureRE.FindStringSubmatch(out)
		if m == nil {
			return nil, fmt.Errorf("units: systemd-analyze security %s (exit status %d): no overall exposure level in its output:\n%s", s, code, out)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		a.Exposure[s] = v
		// The exit status is systemd's own verdict; the parsed level must
		// agree with it, or the parsing is wrong.
		if over := code != 0; over != (v > threshold) {
			return nil, fmt.Errorf("units: systemd-analyze security %s: exit status %d for a level of %.1f against a threshold of %.1f", s, code, v, threshold)
		}
		if v > threshold {
			a.Over = append(a.Over, s)
		}
	}
	if len(a.Over) > 0 {
		errs = append(errs, fmt.Errorf("%w (%.1f): %s", ErrExposure, threshold, strings.Join(a.Over, ", ")))
	}
	a.Complaints = complaints.String()
	return a, errors.Join(errs...)
}
