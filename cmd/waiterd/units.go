package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/waiter-go/waiter/config"
	"github.com/waiter-go/waiter/units"
)

// Exit codes of `waiterd units`.
const (
	unitsOK    = 0
	unitsFail  = 1 // writing failed, or -check found a problem
	unitsUsage = 2 // a bad flag or value
)

// unitFlags maps units.Params fields to the flags that set them, so that an
// error names what the user typed.
var unitFlags = map[string]string{
	"Name": "-name", "Port": "-port", "AcceptPort": "-accept-port", "Exec": "-exec",
	"Config": "-config", "Description": "-description",
	"GracefulTimeout": "-graceful-timeout", "Watchdog": "-watchdog",
}

// unitsMain writes systemd units for a daemon built on waiter:
//
//	waiterd units -name myd -port 7000 [-exec /usr/bin/myd] -out DIR
//
// writes myd.socket, myd.service, myd-accept.socket and myd-accept@.service
// into DIR; -out - (the default) prints them.
func unitsMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("waiterd units", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var p units.Params
	fs.StringVar(&p.Name, "name", "", "the daemon's name: units NAME.socket, NAME.service, NAME-accept.socket, NAME-accept@.service (required)")
	fs.IntVar(&p.Port, "port", 0, "TCP port of NAME.socket (required)")
	fs.IntVar(&p.AcceptPort, "accept-port", 0, "TCP port of NAME-accept.socket (default port+1)")
	fs.StringVar(&p.Exec, "exec", "", "the daemon's binary (default /usr/bin/NAME)")
	fs.StringVar(&p.Config, "config", "", "the daemon's YAML file, passed as -config (default /etc/NAME/NAME.yaml)")
	fs.StringVar(&p.Description, "description", "", `Description= (default "NAME, a waiter daemon")`)
	graceful := fs.Duration("graceful-timeout", config.DefaultGracefulTimeout.D(), "the daemon's graceful_timeout; TimeoutStopSec= is this plus 5s")
	watchdog := fs.Duration("watchdog", units.DefaultWatchdog, "WatchdogSec=; 0 leaves the watchdog off")
	out := fs.String("out", "-", "directory to write the units into (created if missing), or - for standard output")
	check := fs.Bool("check", false, "then run systemd-analyze verify and security on them; fail above an exposure of 2.0")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: waiterd units -name NAME -port PORT [flags]")
		fmt.Fprintln(stderr, "Writes systemd units for a daemon built on waiter (see units/README.md).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return unitsOK
		}
		return unitsUsage // the flag package has said what was wrong
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "waiterd units: unexpected argument %q (every setting is a flag)\n", fs.Arg(0))
		return unitsUsage
	}
	if p.Name == "" || p.Port == 0 {
		fmt.Fprintln(stderr, "waiterd units: -name and -port are required, e.g. waiterd units -name myd -port 7000 -out /etc/systemd/system")
		return unitsUsage
	}
	if *out == "" {
		fmt.Fprintln(stderr, "waiterd units: -out: want a directory, or - for standard output")
		return unitsUsage
	}
	if *graceful == 0 {
		// Params' zero would mean waiter's default, not what was typed.
		fmt.Fprintln(stderr, "waiterd units: -graceful-timeout 0: want the daemon's graceful_timeout, 1s to 1h")
		return unitsUsage
	}
	p.GracefulTimeout = *graceful
	p.Watchdog = *watchdog
	if *watchdog == 0 {
		p.Watchdog = -1 // Params' zero means the default
	}
	p, err := p.WithDefaults()
	if err == nil {
		var files map[string][]byte
		files, err = units.Generate(p)
		if err == nil {
			return writeUnits(p, files, *out, *check, stdout, stderr)
		}
	}
	var pe *units.ParamError
	if errors.As(err, &pe) {
		fmt.Fprintf(stderr, "waiterd units: %s %q: %s\n", unitFlag(pe.Field), pe.Value, pe.Reason)
		return unitsUsage
	}
	fmt.Fprintf(stderr, "waiterd units: %v\n", err)
	return unitsFail
}

func unitFlag(field string) string {
	if f, ok := unitFlags[field]; ok {
		return f
	}
	return field
}

func writeUnits(p units.Params, files map[string][]byte, out string, check bool, stdout, stderr io.Writer) int {
	names := units.FileNames(p.Name)
	if out == "-" {
		for i, name := range names {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			fmt.Fprintf(stdout, "==> %s <==\n", name)
			stdout.Write(files[name])
		}
	} else {
		if err := os.MkdirAll(out, 0o755); err != nil {
			fmt.Fprintf(stderr, "waiterd units: -out: %v\n", err)
			return unitsFail
		}
		for _, name := range names {
			path := filepath.Join(out, name)
			if err := os.WriteFile(path, files[name], 0o644); err != nil {
				fmt.Fprintf(stderr, "waiterd units: %v\n", err)
				return unitsFail
			}
			fmt.Fprintln(stderr, "wrote", path)
		}
	}
	if !check {
		return unitsOK
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := units.Analyze(ctx, files, p.Exec, 2.0)
	if a != nil {
		for _, name := range names {
			if v, ok := a.Exposure[name]; ok {
				fmt.Fprintf(stderr, "%s: exposure %.1f (systemd-analyze security; 0 best, 10 worst)\n", name, v)
			}
		}
		if a.Complaints != "" {
			fmt.Fprintf(stderr, "systemd-analyze says:\n%s", a.Complaints)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "waiterd units: -check: %v\n", err)
		return unitsFail
	}
	fmt.Fprintln(stderr, "systemd-analyze verify: no complaints")
	return unitsOK
}
