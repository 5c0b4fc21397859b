package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
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
	"StartTimeout": "-start-timeout", "Waiterctl": "-waiterctl", "Host": "-host",
	"Directives": "-service-directive, -unit-directive or -socket-directive", "DropIns": "-dropin",
}

// unitsMain writes systemd units for a daemon built on waiter:
//
//	waiterd units -name myd -port 7000 [-exec /usr/bin/myd] -out DIR
//
// writes myd.socket, myd.service, myd-accept.socket and myd-accept@.service
// into DIR (-accept=false: the first two only), each -dropin FILE.conf into
// each service's NAME.service.d/, and the -service-directive,
// -unit-directive and -socket-directive settings into the units; -out -
// (the default) prints them. With -waiterctl PATH, ExecReload= runs
// `PATH -s /run/NAME/control reload`. -no-socket writes myd.service alone,
// which binds -host:PORT itself and keeps the socket in systemd's fd store.
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
	fs.DurationVar(&p.StartTimeout, "start-timeout", units.DefaultStartTimeout, "TimeoutStartSec=, which bounds a reload too (waiterctl's -timeout is 5s less)")
	fs.StringVar(&p.Waiterctl, "waiterctl", "", "waiterctl's `path` on the target machine, e.g. /usr/bin/waiterctl: ExecReload= runs `waiterctl reload`, which fails when the master refuses the file (default: NAME -check, then kill -HUP)")
	accept := fs.Bool("accept", true, "write the Accept=yes pair too (NAME-accept.socket, NAME-accept@.service); -accept=false leaves it out")
	fs.BoolVar(&p.NoSocket, "no-socket", false, "write NAME.service alone, which binds HOST:PORT itself (-listen) and keeps the socket in systemd's file descriptor store across restarts: no NAME.socket, no Accept=yes pair")
	fs.StringVar(&p.Host, "host", "", "with -no-socket, the IP address NAME.service binds: 0.0.0.0 or :: for every address (default "+units.DefaultHost+")")
	for _, d := range []struct{ flag, section, where string }{
		{"service-directive", "Service", "[Service] of the services, e.g. StateDirectory=NAME"},
		{"unit-directive", "Unit", "[Unit] of the services, e.g. After=postgresql.service"},
		{"socket-directive", "Socket", "[Socket] of the sockets, e.g. KeepAlive=yes"},
	} {
		fs.Func(d.flag, "`KEY=VALUE` added to the "+d.where+" (repeatable)", func(s string) error {
			di, err := units.ParseDirective(d.section, s)
			if err != nil {
				return reason(err)
			}
			p.Directives = append(p.Directives, di)
			return nil
		})
	}
	fs.Func("dropin", "a drop-in `FILE.conf`, written into NAME.service.d/ (and NAME-accept@.service.d/) (repeatable)", func(file string) error {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		di, err := units.ParseDropIn(filepath.Base(file), b)
		if err != nil {
			return reason(err)
		}
		p.DropIns = append(p.DropIns, di)
		return nil
	})
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
	if p.StartTimeout == 0 {
		fmt.Fprintln(stderr, "waiterd units: -start-timeout 0: want TimeoutStartSec=, 10s to 1h")
		return unitsUsage
	}
	acceptSet := false
	fs.Visit(func(f *flag.Flag) { acceptSet = acceptSet || f.Name == "accept" })
	if p.NoSocket && acceptSet && *accept {
		fmt.Fprintln(stderr, "waiterd units: -accept with -no-socket: -no-socket writes NAME.service alone, without the Accept=yes pair")
		return unitsUsage
	}
	p.GracefulTimeout = *graceful
	p.NoAccept = !*accept
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

// reason returns a *units.ParamError's reason alone, for the flag package,
// which names the flag and the value itself.
func reason(err error) error {
	var pe *units.ParamError
	if errors.As(err, &pe) {
		return errors.New(pe.Reason)
	}
	return err
}

func unitFlag(field string) string {
	if f, ok := unitFlags[field]; ok {
		return f
	}
	return field
}

func writeUnits(p units.Params, files map[string][]byte, out string, check bool, stdout, stderr io.Writer) int {
	names := p.Files()
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
			err := os.MkdirAll(filepath.Dir(path), 0o755) // NAME.service.d/
			if err == nil {
				err = os.WriteFile(path, files[name], 0o644)
			}
			if err != nil {
				fmt.Fprintf(stderr, "waiterd units: %v\n", err)
				return unitsFail
			}
			fmt.Fprintln(stderr, "wrote", path)
		}
		warnStale(p.Name, files, out, stderr)
	}
	if !check {
		return unitsOK
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := units.Analyze(ctx, files, 2.0, p.Exec, p.Waiterctl)
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

// warnStale names the files of the daemon in dir that this run did not
// write (an Accept=yes pair after -accept=false, a drop-in since dropped):
// systemd, and packaging/build-deb.sh, would take them with the rest. They
// are left alone, as dir may be /etc/systemd/system.
func warnStale(name string, files map[string][]byte, dir string, stderr io.Writer) {
	var stale []string
	for _, u := range units.FileNames(name) {
		if _, ok := files[u]; !ok {
			if _, err := os.Lstat(filepath.Join(dir, u)); err == nil {
				stale = append(stale, u)
			}
		}
		if strings.HasSuffix(u, ".service") {
			m, _ := filepath.Glob(filepath.Join(dir, u+".d", "*.conf"))
			for _, f := range m {
				rel := u + ".d/" + filepath.Base(f)
				if _, ok := files[rel]; !ok {
					stale = append(stale, rel)
				}
			}
		}
	}
	for _, f := range stale {
		fmt.Fprintf(stderr, "waiterd units: warning: %s was not written by this run: remove it if it is stale\n", filepath.Join(dir, f))
	}
}
