package pool

// The supervisor's decisions driven by a fake world: a fake clock, a fake
// spawner and process table, and a real (memfd) scoreboard that the fake
// workers write as real ones do. Long random sequences of what operators,
// clients and the kernel do (HUP, TTIN, TTOU, USR1, TERM, worker exits,
// kill -9, bursts past maxfork) run in milliseconds, with invariants
// checked after every event.

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/config"
	"github.com/waiter-go/waiter/control"
	"github.com/waiter-go/waiter/hooks"
)

type fakeProc struct {
	k      *kid
	peer   int // a spare's end of its handoff socket, -1 when none
	pid    int
	ready  bool
	busy   bool
	termed bool
	gone   bool
}

type fakeWorld struct {
	t       testing.TB
	rnd     *rand.Rand
	now     time.Time
	start   time.Time
	mono0   int64
	sv      *supervisor
	s       *Server
	pending []spawnRes
	procs   map[int]*fakeProc
	nextPID int
	notes   []string
	exits   []exitEv
	errors  []string
	reloadN int // Server.Reload calls
	badNext bool
	// reloads asked for on the control socket, each answered once
	ctlReloads []chan control.Reply
	// failStarts makes that share of spawns fail.
	failStarts float64
}

// errorHook collects error lines: the supervisor logs one for every
// impossible state it meets, and a test that expects none checks them.
type errorHook struct{ w *fakeWorld }

func (errorHook) Levels() []logrus.Level { return []logrus.Level{logrus.ErrorLevel} }
func (h errorHook) Fire(e *logrus.Entry) error {
	h.w.errors = append(h.w.errors, e.Message)
	return nil
}

func newFakeWorld(t testing.TB, seed uint64, o config.Options) *fakeWorld {
	t.Helper()
	o.Normalize()
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	w := &fakeWorld{t: t, rnd: rand.New(rand.NewPCG(seed, 1)), procs: map[int]*fakeProc{}, nextPID: 1000}
	w.now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w.start = w.now
	w.mono0 = monotonic()
	l := logrus.New()
	l.Out = io.Discard
	l.Level = logrus.DebugLevel
	l.AddHook(errorHook{w})
	w.s = &Server{Options: o, Hooks: hooks.Set{OnProcess: func(context.Context, net.Conn) error { return nil }}, Logger: l}
	w.s.setupLog(false)
	w.s.Reload = func() (config.Options, error) {
		w.reloadN++
		if w.badNext {
			w.badNext = false
			return o, fmt.Errorf("a bad file")
		}
		return o, nil
	}
	m := modePrefork
	slots := slotsFor(o.Maxfork, o.Spares)
	switch {
	case o.Nofork:
		m, slots = modeNofork, 2
	case o.Prefork == 0:
		m = modeForking
	}
	sb, err := newScoreboard(slots)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	w.s.sb = sb
	snap, _, err := w.s.snapshot(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := env{
		now:    func() time.Time { return w.now },
		mono:   w.mono,
		notify: func(s string) { w.notes = append(w.notes, s) },
		start:  w.startKid,
		signal: w.signalKid,
	}
	w.sv = newSupervisor(w.s, m, &generation{n: 1, opts: snap}, e, sb)
	w.sv.begin()
	w.check("begin")
	return w
}

func (w *fakeWorld) mono() int64 { return w.mono0 + int64(w.now.Sub(w.start)) }

// stamp overwrites a timestamp the fake worker wrote with the real clock by
// the fake one.
func (w *fakeWorld) stamp(sl sbSlot, field int) { sl.sb.i64(sl.off + field).Store(w.mono()) }

func (w *fakeWorld) startKid(k *kid) {
	if len(w.pending) >= spawnInflight {
		w.t.Fatalf("start request %d with %d outstanding: the real spawner's queue would block the loop", len(w.pending)+1, len(w.pending))
	}
	peer := -1
	if k.kind == kindSpare {
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			w.t.Fatal(err)
		}
		k.handoff, peer = sp[0], sp[1]
	}
	if k.clientFd >= 0 {
		unix.Close(k.clientFd) // the spawner closes it after the fork
		k.clientFd = -1
	}
	r := spawnRes{slot: k.slot}
	if w.failStarts > 0 && w.rnd.Float64() < w.failStarts {
		r.err = fmt.Errorf("fake: fork failed")
		if peer >= 0 {
			unix.Close(peer)
		}
	} else {
		w.nextPID++
		r.pid = w.nextPID
		w.procs[r.pid] = &fakeProc{k: k, pid: r.pid, peer: peer}
	}
	w.pending = append(w.pending, r)
}

