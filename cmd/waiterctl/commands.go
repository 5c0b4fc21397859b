package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/waiter-go/waiter/control"
)

// runReload is meant for a unit's ExecReload=: it waits for the outcome,
// so that `systemctl reload` fails when the new configuration does, and
// says why in one line (the journal shows it next to the unit's).
func runReload(o *options, args []string) error {
	if len(args) > 0 {
		return usageError("reload takes no arguments, not %q", strings.Join(args, " "))
	}
	s, err := open(o, "reload")
	if err != nil {
		return err
	}
	defer s.Close()
	rep, err := s.do(control.Request{Cmd: control.CmdReload})
	r := rep.Reload
	if err != nil {
		var f *failure
		if !errors.As(err, &f) || f.code != exitNo {
			return err
		}
		// An error reply: the master would not start the reload (one is
		// under way, it is stopping), or it says how the reload ended.
		if r != nil && r.Result != "" && r.Result != "ok" {
			return reloadEnded(o, r)
		}
		if strings.HasPrefix(rep.Error, "reload") {
			return answeredNo("%s", rep.Error)
		}
		return answeredNo("reload: %s", rep.Error)
	}
	if r == nil {
		return brokeReply(o.socket, "a reload reply without its result")
	}
	if r.Result != "ok" {
		return reloadEnded(o, r)
	}
	if o.json {
		return printJSON(o.stdout, r)
	}
	fmt.Fprintf(o.stdout, "reloaded: generation %d serving\n", r.Generation)
	return nil
}

// reloadEnded is the failure of a reload that was not ok.
func reloadEnded(o *options, r *control.ReloadResult) error {
	if o.json {
		if err := printJSON(o.stdout, r); err != nil {
			return err
		}
	}
	reason := r.Reason
	if reason == "" {
		reason = "without a reason"
	}
	return answeredNo("reload %s: %s", r.Result, reason)
}

// runWorkers changes the pool's target by N. WorkersResult holds the
// target after and why some of it was refused, but not how much was
// done: the target before, from a status on the same connection, tells a
// partial change from one refused whole.
func runWorkers(o *options, args []string) error {
	if len(args) != 1 {
		return usageError("workers takes one argument, +N or -N")
	}
	n, err := parseDelta(args[0])
	if err != nil {
		return err
	}
	s, err := open(o, "workers")
	if err != nil {
		return err
	}
	defer s.Close()
	rep, err := s.do(control.Request{Cmd: control.CmdStatus})
	if err != nil {
		return err
	}
	if rep.Status == nil {
		return brokeReply(o.socket, "a status reply without the status")
	}
	what, before := "workers", rep.Status.Prefork
	if rep.Status.Mode == "forking" {
		what, before = "spares", rep.Status.Spares
	}
	rep, err = s.do(control.Request{Cmd: control.CmdWorkers, N: n})
	if err != nil && rep.Workers == nil {
		return err
	}
	// Refused whole, the master answers no, with the result: the same
	// report as a partial refusal, and exit 1 below.
	r := rep.Workers
	if r == nil {
		return brokeReply(o.socket, "a workers reply without its result")
	}
	if o.json {
		if err := printJSON(o.stdout, r); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(o.stdout, "target: %d %s (was %d)\n", r.Target, what, before)
	}
	if r.Refused == "" {
		return nil
	}
	if (n > 0 && r.Target <= before) || (n < 0 && r.Target >= before) {
		return answeredNo("workers %+d refused: %s", n, r.Refused)
	}
	if !o.json {
		fmt.Fprintf(o.stdout, "partly refused: %s\n", oneLine(r.Refused))
	}
	return nil
}

// parseDelta reads workers' argument: a non-zero integer, signed or not
// (3 is +3).
func parseDelta(s string) (int, error) {
	n, err := strconv.Atoi(s)
	var ne *strconv.NumError
	switch {
	case errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange):
		return 0, usageError("workers %q: out of range", s)
	case err != nil:
		return 0, usageError("workers %q: want a signed integer, +N to add workers or -N to remove them", s)
	case n == 0:
		return 0, usageError("workers %q: want a non-zero change, +N or -N", s)
	}
	return n, nil
}

func runStacks(o *options, args []string) error {
	if len(args) != 1 {
		return usageError("stacks takes one argument, a worker's PID")
	}
	if o.json {
		return usageError("-json does not apply to stacks")
	}
	pid, err := strconv.Atoi(args[0])
	if err != nil || pid <= 0 {
		return usageError("stacks %q: want a worker's PID (waiterctl status lists them)", args[0])
	}
	s, err := open(o, "stacks")
	if err != nil {
		return err
	}
	defer s.Close()
	rep, err := s.do(control.Request{Cmd: control.CmdStacks, PID: pid})
	if err != nil {
		return err
	}
	if rep.Stacks == "" {
		return brokeReply(o.socket, "a stacks reply without the stacks")
	}
	fmt.Fprint(o.stdout, rep.Stacks)
	if !strings.HasSuffix(rep.Stacks, "\n") {
		fmt.Fprintln(o.stdout)
	}
	return nil
}
