package pool

import (
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/control"
)

// The supervisor is the master's one goroutine that owns the pool: the
// worker table, the generations, the decisions (grow, shrink, reload,
// stop), and everything said to systemd. Every mode runs it: prefork, a
// fixed pool, forking, and nofork and Accept=yes, which are a pool of one
// in-process worker. Other goroutines only feed it events over channels,
// and it never waits on a channel that only it drains: its one send, a
// start request to the spawner, is bounded by spawnInflight, the capacity
// of both the request and the result channel (see room).
//
// Files: supervisor.go (the loop and its seam), table.go (the worker table
// and its transitions), policy.go (how many workers, when to grow and
// shrink), reload.go (generations), stop.go (stop, deadlines, timeouts),
// systemd.go (READY, STATUS, WATCHDOG), forking.go (the master's accept
// loop), host_proc.go and inproc.go (the two ways a worker is started).

// env is the supervisor's view of the world, injected so that its decisions
// can be driven by fakes (supervisor_test.go), as tableflip injects its env.
type env struct {
	now func() time.Time
	// mono is the scoreboard's clock (CLOCK_MONOTONIC ns, shared by every
	// process), for the ages of what workers wrote there.
	mono   func() int64
	notify func(state string) // sd_notify: the master's only line to systemd
	// start begins a kid asynchronously; the result comes back to spawnDone
	// and, later, its exit to reaped. It must not block.
	start func(k *kid)
	// signal sends sig to a kid (SIGTERM, SIGQUIT, SIGKILL, USR1...).
	signal func(k *kid, sig syscall.Signal)
	// watchdog is the WATCHDOG=1 interval; 0: off.
	watchdog time.Duration
}

type mode int

const (
	modePrefork   mode = iota // prefork and the fixed pool
	modeForking               // a process per client, spares ahead
	modeNofork                // one in-process worker
	modeConnected             // Accept=yes: one in-process worker, one client
)

// spawnInflight bounds the start requests the supervisor has outstanding.
// The spawner's request and result channels both hold this many, so neither
// side of the pair can block the other (330 idle clients once wedged a
// master whose two 64-slot queues waited on each other).
const spawnInflight = 32

// tickEvery paces the loop's housekeeping. It bounds how late a pool grows
// without a worker's request, a stuck worker is found, or STATUS is updated.
const tickEvery = 100 * time.Millisecond

// startTimeout bounds how long a new generation may take to become ready
// before its reload is given up (the old generation goes on serving).
const startTimeout = 60 * time.Second

type supervisor struct {
	s     *Server
	log   *logrus.Entry
	env   env
	sb    *scoreboard
	mode  mode
	kids  map[int]*kid // by slot
	free  []int        // free slots
	exits chan<- exitEv

	cur     *generation // what new workers get
	serving *generation // the last generation that became ready; nil before READY=1
	nextGen int

	target     int // prefork: workers kept (TTIN/TTOU change it)
	spares     int // forking: spares kept
	sparesRoom int // the most spares the scoreboard was sized for
	fixed      bool

	inflight   int // start requests without a result yet
	failStreak int
	nextSpawn  time.Time
	growRamp   int // Apache's ramp: spawns a growth may make this tick
	growCredit int
	growAt     time.Time // a growth waits for growAfter until then
	reloadAt   time.Time // when the reload in progress began; zero: none

	stopping bool
	deadline time.Time
	err      error // what Run returns
	// connectedStarted: Accept=yes started its one worker.
	connectedStarted bool
	acc              *forkAcceptor
	waiting          []acceptEv // forking: accepted clients waiting for a start slot or, at maxfork, a worker (maxQueued at most)
	fullSince        time.Time  // forking: since when maxfork workers have been busy
	shedding         bool       // forking: full for maxfork_wait: clients go to on_maxforked
	accPaused        bool       // forking: the accept loop is paused (the pool is full)
	shed             uint64     // forking: clients handed to on_maxforked
	shutdown         func()     // refuses new clients on self-bound listeners at a stop

	served, failed uint64    // by kids already reaped
	warn           warnLimit // the master's own repeated warnings (maxfork refusals)
	status         statusState

	started       time.Time
	epoch         uint32 // claims of slots so far
	quietResize   bool   // workersCmd logs one line for its N steps
	obs           observer
	m             *metrics // nil: metrics_listen is off
	reloadWaiters []reloadWaiter
	lastReload    *control.ReloadResult
	reloads       map[string]uint64
	// What metrics scrapes read from their goroutines, stored once a
	// second by the loop (publish): the loop's own state is the loop's.
	pubStatus    atomic.Pointer[control.Status]
	pubDurations atomic.Pointer[durationSnapshot]
}