func (w *fakeWorld) signalKid(k *kid, sig syscall.Signal) {
	p := w.procs[k.pid]
	if p == nil || p.gone {
		return
	}
	switch sig {
	case syscall.SIGTERM:
		p.termed = true
	case syscall.SIGKILL, syscall.SIGQUIT:
		w.exit(p, syscall.WaitStatus(sig))
	}
}

func (w *fakeWorld) exit(p *fakeProc, ws syscall.WaitStatus) {
	if p.gone {
		return
	}
	p.gone = true
	if p.peer >= 0 {
		unix.Close(p.peer) // a dead spare: handing it a client fails
		p.peer = -1
	}
	w.sv.sb.Slot(p.k.slot).Exiting()
	w.exits = append(w.exits, exitEv{slot: p.k.slot, pid: p.pid, ws: ws})
}

// The events a world can make happen.

func (w *fakeWorld) deliverStart() bool {
	if len(w.pending) == 0 {
		return false
	}
	i := w.rnd.IntN(len(w.pending))
	r := w.pending[i]
	w.pending = append(w.pending[:i], w.pending[i+1:]...)
	w.sv.spawnDone(r)
	return true
}

func (w *fakeWorld) pick(f func(p *fakeProc) bool) *fakeProc {
	var c []*fakeProc
	for _, p := range w.procs {
		if !p.gone && f(p) {
			c = append(c, p)
		}
	}
	if len(c) == 0 {
		return nil
	}
	// Map order is random, but not seeded: sort by pid for reproducibility.
	best := c[0]
	for _, p := range c {
		if p.pid < best.pid {
			best = p
		}
	}
	return c[w.rnd.IntN(len(c))%len(c)]
}

func (w *fakeWorld) sortedPick(f func(p *fakeProc) bool) *fakeProc {
	var c []*fakeProc
	for pid := 1000; pid <= w.nextPID; pid++ {
		if p := w.procs[pid]; p != nil && !p.gone && f(p) {
			c = append(c, p)
		}
	}
	if len(c) == 0 {
		return nil
	}
	return c[w.rnd.IntN(len(c))]
}

func (w *fakeWorld) reportReady() bool {
	p := w.sortedPick(func(p *fakeProc) bool { return !p.ready && w.sv.kids[p.k.slot] == p.k && p.k.pid == p.pid })
	if p == nil {
		return false
	}
	p.ready = true
	sl := w.sv.sb.Slot(p.k.slot)
	if p.k.kind == kindOneshot {
		sl.Busy()
		w.stamp(sl, slotBusy)
		p.busy = true
	} else {
		sl.Idle()
		w.stamp(sl, slotIdleSince)
	}
	w.sv.workerEvent(evWord(evReady, w.sv.sb.Slot(p.k.slot)))
	return true
}

func (w *fakeWorld) clientArrives() bool {
	if w.sv.mode == modeForking {
		if w.sv.stopping || w.sv.accPaused {
			return false // a paused accept loop leaves clients in the backlog
		}
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			w.t.Fatal(err)
		}
		unix.Close(sp[1])
		before := map[*kid]bool{}
		for _, k := range w.sv.kids {
			before[k] = k.client
		}
		w.sv.accepted(acceptEv{fd: sp[0]})
		for _, k := range w.sv.kids {
			if k.kind == kindSpare && k.client && !before[k] {
				if p := w.procs[k.pid]; p != nil {
					p.busy = true
					sl := w.sv.sb.Slot(k.slot)
					sl.Busy()
					w.stamp(sl, slotBusy)
				}
			}
		}
		return true
	}
	p := w.sortedPick(func(p *fakeProc) bool { return p.ready && !p.busy && !p.termed })
	if p == nil {
		return false
	}
	p.busy = true
	sl := w.sv.sb.Slot(p.k.slot)
	grow := sl.Busy()
	w.stamp(sl, slotBusy)
	if grow {
		w.sv.workerEvent(evWord(evGrow, sl))
	}
	return true
}

func (w *fakeWorld) clientLeaves() bool {
	p := w.sortedPick(func(p *fakeProc) bool { return p.busy })
	if p == nil {
		return false
	}
	p.busy = false
	sl := w.sv.sb.Slot(p.k.slot)
	sl.Done(w.rnd.IntN(10) == 0)
	if p.k.kind == kindWorker || p.k.kind == kindInproc {
		if !p.termed {
			sl.Idle()
			w.stamp(sl, slotIdleSince)
			return true
		}
	}
	w.exit(p, 0) // a oneshot after its client, or a retiring worker
	return true
}

