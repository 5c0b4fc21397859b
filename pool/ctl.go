package pool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/waiter-go/waiter/config"
	"github.com/waiter-go/waiter/control"
)

// The control socket's requests, as the supervisor answers them. The
// socket's server (package control) runs on its own goroutines and passes
// each request here over ev.ctl; the supervisor answers on the request's
// own channel (capacity 1, so it never waits for the client), at once or,
// for a reload, when the reload has a result.

type ctlReq struct {
	r     control.Request
	reply chan control.Reply
	taken chan struct{} // cap 1: the supervisor read it (nil in tests)
}

// ctlWait bounds how long a request waits for the supervisor to take it:
// a loop that does not take it in that time is stuck, and the client is
// told so rather than left hanging.
const ctlWait = 5 * time.Second

// ctlReplyWait bounds the wait for the supervisor's answer.
const ctlReplyWait = 10 * time.Minute

// stacksWait bounds the wait for a worker's stacks.
const stacksWait = 5 * time.Second

// reloadWaiter is a control client waiting for a generation's result.
type reloadWaiter struct {
	gen   int
	reply chan control.Reply
}

// controlPath is where the control socket goes: the option, or under
// systemd the service's runtime directory; "" is off.
func controlPath(o config.Options) string {
	switch o.Control {
	case "off":
		return ""
	case "":
		dir, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":")
		if dir == "" {
			return ""
		}
		return filepath.Join(dir, "control")
	}
	return o.Control
}

// startControl serves the control socket, when there is one.
func (s *Server) startControl(path string, ev *events, broker *stacksBroker) (*control.Server, error) {
	l, err := control.Listen(path)
	if err != nil {
		return nil, err
	}
	cs := &control.Server{Log: s.log, Handle: func(ctx context.Context, r control.Request) control.Reply {
		return handleControl(ctx, r, ev, broker)
	}}
	cs.Start(l)
	s.log.Infof("waiter: control socket %s", path)
	return cs, nil
}

// handleControl runs on the control server's goroutine for one request.
func handleControl(ctx context.Context, r control.Request, ev *events, broker *stacksBroker) control.Reply {
	switch r.Cmd {
	case control.CmdStatus, control.CmdReload, control.CmdWorkers, control.CmdStacks:
	default:
		return control.Reply{Error: fmt.Sprintf("unknown command %q: want status, reload, workers or stacks", r.Cmd)}
	}
	var got <-chan []byte
	if r.Cmd == control.CmdStacks {
		if r.PID <= 0 {
			return control.Reply{Error: "stacks: want the pid of a worker"}
		}
		if broker != nil {
			// Before the signal goes, so that no reply can come first.
			var cancel func()
			got, cancel = broker.wait(r.PID)
			defer cancel()
		}
	}
	c := ctlReq{r: r, reply: make(chan control.Reply, 1), taken: make(chan struct{}, 1)}
	stuck := time.NewTimer(ctlWait)
	defer stuck.Stop()
	select {
	case ev.ctl <- c:
	case <-stuck.C:
		return control.Reply{Error: "the supervisor did not take the request in " + ctlWait.String() + ": it may be stuck"}
	case <-ctx.Done():
		return control.Reply{Error: "the server is stopping"}
	}
	// Queued is not taken: a stuck loop leaves it in the channel.
	select {
	case <-c.taken:
	case <-stuck.C:
		return control.Reply{Error: "the supervisor did not take the request in " + ctlWait.String() + ": it may be stuck"}
	case <-ctx.Done():
		return control.Reply{Error: "the server is stopping"}
	}
	var rep control.Reply
	select {
	case rep = <-c.reply:
	case <-time.After(ctlReplyWait):
		// A reload has its own bounds (startTimeout, graceful_timeout):
		// this one only keeps a connection from being held for ever.
		return control.Reply{Error: "no result in " + ctlReplyWait.String()}
	case <-ctx.Done():
		return control.Reply{Error: "the server is stopping"}
	}
	switch {
	case r.Cmd == control.CmdStatus && rep.OK && r.PSS:
		for i := range rep.Status.Workers {
			rep.Status.Workers[i].PSS = procPSS(rep.Status.Workers[i].PID)
		}
	case r.Cmd == control.CmdStacks && rep.OK && rep.Stacks == "" && got != nil:
		select {
		case st := <-got:
			rep.Stacks = string(st)
		case <-time.After(stacksWait):
			return control.Reply{Error: fmt.Sprintf("stacks: worker pid %d did not answer in %s", r.PID, stacksWait)}
		case <-ctx.Done():
			return control.Reply{Error: "the server is stopping"}
		}
	}
	return rep
}