// generation is one set of options and what workers are given with them.
// A reload makes a new one; workers of older ones retire once it is ready.
type generation struct {
	n        int
	opts     optionsSnapshot
	failures int // its workers that could not start or died young
}

func newSupervisor(s *Server, m mode, g *generation, e env, sb *scoreboard) *supervisor {
	sv := &supervisor{
		s: s, log: s.log, env: e, sb: sb, mode: m,
		kids: map[int]*kid{}, cur: g, nextGen: g.n + 1,
		growRamp: 1, growCredit: 1, started: e.now(),
	}
	for i := sb.Slots() - 1; i >= 0; i-- {
		sv.free = append(sv.free, i)
	}
	sv.apply(g)
	sv.sparesRoom = sparesRoom(g.opts.o.Spares)
	return sv
}

// apply takes a generation's pool sizes.
func (sv *supervisor) apply(g *generation) {
	o := g.opts.o
	sv.target, sv.spares, sv.fixed = o.Prefork, o.Spares, o.FixedPool()
	sv.s.deferAccept(o)
}

// events are the channels the loop reads, each fed by one goroutine.
type events struct {
	// stops holds TERM and INT alone: os/signal drops a signal when its
	// channel is full, and a storm of HUPs must not crowd out a stop.
	stops   chan os.Signal
	sigs    chan os.Signal
	spawned chan spawnRes // cap spawnInflight
	exits   chan exitEv
	workers chan uint32   // evReady, evGrow from the event pipe or the in-process worker
	brk     chan struct{} // BreakMainLoop, cap 1
	ctl     chan ctlReq   // control socket requests (ctl.go)
}

type exitEv struct {
	slot, pid int
	ws        syscall.WaitStatus
}

func newEvents() *events {
	return &events{
		stops:   make(chan os.Signal, 4),
		sigs:    make(chan os.Signal, 32),
		spawned: make(chan spawnRes, spawnInflight),
		exits:   make(chan exitEv, 64),
		workers: make(chan uint32, 256),
		brk:     make(chan struct{}, 1),
		ctl:     make(chan ctlReq, 16),
	}
}

// catchSignals is the master's signal set: the README's table. SIGPIPE is
// ignored: a client that went away must cost a write error, not the master.
func catchSignals(ev *events) {
	signal.Notify(ev.stops, syscall.SIGTERM, syscall.SIGINT)
	signal.Notify(ev.sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTTIN, syscall.SIGTTOU)
	signal.Ignore(syscall.SIGPIPE)
}

func releaseSignals(ev *events) {
	signal.Stop(ev.stops)
	signal.Stop(ev.sigs)
}