func (w *fakeWorld) termedExit() bool {
	p := w.sortedPick(func(p *fakeProc) bool { return p.termed && !p.busy })
	if p == nil {
		// A spare whose handoff closed exits too.
		p = w.sortedPick(func(p *fakeProc) bool {
			return p.k.kind == kindSpare && !p.k.client && p.k.handoff < 0 && p.ready
		})
		if p == nil {
			return false
		}
	}
	w.exit(p, 0)
	return true
}

func (w *fakeWorld) kill9() bool {
	// Only a started one: the real wait for an exit begins with the start
	// result, so no exit can come before it.
	p := w.sortedPick(func(p *fakeProc) bool { return p.k.pid == p.pid })
	if p == nil {
		return false
	}
	p.busy = false
	w.exit(p, syscall.WaitStatus(syscall.SIGKILL))
	return true
}

func (w *fakeWorld) deliverExit() bool {
	if len(w.exits) == 0 {
		return false
	}
	i := w.rnd.IntN(len(w.exits))
	e := w.exits[i]
	w.exits = append(w.exits[:i], w.exits[i+1:]...)
	w.sv.reaped(e)
	return true
}

func (w *fakeWorld) tick(d time.Duration) {
	w.now = w.now.Add(d)
	w.sv.tick()
}

// after is what the loop does after every event.
func (w *fakeWorld) after(what string) {
	w.sv.startWaiting()
	w.sv.pace(w.now)
	w.sv.maintain()
	w.sv.checkReady()
	if !w.sv.growAt.IsZero() && !w.now.Before(w.sv.growAt) {
		w.sv.growAt = time.Time{}
		w.sv.growAsked()
	}
	w.check(what)
}

// check asserts the invariants that must hold after every event.
func (w *fakeWorld) check(what string) {
	w.t.Helper()
	sv := w.sv
	fail := func(f string, a ...any) {
		w.t.Helper()
		w.t.Fatalf("after %s: %s\nstate: %s", what, fmt.Sprintf(f, a...), w.dump())
	}
	if sv.inflight != len(w.pending) || sv.inflight > spawnInflight {
		fail("inflight %d, pending %d, bound %d", sv.inflight, len(w.pending), spawnInflight)
	}
	if len(sv.kids)+len(sv.free) != sv.sb.Slots() {
		fail("slots: %d kids + %d free != %d", len(sv.kids), len(sv.free), sv.sb.Slots())
	}
	c := sv.census()
	o := sv.cur.opts.o
	switch sv.mode {
	case modePrefork:
		if c.live > o.Maxfork {
			fail("%d live workers > maxfork %d", c.live, o.Maxfork)
		}
		if sv.target < 1 || sv.target > o.Maxfork {
			fail("target %d outside [1, %d]", sv.target, o.Maxfork)
		}
	case modeForking:
		if n := c.serving; n > o.Maxfork {
			fail("%d busy oneshots > maxfork %d", n, o.Maxfork)
		}
	case modeNofork:
		if c.procs > 1 {
			fail("%d in-process workers at once", c.procs)
		}
	}
	for _, e := range w.errors {
		if !strings.Contains(e, "reload refused, keeping the running options: a bad file") && !strings.Contains(e, "fake: fork failed") &&
			!strings.Contains(e, "not pinging the watchdog") && !strings.Contains(e, "reload failed") && !strings.Contains(e, "(request_timeout)") {
			fail("unexpected error log %q", e)
		}
	}
}

func (w *fakeWorld) dump() string {
	var b strings.Builder
	fmt.Fprintf(&b, "gen cur %d serving %v target %d spares %d inflight %d stopping %v\n", w.sv.cur.n, w.sv.serving != nil, w.sv.target, w.sv.spares, w.sv.inflight, w.sv.stopping)
	for s := 0; s < w.sv.sb.Slots(); s++ {
		if k := w.sv.kids[s]; k != nil {
			fmt.Fprintf(&b, "  slot %d pid %d gen %d %s state %d reported %v client %v sb %s\n", s, k.pid, k.gen.n, k.kind, k.state, k.reported, k.client, stateNames[w.sv.sb.Slot(s).State()])
		}
	}
	fmt.Fprintf(&b, "notes: %s", strings.Join(w.notes[max(0, len(w.notes)-12):], " | "))
	return b.String()
}

