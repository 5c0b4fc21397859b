// Command waiterd is waiter's demo daemon: it answers each client with
// "hello world\n" and closes, or with -echo greets and then echoes each line
// back until the client closes its side.
//
// Every option of waiter is a flag (-prefork 8) and a key of the -config
// YAML file (prefork: 8); flags override the file. With no socket from
// systemd and no -listen it binds 127.0.0.1:9123.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/waiter-go/waiter"
	"github.com/waiter-go/waiter/config"
)

// version is set by the build (-ldflags -X main.version=...).
var version = "dev"

// demo holds waiterd's own settings, read from the same file as waiter's.
type demo struct {
	// Echo greets, then echoes lines until the client closes its side.
	Echo bool `yaml:"echo"`
	// FaultWedgeOnUSR2 makes SIGUSR2 wedge the master's supervisor loop
	// forever, so that the end-to-end tests can watch systemd's watchdog
	// kill and restart it. Off unless a config file turns it on.
	FaultWedgeOnUSR2 bool `yaml:"fault_wedge_on_usr2"`
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "units" {
		return unitsMain(args[1:], os.Stdout, stderr)
	}
	fs := flag.NewFlagSet("waiterd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "YAML file of options (keys as the flags, with _ for -)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	flags := config.NewFlags(fs, &config.Options{}, &demo{})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return waiter.ExitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "waiterd: unexpected argument %q\n", fs.Arg(0))
		return waiter.ExitConfig
	}
	if *showVersion {
		fmt.Fprintln(os.Stdout, "waiterd", version)
		return 0
	}
	// d is written by Reload, in the master's supervisor loop, and read by
	// the hooks: in nofork the worker is a goroutine of the master, so the
	// two run side by side and d is guarded.
	var d demo
	var mu sync.RWMutex
	settings := func() demo { mu.RLock(); defer mu.RUnlock(); return d }
	h := waiter.Hooks{OnProcess: func(c net.Conn) error { return greet(c, settings().Echo) }}
	h.OnSigUSR2 = func() {
		if settings().FaultWedgeOnUSR2 {
			fmt.Fprintln(stderr, "waiterd: fault_wedge_on_usr2: wedging the master's loop forever")
			select {}
		}
	}
	if waiter.IsWorker() {
		// A worker takes its options and settings from the master (Carry),
		// not from the file, which may have changed or broken since the
		// last reload.
		srv := waiter.New(config.Default(), h)
		srv.Carry = &d
		return srv.Run()
	}
	load := func() (config.Options, demo, error) {
		o, dd := config.Default(), demo{}
		if *cfgPath != "" {
			lines, err := config.LoadFile(*cfgPath, &o, &dd)
			if err != nil {
				return o, dd, err
			}
			if err := flags.Apply(&o, &dd); err != nil {
				return o, dd, err
			}
			// Validate here, where the lines are known, so the message names
			// the file and line of a bad value.
			probe := o
			probe.Normalize()
			if err := probe.Validate(); err != nil {
				return o, dd, config.Locate(err, *cfgPath, lines)
			}
			return o, dd, nil
		}
		return o, dd, flags.Apply(&o, &dd)
	}
	o, dd, err := load()
	if err != nil {
		fmt.Fprintf(stderr, "waiterd: %v\n", err)
		return waiter.ExitConfig
	}
	d = dd
	srv := waiter.New(o, h)
	srv.Carry = &d
	srv.Reload = func() (config.Options, error) {
		o, dd, err := load()
		if err == nil {
			mu.Lock()
			d = dd // carried to the next generation of workers
			mu.Unlock()
		}
		return o, err
	}
	return srv.Run()
}

// greet is waiterd's on_process.
func greet(c net.Conn, echo bool) error {
	if _, err := io.WriteString(c, "hello world\n"); err != nil {
		return err
	}
	if !echo {
		return nil
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if len(line) > 0 {
			if _, werr := io.WriteString(c, line); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