// run is the loop. It returns what Run returns: nil after a normal stop.
func (sv *supervisor) run(ev *events) error {
	sv.s.onBreak(func() {
		select {
		case ev.brk <- struct{}{}:
		default:
		}
	})
	sv.begin()
	every := tickEvery
	if sv.env.watchdog > 0 {
		every = min(every, sv.env.watchdog/2)
		sv.log.Debugf("waiter: watchdog: pinging every %s", sv.env.watchdog)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var growC <-chan time.Time
	for !sv.done() {
		// A stop goes before anything else that is waiting (a queue of
		// slow reloads, a burst of clients).
		select {
		case sig := <-ev.stops:
			sv.signal(sig.(syscall.Signal))
			continue
		default:
		}
		select {
		case sig := <-ev.stops:
			sv.signal(sig.(syscall.Signal))
		case sig := <-ev.sigs:
			sv.signal(sig.(syscall.Signal))
		case <-ev.brk:
			sv.stop("BreakMainLoop")
		case r := <-ev.spawned:
			sv.spawnDone(r)
		case e := <-ev.exits:
			sv.reaped(e)
		case w := <-ev.workers:
			sv.workerEvent(w)
		case c := <-ev.ctl:
			sv.command(c)
		case a, ok := <-sv.accepts():
			if !ok {
				sv.acc.finished()
				continue
			}
			sv.accepted(a)
		case <-growC:
			growC, sv.growAt = nil, time.Time{}
			sv.growAsked()
		case <-tick.C:
			sv.tick()
		}
		sv.startWaiting()
		sv.pace(sv.env.now())
		sv.maintain()
		sv.checkReady()
		// One timer at most for a growth that waits for growAfter: under
		// saturation a worker asks to grow at every client, and a timer
		// per ask would pile up (each firing asking for another).
		if growC == nil && !sv.growAt.IsZero() {
			growC = time.After(max(0, sv.growAt.Sub(sv.env.now())))
		}
	}
	sv.log.Infof("waiter: stopped: %d clients served, %d failed", sv.served, sv.failed)
	return sv.err
}

// accepts is forking mode's accepted clients; nil (never ready) otherwise.
func (sv *supervisor) accepts() <-chan acceptEv {
	if sv.acc == nil || sv.acc.closed {
		return nil
	}
	return sv.acc.out
}

// begin starts the pool.
func (sv *supervisor) begin() {
	o := sv.cur.opts.o
	switch sv.mode {
	case modePrefork:
		sv.log.Infof("waiter: prefork: starting %d workers (up to %d)", sv.target, o.Maxfork)
	case modeForking:
		sv.log.Infof("waiter: forking: one process per client, up to %d, %d spares", o.Maxfork, sv.spares)
	case modeNofork:
		sv.log.Info("waiter: nofork: serving in this process, one client at a time")
	}
	sv.maintain()
	sv.checkReady()
	sv.publish()
}

// done: a stop has begun and every worker and the accept loop are gone.
func (sv *supervisor) done() bool {
	return sv.stopping && len(sv.kids) == 0 && len(sv.waiting) == 0 && (sv.acc == nil || sv.acc.closed)
}

func (sv *supervisor) workerEvent(w uint32) {
	kind, epoch, slot := evParts(w)
	k := sv.kids[slot]
	if k == nil || k.epoch&0xff != epoch {
		return // the slot's previous worker, gone before its report was read
	}
	switch kind {
	case evReady:
		sv.ready(k)
	case evGrow:
		sv.growAsked()
	}
}

// signal handles the master's signals: the README's table.
func (sv *supervisor) signal(sig syscall.Signal) {
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT:
		sv.stop(unix.SignalName(sig))
	case syscall.SIGHUP:
		sv.reload() // a refusal is logged and in STATUS=
	case syscall.SIGUSR1:
		sv.s.hk.SigUSR1()
		sv.propagate(sig)
	case syscall.SIGUSR2:
		sv.s.hk.SigUSR2()
		sv.propagate(sig)
	case syscall.SIGTTIN, syscall.SIGTTOU:
		sv.resize(sig)
	}
}

// propagate forwards USR1/USR2 to every worker with prop_sigusr.
func (sv *supervisor) propagate(sig syscall.Signal) {
	if !sv.cur.opts.o.PropSigusr {
		return
	}
	for _, k := range sv.kids {
		if k.pid > 0 && k.reported {
			sv.env.signal(k, sig)
		}
	}
}

func (sv *supervisor) tick() {
	now := sv.env.now()
	sv.refillGrowth()
	have := sv.census().live
	sv.sb.setFull(sv.mode != modePrefork || have >= sv.cur.opts.o.Maxfork)
	// A worker's request to grow can be lost only if the pipe was full;
	// the flag stays set and is seen here.
	if sv.sb.takeWant() || (sv.mode == modePrefork && sv.sb.idleCount() <= 0 && sv.inflight == 0) {
		sv.grow()
	}
	sv.shrink(now)
	sv.deadlines(now)
	sv.checkReload(now)
	sv.observe(now)
	sv.report(now)
}

// since is how long ago a scoreboard timestamp was.
func (sv *supervisor) since(t int64) time.Duration { return time.Duration(sv.env.mono() - t) }