// step makes one random event happen.
func (w *fakeWorld) step() string {
	for tries := 0; tries < 8; tries++ {
		switch n := w.rnd.IntN(100); {
		case n < 14:
			if w.deliverStart() {
				return "start result"
			}
		case n < 28:
			if w.reportReady() {
				return "ready"
			}
		case n < 42:
			if w.clientArrives() {
				return "client"
			}
		case n < 52:
			if w.clientLeaves() {
				return "client done"
			}
		case n < 62:
			if w.termedExit() {
				return "exit"
			}
		case n < 72:
			if w.deliverExit() {
				return "reaped"
			}
		case n < 74:
			if w.kill9() {
				return "kill -9"
			}
		case n < 79:
			w.badNext = w.rnd.IntN(4) == 0
			w.sv.signal(syscall.SIGHUP)
			return "HUP"
		case n < 82:
			w.sv.signal(syscall.SIGTTIN)
			return "TTIN"
		case n < 85:
			w.sv.signal(syscall.SIGTTOU)
			return "TTOU"
		case n < 86:
			w.sv.signal(syscall.SIGUSR1)
			return "USR1"
		case n < 88:
			w.badNext = w.rnd.IntN(4) == 0
			ch := make(chan control.Reply, 1)
			w.sv.command(ctlReq{r: control.Request{Cmd: control.CmdReload}, reply: ch})
			w.ctlReloads = append(w.ctlReloads, ch)
			return "control reload"
		case n < 90:
			n := w.rnd.IntN(7) - 3
			ch := make(chan control.Reply, 1)
			w.sv.command(ctlReq{r: control.Request{Cmd: control.CmdWorkers, N: n}, reply: ch})
			if len(ch) != 1 {
				w.t.Fatalf("control workers %+d: no answer at once", n)
			}
			return fmt.Sprintf("control workers %+d", n)
		case n < 91:
			ch := make(chan control.Reply, 1)
			w.sv.command(ctlReq{r: control.Request{Cmd: control.CmdStatus}, reply: ch})
			rep := <-ch
			if !rep.OK || len(rep.Status.Workers) != len(w.sv.kids) || rep.Status.Generation != w.sv.cur.n {
				w.t.Fatalf("control status: %d workers for %d kids, generation %d for %d", len(rep.Status.Workers), len(w.sv.kids), rep.Status.Generation, w.sv.cur.n)
			}
			return "control status"
		default:
			w.tick(time.Duration(w.rnd.IntN(300)) * time.Millisecond)
			return "tick"
		}
	}
	w.tick(tickEvery)
	return "tick"
}

// settle lets every outstanding thing finish, with clients that leave, and
// returns after at most rounds rounds.
func (w *fakeWorld) settle(rounds int, clientsLeave bool) {
	for i := 0; i < rounds; i++ {
		for w.deliverStart() {
			w.after("settle: start")
		}
		for w.reportReady() {
			w.after("settle: ready")
		}
		if clientsLeave {
			for w.clientLeaves() {
				w.after("settle: client done")
			}
		}
		for w.termedExit() {
			w.after("settle: exit")
		}
		for w.deliverExit() {
			w.after("settle: reaped")
		}
		w.tick(tickEvery)
		w.after("settle: tick")
		if w.sv.done() {
			return
		}
	}
}

// lastReloadCompleted: every RELOADING=1 is followed by READY=1.
func (w *fakeWorld) lastReloadCompleted() bool {
	last := -1
	for i, n := range w.notes {
		if strings.HasPrefix(n, "RELOADING=1") {
			last = i
		}
	}
	for _, n := range w.notes[last+1:] {
		if n == "READY=1" {
			return true
		}
	}
	return last < 0
}

var fakeConfigs = []struct {
	name string
	mut  func(*config.Options)
}{
	{"prefork 2..8", func(o *config.Options) { o.Prefork, o.Maxfork = 2, 8 }},
	{"fixed 4", func(o *config.Options) { o.Prefork = -4 }},
	{"prefork 8..40", func(o *config.Options) { o.Prefork, o.Maxfork = 8, 40 }},
	{"forking max 4 spares 2", func(o *config.Options) { o.Prefork, o.Maxfork, o.Spares = 0, 4, 2 }},
	{"forking max 3 no spares", func(o *config.Options) { o.Prefork, o.Maxfork, o.Spares = 0, 3, 0 }},
	{"nofork", func(o *config.Options) { o.Nofork = true }},
}