// command is the supervisor's side of a request.
func (sv *supervisor) command(c ctlReq) {
	if c.taken != nil {
		c.taken <- struct{}{}
	}
	switch c.r.Cmd {
	case control.CmdStatus:
		c.reply <- control.Reply{OK: true, Status: sv.statusOf()}
	case control.CmdReload:
		if sv.stopping {
			c.reply <- control.Reply{Error: "reload refused: the server is stopping"}
			return
		}
		if err := sv.reload(); err != nil {
			c.reply <- control.Reply{Error: "reload refused: " + err.Error(), Reload: sv.lastReload}
			return
		}
		sv.reloadWaiters = append(sv.reloadWaiters, reloadWaiter{gen: sv.cur.n, reply: c.reply})
	case control.CmdWorkers:
		c.reply <- sv.workersCmd(c.r.N)
	case control.CmdStacks:
		c.reply <- sv.stacksCmd(c.r.PID)
	}
}

// workersCmd is TTIN or TTOU |n| times, stopping at the first refusal.
func (sv *supervisor) workersCmd(n int) control.Reply {
	if n == 0 {
		return control.Reply{Error: "workers: want +N or -N, not 0"}
	}
	const most = 1 << 17 // more than any pool can take: the rest is refused anyway
	sig, steps := syscall.SIGTTIN, min(n, most)
	if n < 0 {
		sig, steps = syscall.SIGTTOU, most
		if n > -most {
			steps = -n // -n of math.MinInt would overflow
		}
	}
	res := &control.WorkersResult{}
	done := 0
	sv.quietResize = true
	for ; done < steps; done++ {
		if why := sv.resize(sig); why != "" {
			res.Refused = why
			break
		}
	}
	sv.quietResize = false
	what := "workers"
	res.Target = sv.target
	if sv.mode == modeForking {
		res.Target, what = sv.spares, "spares"
	}
	if done > 0 {
		sv.log.Infof("waiter: control socket: workers %+d: %d %s", done*(n/abs(n)), res.Target, what)
	}
	if done == 0 {
		return control.Reply{Error: "workers: " + res.Refused, Workers: res}
	}
	return control.Reply{OK: true, Workers: res}
}

// stacksCmd asks a worker for its stacks: the in-process worker's are the
// master's own, written here; a process's come back on the stacks socket.
func (sv *supervisor) stacksCmd(pid int) control.Reply {
	for _, k := range sv.kids {
		if k.pid != pid {
			continue
		}
		if k.kind == kindInproc {
			return control.Reply{OK: true, Stacks: string(allStacks(maxStacksMsg))}
		}
		if !k.reported {
			return control.Reply{Error: fmt.Sprintf("stacks: worker pid %d is still starting", pid)}
		}
		if !k.killedAt.IsZero() || !k.quitAt.IsZero() || sv.sb.Slot(k.slot).State() == stateExiting {
			return control.Reply{Error: fmt.Sprintf("stacks: worker pid %d is exiting", pid)}
		}
		sv.sb.Slot(k.slot).askStacks(stacksReply)
		sv.env.signal(k, sigStacks)
		return control.Reply{OK: true}
	}
	return control.Reply{Error: fmt.Sprintf("stacks: pid %d is not a worker of this server", pid)}
}

