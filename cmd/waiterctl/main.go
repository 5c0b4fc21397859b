// Command waiterctl is the operator's command for a waiter master: it
// talks to the master's control socket (package control) to show its
// status, reload it, grow or shrink its pool, dump a worker's stacks, or
// watch the workers live.
//
//	waiterctl status            # tables of the master, listeners, workers
//	waiterctl -json status      # the same as JSON, for scripts
//	waiterctl reload            # for ExecReload=: fails when the reload does
//	waiterctl workers +2        # two more workers (or spares)
//	waiterctl stacks 4242       # a worker's goroutine stacks
//	waiterctl top               # the scoreboard, refreshed each second
//
// The exit status tells a script what happened without parsing: 0 done,
// 1 the master answered no, 2 a usage error, 3 the socket could not be
// reached or broke.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Exit statuses, as the usage text states them.
const (
	exitOK     = 0
	exitNo     = 1 // the master answered no
	exitUsage  = 2 // unknown command, bad argument or flag
	exitSocket = 3 // the control socket cannot be reached, or broke
)

const (
	defaultSocket = "/run/waiterd/control"
	// defaultTimeout bounds a connection and each request.
	defaultTimeout = 10 * time.Second
	// reloadTimeout is the default for reload: the master gives a new
	// generation up to 60 s to become ready, then the old one its graceful
	// time to finish, before it answers.
	reloadTimeout = 150 * time.Second
)

// options are the flags, shared by every command.
type options struct {
	socket  string
	json    bool
	pss     bool
	timeout time.Duration // 0: the command's default
	stdout  io.Writer
	stderr  io.Writer
}

// timeoutFor is the -timeout given, or cmd's default.
func (o *options) timeoutFor(cmd string) time.Duration {
	if o.timeout > 0 {
		return o.timeout
	}
	if cmd == "reload" {
		return reloadTimeout
	}
	return defaultTimeout
}

// command is one of waiterctl's commands.
type command struct {
	args  string // what follows the name in the usage
	help  string
	flags bool // the flags may also follow the command (not for workers: -N)
	run   func(o *options, args []string) error
}

var commands = map[string]command{
	"status":  {"", "the master, its listeners and workers, as tables (-json: JSON; -pss: with PSS)", true, runStatus},
	"reload":  {"", "reload the configuration and wait for the result (one line: for ExecReload=)", false, runReload},
	"workers": {"+N|-N", "grow (+N) or shrink (-N) the pool's target (the spares in forking mode)", false, runWorkers},
	"stacks":  {"PID", "a worker's goroutine stacks", false, runStacks},
	"top":     {"", "the workers live, refreshed each second (q, Esc or Ctrl-C quits)", true, runTop},
}

// commandOrder is the order of the usage text.
var commandOrder = []string{"status", "reload", "workers", "stacks", "top"}

func usage(w io.Writer) {
	fmt.Fprintf(w, `Usage: waiterctl [-s SOCKET] [-json] [-pss] [-timeout D] COMMAND [ARGS]

waiterctl talks to a waiter master over its control socket.

Commands:
`)
	for _, name := range commandOrder {
		c := commands[name]
		fmt.Fprintf(w, "  %-16s %s\n", strings.TrimSpace(name+" "+c.args), c.help)
	}
	fmt.Fprintf(w, `
Flags (status and top also take them after the command):
`)
	fs, _ := newFlagSet(&options{})
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintf(w, `
Exit status:
  0  done
  1  the master answered no: an error reply, a refused or failed reload,
     a workers change refused whole
  2  usage error: an unknown command, a bad argument or flag (or top
     without a terminal)
  3  the control socket cannot be reached (no such file, permission
     denied, nobody listening) or broke (no reply within the timeout)
`)
}

// newFlagSet binds the flags to o, with o's current values as defaults
// (so that flags after a command do not reset those before it).
func newFlagSet(o *options) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("waiterctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run reports the error, once
	fs.Usage = func() {}
	fs.StringVar(&o.socket, "s", o.socket, "the master's control `socket` (default $WAITER_CONTROL, else "+defaultSocket+")")
	fs.BoolVar(&o.json, "json", o.json, "print the reply as indented JSON (status, reload, workers)")
	fs.BoolVar(&o.pss, "pss", o.pss, "status and top: ask for each worker's PSS too (costly with many workers)")
	timeout := new(string)
	if o.timeout > 0 {
		*timeout = o.timeout.String()
	}
	fs.StringVar(timeout, "timeout", *timeout, "bound on connecting and on each request, a Go `duration` (default 10s; reload 150s)")
	return fs, timeout
}

// parseFlags parses the flags at the start of args into o and returns the
// rest.
func parseFlags(o *options, args []string) ([]string, error) {
	fs, timeout := newFlagSet(o)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError("%v", err)
	}
	if *timeout != "" {
		d, err := time.ParseDuration(*timeout)
		if err != nil || d <= 0 {
			return nil, usageError("-timeout %q: want a positive duration such as 500ms or 2m", *timeout)
		}
		o.timeout = d
	}
	return fs.Args(), nil
}

func main() {
	// The one place waiterctl exits: everything below returns errors.
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is waiterctl: it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout, stderr)
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		usage(stdout)
		return exitOK
	}
	code := exitNo
	var f *failure
	if errors.As(err, &f) {
		code = f.code
	}
	// One line: reload's is read by systemctl's caller in the journal.
	fmt.Fprintf(stderr, "waiterctl: %s\n", oneLine(err.Error()))
	if f != nil && f.usage {
		fmt.Fprintf(stderr, "usage: waiterctl [-s SOCKET] [-json] [-pss] [-timeout D] status|reload|workers +N|-N|stacks PID|top (waiterctl -h for more)\n")
	}
	return code
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	o := &options{socket: os.Getenv("WAITER_CONTROL"), stdout: stdout, stderr: stderr}
	if o.socket == "" {
		o.socket = defaultSocket
	}
	rest, err := parseFlags(o, args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return usageError("no command")
	}
	name, rest := rest[0], rest[1:]
	c, ok := commands[name]
	if !ok {
		return usageError("unknown command %q", name)
	}
	if c.flags {
		if rest, err = parseFlags(o, rest); err != nil {
			return err
		}
	}
	if o.socket == "" {
		return usageError("-s: an empty socket path")
	}
	return c.run(o, rest)
}

// oneLine folds a multi-line message (a YAML error, say) into one line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