func fakeOptions(mut func(*config.Options)) config.Options {
	o := config.Default()
	o.GracefulTimeout = config.Duration(5 * time.Second)
	o.PxIdle = config.Duration(2 * time.Second)
	mut(&o)
	return o
}

// TestSupervisorRandomSequences: thousands of random events per config,
// invariants after each; then every reload completes, the pool is whole,
// and a stop with clients that never leave ends within graceful_timeout.
func TestSupervisorRandomSequences(t *testing.T) {
	seqs, steps := 60, 400
	if testing.Short() {
		seqs = 10
	}
	for _, fc := range fakeConfigs {
		t.Run(fc.name, func(t *testing.T) {
			for seed := uint64(1); seed <= uint64(seqs); seed++ {
				w := newFakeWorld(t, seed, fakeOptions(fc.mut))
				for i := 0; i < steps; i++ {
					w.after(w.step())
				}
				w.settle(200, true)
				if !w.lastReloadCompleted() {
					t.Fatalf("seed %d: a RELOADING=1 without READY=1 after it\n%s", seed, w.dump())
				}
				// Every reload asked for on the control socket has its
				// answer once the pool settled, and only one.
				for i, ch := range w.ctlReloads {
					if len(ch) != 1 {
						t.Fatalf("seed %d: control reload %d of %d unanswered after settling\n%s", seed, i+1, len(w.ctlReloads), w.dump())
					}
					<-ch
				}
				w.ctlReloads = nil
				c := w.sv.census()
				switch w.sv.mode {
				case modePrefork:
					if c.live < w.sv.target || c.ready < w.sv.target {
						t.Fatalf("seed %d: settled with %d live, %d ready < target %d\n%s", seed, c.live, c.ready, w.sv.target, w.dump())
					}
				case modeForking:
					if c.ready < w.sv.spares {
						t.Fatalf("seed %d: settled with %d spares ready < %d\n%s", seed, c.ready, w.sv.spares, w.dump())
					}
				case modeNofork:
					if c.ready != 1 {
						t.Fatalf("seed %d: settled with %d in-process workers ready\n%s", seed, c.ready, w.dump())
					}
				}
				// A stop while clients hold workers and never leave.
				for i := 0; i < 5; i++ {
					w.clientArrives()
					w.after("client before stop")
				}
				stopAt := w.now
				w.sv.signal(syscall.SIGTERM)
				w.after("TERM")
				if w.notes[len(w.notes)-1] != "STOPPING=1" && !containsNote(w.notes, "STOPPING=1") {
					t.Fatalf("seed %d: no STOPPING=1 at the stop", seed)
				}
				w.settle(200, false)
				if !w.sv.done() {
					t.Fatalf("seed %d: not done after the stop\n%s", seed, w.dump())
				}
				if took, gt := w.now.Sub(stopAt), w.sv.cur.opts.o.GracefulTimeout.D(); took > gt+2*tickEvery {
					t.Fatalf("seed %d: the stop took %s > graceful_timeout %s", seed, took, gt)
				}
			}
		})
	}
}

func containsNote(notes []string, n string) bool {
	for _, x := range notes {
		if x == n {
			return true
		}
	}
	return false
}

// TestSupervisorPastSpawnBound: 150 workers asked for at once (prefork 150,
// maxfork 150) with no start answered: the supervisor asks for exactly
// spawnInflight, never more (the fake fails the test if it would block),
// and reaches READY=1 as answers come.
func TestSupervisorPastSpawnBound(t *testing.T) {
	w := newFakeWorld(t, 1, fakeOptions(func(o *config.Options) { o.Prefork, o.Maxfork = 150, 150 }))
	if len(w.pending) != spawnInflight {
		t.Fatalf("have %d start requests outstanding, want the bound %d", len(w.pending), spawnInflight)
	}
	w.settle(100, true)
	if !containsNote(w.notes, "READY=1") {
		t.Fatalf("no READY=1\n%s", w.dump())
	}
	if c := w.sv.census(); c.ready != 150 {
		t.Fatalf("%d ready, want 150", c.ready)
	}
}