// reloadResult records how a reload ended and answers the control clients
// waiting for it (generation gen or an older one it superseded).
func (sv *supervisor) reloadResult(gen int, result, reason string) {
	r := &control.ReloadResult{Generation: gen, Result: result, Reason: reason, At: sv.env.now()}
	sv.lastReload = r
	if sv.reloads == nil {
		sv.reloads = map[string]uint64{}
	}
	sv.reloads[result]++
	if sv.m != nil {
		sv.m.reloaded(result)
	}
	keep := sv.reloadWaiters[:0]
	for _, w := range sv.reloadWaiters {
		if w.gen > gen && result != "stopping" {
			keep = append(keep, w)
			continue
		}
		rep := control.Reply{OK: result == "ok", Reload: r}
		if !rep.OK {
			rep.Error = "reload " + result + ": " + reason
		}
		w.reply <- rep
	}
	sv.reloadWaiters = keep
}

// endReloadWaits answers every waiting client at a stop.
func (sv *supervisor) endReloadWaits() {
	for _, w := range sv.reloadWaiters {
		w.reply <- control.Reply{Error: "reload abandoned: the server is stopping"}
	}
	sv.reloadWaiters = nil
}

func (sv *supervisor) modeName() string {
	switch sv.mode {
	case modeForking:
		return "forking"
	case modeNofork:
		return "nofork"
	case modeConnected:
		return "connected"
	}
	if sv.fixed {
		return "fixed"
	}
	return "prefork"
}

// statusOf is the pool as control.Status: what waiterctl status prints and
// what metrics export.
func (sv *supervisor) statusOf() *control.Status {
	o := sv.cur.opts.o
	st := &control.Status{
		At: sv.env.now(), PID: os.Getpid(), Mode: sv.modeName(), Started: sv.started,
		Stopping: sv.stopping, Reloading: !sv.reloadAt.IsZero(),
		Generation: sv.cur.n, Prefork: sv.target, Maxfork: o.Maxfork, Spares: sv.spares,
		Reloads:         map[string]uint64{"ok": 0, "refused": 0, "failed": 0},
		ListenOverflows: sv.overflowsTotal(), ListenOverflowsMinute: sv.overflowsLastMinute(),
		Note: sv.statusNote(),
	}
	if sv.serving != nil {
		st.Serving = sv.serving.n
	}
	for k, v := range sv.reloads {
		st.Reloads[k] = v
	}
	if sv.lastReload != nil {
		r := *sv.lastReload
		st.LastReload = &r
	}
	st.Served, st.Failed = sv.served, sv.failed
	st.Maxforked, st.Queued = sv.shed, len(sv.waiting)
	slots := make([]int, 0, len(sv.kids))
	for s := range sv.kids {
		slots = append(slots, s)
	}
	slices.Sort(slots)
	for _, s := range slots {
		k := sv.kids[s]
		sl := sv.sb.Slot(k.slot)
		st.Served += sl.Served()
		st.Failed += sl.Failed()
		w := control.Worker{PID: k.pid, Slot: k.slot, Gen: k.gen.n, Kind: k.kind.String(),
			Served: sl.Served(), Failed: sl.Failed(), Age: control.Duration(sv.env.now().Sub(k.startAt)),
			RSS: sl.RSS(), CPU: sl.CPU().Seconds()}
		state := sl.State()
		w.State = stateNames[min(int(state), len(stateNames)-1)]
		if k.state == kRetiring && state != stateExiting {
			w.State = "retiring"
		}
		if b := sl.BusySince(); state == stateBusy && b > 0 {
			w.Busy = control.Duration(sv.since(b))
			if p := sl.Peer(); p.IsValid() {
				w.Peer = p.String()
			}
		}
		st.Workers = append(st.Workers, w)
	}
	st.Listeners = sv.listeners()
	return st
}

// statusNote is what STATUS= adds to the counts.
func (sv *supervisor) statusNote() string {
	note := sv.status.note
	if n := sv.overflowsLastMinute(); n > 0 {
		o := fmt.Sprintf("%d connections dropped on full accept queues in the last minute", n)
		if note != "" {
			note += "; "
		}
		note += o
	}
	return note
}

var errStopping = errors.New("the server is stopping")

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