// While a growth decision waits for growAfter, workers that find the pool
// all busy do not ask again (each ask is a wake-up of the master); once it
// is made they can.
func TestSupervisorGrowAskedOnceWhilePending(t *testing.T) {
	w := newFakeWorld(t, 3, fakeOptions(func(o *config.Options) { o.Prefork, o.Maxfork = 2, 8 }))
	w.settle(20, false)
	for i := 0; i < 2; i++ {
		if !w.clientArrives() {
			t.Fatalf("client %d found no worker\n%s", i, w.dump())
		}
		w.after("client")
	}
	if w.sv.growAt.IsZero() {
		t.Fatalf("all busy: want a growth pending\n%s", w.dump())
	}
	// The same worker frees and takes the next client: the last idle one
	// again, and it must not ask.
	for i := 0; i < 50; i++ {
		p := w.sortedPick(func(p *fakeProc) bool { return p.busy })
		sl := w.sv.sb.Slot(p.k.slot)
		sl.Done(false)
		sl.Idle()
		if sl.Busy() {
			t.Fatalf("round %d: a worker asked to grow while a decision was pending", i)
		}
	}
	w.now = w.sv.growAt
	w.after("growAfter")
	if live := w.sv.census().live; live <= 2 {
		t.Fatalf("after growAfter: %d workers, want more than 2\n%s", live, w.dump())
	}
	if w.sv.sb.u32(hdrWant).Load() != 0 {
		t.Fatalf("the decision is made: want the ask cleared")
	}
}

// TestSupervisorGrowthPastSpawnBound: 330 clients that never leave on
// prefork 8 (maxfork 1024): the pool grows within the ramp and the spawn
// bound, every step returns, the watchdog keeps being pinged, and a stop
// ends within graceful_timeout.
func TestSupervisorGrowthPastSpawnBound(t *testing.T) {
	w := newFakeWorld(t, 2, fakeOptions(func(o *config.Options) { o.Prefork, o.Maxfork = 8, 1024 }))
	w.sv.env.watchdog = time.Second
	w.settle(5, false)
	held := 0
	for i := 0; i < 4000 && held < 330; i++ {
		if w.clientArrives() {
			held++
		}
		w.after("client")
		for w.deliverStart() {
			w.after("start")
		}
		for w.reportReady() {
			w.after("ready")
		}
		w.tick(30 * time.Millisecond)
		w.after("tick")
	}
	if held < 330 {
		t.Fatalf("only %d of 330 clients found a worker\n%s", held, w.dump())
	}
	pings := 0
	for _, n := range w.notes {
		if n == "WATCHDOG=1" {
			pings++
		}
	}
	if pings < 2 {
		t.Fatalf("%d watchdog pings while the pool grew", pings)
	}
	stopAt := w.now
	w.sv.signal(syscall.SIGTERM)
	w.after("TERM")
	w.settle(200, false)
	if !w.sv.done() || w.now.Sub(stopAt) > w.sv.cur.opts.o.GracefulTimeout.D()+2*tickEvery {
		t.Fatalf("stop: done %v after %s", w.sv.done(), w.now.Sub(stopAt))
	}
}

// TestSupervisorReloadsPastSlots: 4 HUPs on a fixed pool of 4 whose
// workers all hold clients that never leave, each HUP before the last
// generation was ready: the scoreboard (sized for two generations) is not
// exhausted (new workers wait for slots), and the newest generation serves
// once graceful_timeout has killed the held ones; every RELOADING=1 is
// followed by READY=1.
func TestSupervisorReloadsPastSlots(t *testing.T) {
	w := newFakeWorld(t, 3, fakeOptions(func(o *config.Options) { o.Prefork = -4 }))
	w.settle(5, false)
	for i := 0; i < 4; i++ {
		w.clientArrives()
		w.after("client")
	}
	for i := 0; i < 4; i++ {
		w.sv.signal(syscall.SIGHUP)
		w.after("HUP")
		for w.deliverStart() {
			w.after("start")
		}
		w.tick(3 * time.Millisecond)
		w.after("tick")
	}
	w.settle(100, false)
	if !w.lastReloadCompleted() {
		t.Fatalf("the last reload never completed\n%s", w.dump())
	}
	if w.sv.serving.n != w.sv.cur.n || w.sv.cur.n != 5 {
		t.Fatalf("serving generation %d, current %d, want 5", w.sv.serving.n, w.sv.cur.n)
	}
	for _, k := range w.sv.kids {
		if k.gen != w.sv.cur {
			t.Fatalf("a worker of generation %d is left\n%s", k.gen.n, w.dump())
		}
	}
}

// TestSupervisorManyHUPs: 100 HUPs with nothing answered in between: the
// generation count goes past any small table and the newest one wins.
func TestSupervisorManyHUPs(t *testing.T) {
	w := newFakeWorld(t, 4, fakeOptions(func(o *config.Options) { o.Prefork, o.Maxfork = 50, 100 }))
	for i := 0; i < 100; i++ {
		w.sv.signal(syscall.SIGHUP)
		w.after("HUP")
		if i%10 == 0 {
			w.deliverStart()
			w.after("start")
		}
	}
	w.settle(300, true)
	if !w.lastReloadCompleted() || w.sv.serving != w.sv.cur || w.sv.cur.n != 101 {
		t.Fatalf("after 100 HUPs: serving %v, current %d\n%s", w.sv.serving != nil, w.sv.cur.n, w.dump())
	}
}

// TestSupervisorTTINPastSpares: 20 TTIN in forking mode with maxfork 4:
// spares stop at the room the scoreboard has (spares + 16), the refusal is
// logged, and a HUP then completes.
func TestSupervisorTTINPastSpares(t *testing.T) {
	w := newFakeWorld(t, 5, fakeOptions(func(o *config.Options) { o.Prefork, o.Maxfork, o.Spares = 0, 4, 2 }))
	var warned int
	w.s.log.Logger.AddHook(warnCounter{&warned, "refused"})
	for i := 0; i < 20; i++ {
		w.sv.signal(syscall.SIGTTIN)
		w.after("TTIN")
	}
	if w.sv.spares != sparesRoom(2) || warned != 20-16 {
		t.Fatalf("spares %d (want %d), %d refusals logged (want 4)", w.sv.spares, sparesRoom(2), warned)
	}
	w.settle(50, true)
	w.sv.signal(syscall.SIGHUP)
	w.after("HUP")
	w.settle(50, true)
	if !w.lastReloadCompleted() {
		t.Fatalf("HUP after 20 TTIN did not complete\n%s", w.dump())
	}
}

// TestSupervisorPxIdleOneAtATime: a pool grown to 12 over prefork 4 goes
// back to 4 one worker per tick, never below.
func TestSupervisorPxIdleOneAtATime(t *testing.T) {
	w := newFakeWorld(t, 6, fakeOptions(func(o *config.Options) { o.Prefork, o.Maxfork = 4, 12 }))
	w.sv.target = 12
	w.settle(5, false)
	w.sv.target = 4
	w.tick(3 * time.Second) // every worker is now past px_idle
	prev := w.sv.census().live
	for i := 0; i < 20; i++ {
		w.tick(tickEvery)
		w.after("tick")
		live := w.sv.census().live
		if live < prev-1 {
			t.Fatalf("tick %d: %d -> %d live: more than one retired in a tick", i, prev, live)
		}
		if live < 4 {
			t.Fatalf("tick %d: %d live < prefork 4", i, live)
		}
		prev = live
		for w.termedExit() {
		}
		for w.deliverExit() {
			w.after("reaped")
		}
	}
	if prev != 4 {
		t.Fatalf("settled at %d live, want prefork 4", prev)
	}
}

type warnCounter struct {
	n    *int
	word string
}

func (warnCounter) Levels() []logrus.Level { return []logrus.Level{logrus.WarnLevel} }
func (h warnCounter) Fire(e *logrus.Entry) error {
	if strings.Contains(e.Message, h.word) {
		*h.n++
	}
	return nil
}

// TestSupervisorReloadUnderSteadyLoad: clients keep arriving, each taking
// a worker as soon as one is ready; a HUP must still complete (READY=1)
// within a bounded number of events, in every mode.
func TestSupervisorReloadUnderSteadyLoad(t *testing.T) {
	for _, fc := range fakeConfigs {
		t.Run(fc.name, func(t *testing.T) {
			w := newFakeWorld(t, 7, fakeOptions(fc.mut))
			round := func() {
				// Each worker that becomes ready meets a client at once, a
				// short one: it is done before the next worker is ready.
				for n := 0; n < 8 && w.deliverStart(); n++ {
					w.after("start")
					for m := 0; m < 8 && w.reportReady(); m++ {
						w.after("ready")
						w.clientArrives()
						w.after("client")
						for w.clientLeaves() {
							w.after("client done")
						}
						for w.deliverExit() {
							w.after("reaped")
						}
					}
				}
				w.clientArrives()
				w.after("client")
				for w.clientLeaves() {
					w.after("client done")
				}
				for w.termedExit() {
					w.after("exit")
				}
				for w.deliverExit() {
					w.after("reaped")
				}
				w.tick(10 * time.Millisecond)
				w.after("tick")
			}
			for i := 0; i < 20; i++ {
				round()
			}
			w.sv.signal(syscall.SIGHUP)
			w.after("HUP")
			for i := 0; i < 50 && !w.lastReloadCompleted(); i++ {
				round()
			}
			if !w.lastReloadCompleted() {
				t.Fatalf("no READY=1 after 50 rounds of load\n%s", w.dump())
			}
		})
	}
}

// TestSupervisorForkingReloadAtMaxfork: a HUP while maxfork clients hold
// every worker completes at once (no spare can start at maxfork, so the
// next worker simply gets the new options), not after startTimeout with
// the new options thrown away.
func TestSupervisorForkingReloadAtMaxfork(t *testing.T) {
	w := newFakeWorld(t, 8, fakeOptions(func(o *config.Options) { o.Prefork, o.Maxfork, o.Spares = 0, 4, 2 }))
	w.settle(5, false)
	for i := 0; i < 20 && w.sv.census().serving < 4; i++ {
		w.clientArrives()
		w.after("client")
		w.settle(1, false)
	}
	if c := w.sv.census(); c.serving != 4 {
		t.Fatalf("%d clients held, want maxfork 4", c.serving)
	}
	w.sv.signal(syscall.SIGHUP)
	w.after("HUP")
	w.settle(3, false)
	if !w.lastReloadCompleted() || w.sv.serving != w.sv.cur || w.sv.cur.n != 2 {
		t.Fatalf("a reload at maxfork did not complete: serving %v, current %d\n%s", w.sv.serving != nil, w.sv.cur.n, w.dump())
	}
}

// TestSupervisorRequestTimeoutKillsAreNotCrashes: workers the master kills
// for request_timeout, soon after they started, must not count as workers
// that cannot start: the watchdog keeps being pinged.
func TestSupervisorRequestTimeoutKillsAreNotCrashes(t *testing.T) {
	w := newFakeWorld(t, 9, fakeOptions(func(o *config.Options) {
		o.Prefork, o.Maxfork, o.Spares = 0, 16, 0
		o.RequestTimeout = config.Duration(500 * time.Millisecond)
	}))
	w.sv.env.watchdog = time.Second
	for i := 0; i < 12; i++ {
		w.clientArrives()
		w.after("client")
	}
	w.settle(2, false) // started and serving; their clients never leave
	w.tick(600 * time.Millisecond)
	w.after("past request_timeout")
	w.settle(30, false)
	pings := 0
	for _, n := range w.notes {
		if n == "WATCHDOG=1" {
			pings++
		}
	}
	if w.sv.failStreak != 0 || !w.sv.healthy() || pings < 2 {
		t.Fatalf("after 12 request_timeout kills: failStreak %d, healthy %v, %d pings", w.sv.failStreak, w.sv.healthy(), pings)
	}
}

// TestSupervisorForkingPastMaxQueued: at maxfork, clients the accept loop
// took before its pause wait in the master, maxQueued at most; one past it
// is handed to on_maxforked (counted as shed) and its fd closed, and a stop
// then closes none of the held ones before graceful_timeout.
func TestSupervisorForkingPastMaxQueued(t *testing.T) {
	w := newFakeWorld(t, 10, fakeOptions(func(o *config.Options) {
		o.Prefork, o.Maxfork, o.Spares = 0, 2, 0
		o.MaxforkWait = config.Duration(time.Hour)
	}))
	w.settle(5, false)
	for i := 0; i < 20 && w.sv.census().serving < 2; i++ {
		w.clientArrives()
		w.after("client")
		w.settle(1, false)
	}
	if c := w.sv.census(); c.serving != 2 {
		t.Fatalf("%d clients held, want maxfork 2", c.serving)
	}
	var last int
	for i := 0; i < maxQueued+1; i++ {
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(sp[1]) })
		last = sp[1]
		// As the accept loop would before its pause takes effect.
		w.sv.accepted(acceptEv{fd: sp[0]})
	}
	w.after("burst")
	if n := len(w.sv.waiting); n != maxQueued {
		t.Fatalf("%d clients wait in the master, want maxQueued (%d)", n, maxQueued)
	}
	if w.sv.shed != 1 {
		t.Fatalf("shed %d, want the one past maxQueued", w.sv.shed)
	}
	// Its fd was closed: the peer reads EOF.
	unix.SetNonblock(last, true)
	if n, err := unix.Read(last, make([]byte, 1)); n != 0 || err != nil {
		t.Fatalf("the client past maxQueued: read %d %v, want EOF", n, err)
	}
	w.sv.signal(syscall.SIGTERM)
	w.after("TERM")
	if n := len(w.sv.waiting); n == 0 {
		t.Fatalf("a stop closed the held clients at once")
	}
}
