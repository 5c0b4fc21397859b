package pool

import (
	"os"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// The worker table: the supervisor's record of every worker, and the one
// place each transition of a worker's life is made.
//
//	         add          ready (evReady)       retire          reaped
//	(none) -------> starting -------------> ready -------> retiring -------> (removed)
//	                   |                                     ^
//	                   +------------- retire ----------------+
//
// A worker retired while starting is told to stop once it reports ready (a
// worker that has not reported may not have its SIGTERM handler yet, and
// would die of the signal), or killed at its deadline if it never does.
// Every retiring worker has a kill deadline: graceful_timeout from its
// retirement, or the stop's deadline, whichever is sooner.

type kidKind int

const (
	kindWorker  kidKind = iota // prefork: a process that accepts by itself
	kindSpare                  // forking: a process waiting to be handed a client
	kindOneshot                // forking: a process started with its client
	kindInproc                 // nofork, Accept=yes: the worker inside the master
)

func (k kidKind) String() string {
	return [...]string{"worker", "spare", "oneshot", "in-process worker"}[k]
}

// Why a worker ended, as the metrics count it.
const (
	causePxIdle         = "px_idle"
	causeMaxRequests    = "max_requests"
	causeMemory         = "memory"
	causeRequestTimeout = "request_timeout"
	causeCrash          = "crash"
	causeRetired        = "retired" // a reload, a stop, TTOU
	causeKilled         = "killed"  // outstayed graceful_timeout or the start timeout
	causeStartFailed    = "start_failed"
	causeClient         = "client" // forking: done with its one client
	causeHook           = "hook"   // on_process or a hook ended it (ErrStopWorker, Fatal, a panic)
)

type kidState int

const (
	kStarting kidState = iota // asked for; pid known once the start result came
	kReady                    // reported ready: serving or waiting for a client
	kRetiring                 // told to finish its client and exit
)

type kid struct {
	slot     int
	pid      int // 0 until the start result came back
	gen      *generation
	kind     kidKind
	state    kidState
	reported bool // it sent evReady
	termSent bool
	client   bool // forking: it has (or had) a client
	handoff  int  // spare: the master's end of the handoff socket, -1 when none
	clientFd int  // oneshot: the client, until the start result came back
	startAt  time.Time
	killAt   time.Time // retiring: SIGKILL after this
	quitAt   time.Time // request_timeout or max_worker_rss_hard sent SIGQUIT
	killedAt time.Time
	cause    string   // why the master ended it (a cause* value), for the exit counts
	slowAt   int64    // the client (its BusySince) slow_request last logged
	epoch    uint32   // the slot's claim (events carry it)
	pidf     *os.File // the supervisor's pidfd of the process (signals go through it); nil: none
	w        *worker  // kindInproc
}

// add claims a free slot and asks the host to start a kid of the current
// generation. The caller has checked room(): a slot is free and the
// spawner has room for one more request.
func (sv *supervisor) add(kind kidKind, clientFd int) *kid {
	slot := sv.free[len(sv.free)-1]
	sv.free = sv.free[:len(sv.free)-1]
	sv.epoch++
	sv.sb.Slot(slot).claim(sv.cur.n, sv.epoch)
	k := &kid{slot: slot, gen: sv.cur, kind: kind, handoff: -1, clientFd: clientFd, startAt: sv.env.now(), epoch: sv.epoch}
	if kind == kindOneshot {
		k.client = true
	}
	sv.kids[slot] = k
	sv.inflight++
	sv.env.start(k)
	return k
}

// spawnDone is the host's answer to add: the pid, or why it failed.
func (sv *supervisor) spawnDone(r spawnRes) {
	sv.inflight--
	k := sv.kids[r.slot]
	if k == nil {
		return
	}
	if r.err != nil {
		sv.log.Errorf("waiter: %v", r.err)
		if sv.m != nil {
			sv.m.spawnFailed()
		}
		sv.failure(k.gen)
		sv.remove(k)
		return
	}
	k.pid, k.pidf = r.pid, r.pidf
	sv.sb.Slot(k.slot).SetPID(r.pid)
	if r.wait != nil {
		go func(slot, pid int, wait func() syscall.WaitStatus) {
			sv.exits <- exitEv{slot: slot, pid: pid, ws: wait()}
		}(k.slot, r.pid, r.wait)
	}
	if k.kind != kindInproc {
		sv.s.hk.ForkOK(r.pid)
	}
	sv.log.Debugf("waiter: started %s pid %d (slot %d, generation %d)", k.kind, k.pid, k.slot, k.gen.n)
	if k.state == kRetiring {
		sv.tell(k) // retired before its pid was known
	}
}

// ready records a kid's ready report.
func (sv *supervisor) ready(k *kid) {
	if !k.reported && sv.m != nil {
		sv.m.spawned(sv.env.now().Sub(k.startAt))
	}
	k.reported = true
	sv.sb.clearStartFailure() // the next failure is news again
	switch k.state {
	case kStarting:
		k.state = kReady
	case kRetiring:
		sv.tell(k)
	}
}

// retire asks a kid to finish its client and exit, by killAt at the latest.
func (sv *supervisor) retire(k *kid, killAt time.Time) {
	if k.state == kRetiring {
		if killAt.Before(k.killAt) {
			k.killAt = killAt
		}
		return
	}
	k.state = kRetiring
	k.killAt = killAt
	if k.kind == kindSpare && !k.client {
		// A waiting spare ends when its handoff socket closes.
		sv.closeHandoff(k)
		return
	}
	sv.tell(k)
}

// tell sends a retiring kid its SIGTERM once it can take it.
func (sv *supervisor) tell(k *kid) {
	if k.termSent || k.pid <= 0 || !k.reported {
		return
	}
	k.termSent = true
	sv.env.signal(k, syscall.SIGTERM)
}

// kill is the end of a kid that outstayed its deadline.
func (sv *supervisor) kill(k *kid, now time.Time, why string) {
	if !k.killedAt.IsZero() || k.pid <= 0 {
		return
	}
	k.killedAt = now
	if k.cause == "" {
		k.cause = causeKilled
	}
	sv.log.WithField("WORKER_PID", k.pid).Warnf("waiter: %s: killing %s pid %d", why, k.kind, k.pid)
	sv.env.signal(k, syscall.SIGKILL)
}

// reaped is a kid's exit.
func (sv *supervisor) reaped(e exitEv) {
	k := sv.kids[e.slot]
	if k == nil || k.pid != e.pid {
		return
	}
	sl := sv.sb.Slot(e.slot)
	sv.served += sl.Served()
	sv.failed += sl.Failed()
	clean := e.ws.Exited() && e.ws.ExitStatus() == 0
	fields := logrus.Fields{"WORKER_PID": e.pid}
	startFailed := e.ws.Exited() && e.ws.ExitStatus() == exitStartFailed && !k.reported
	switch {
	case clean:
		sv.log.WithFields(fields).Debugf("waiter: %s pid %d exited", k.kind, e.pid)
	case startFailed:
		// The worker logged why (once a run of failures).
		sv.log.WithFields(fields).Debugf("waiter: %s pid %d: on_child_start failed", k.kind, e.pid)
	case !k.quitAt.IsZero():
		why := "request_timeout"
		if k.cause == causeMemory {
			why = "max_worker_rss_hard"
		}
		sv.log.WithFields(fields).Warnf("waiter: %s pid %d stopped after %s: %s", k.kind, e.pid, why, describeStatus(e.ws))
	case !k.killedAt.IsZero():
		sv.log.WithFields(fields).Warnf("waiter: %s pid %d killed: %s", k.kind, e.pid, describeStatus(e.ws))
	default:
		sv.log.WithFields(fields).Warnf("waiter: %s pid %d exited abnormally: %s", k.kind, e.pid, describeStatus(e.ws))
	}
	young := !k.reported || sv.env.now().Sub(k.startAt) < time.Second
	// A worker the master killed (request_timeout, a deadline) is no sign
	// that workers cannot start: clients that hold workers must not stop
	// the watchdog's pings.
	killed := !k.quitAt.IsZero() || !k.killedAt.IsZero()
	if !clean && k.state != kRetiring && young && !killed {
		sv.failure(k.gen) // died young: perhaps a crash loop, back off
	} else if clean {
		sv.failStreak = 0
	}
	if sv.m != nil {
		sv.m.exited(exitCause(k, sl, clean, startFailed))
	}
	sv.bury(k)
	sv.remove(k)
	if k.kind != kindInproc {
		sv.s.hk.SigChild(e.pid, e.ws)
	}
}

// exitCause names why a reaped worker ended: the master's reason when it
// had one, else the worker's own (its slot says), else a crash.
func exitCause(k *kid, sl sbSlot, clean, startFailed bool) string {
	switch {
	case k.cause != "":
		return k.cause
	case startFailed:
		return causeStartFailed
	case !clean:
		return causeCrash
	}
	switch sl.ExitWhy() {
	case exitWhyAsked:
		return causeMemory
	case exitWhyMaxRequests:
		return causeMaxRequests
	case exitWhyClient:
		return causeClient
	case exitWhyHook:
		return causeHook
	}
	return causeRetired
}

// remove drops a kid from the table and frees its slot.
func (sv *supervisor) remove(k *kid) {
	sv.closeHandoff(k)
	if k.pidf != nil {
		k.pidf.Close()
		k.pidf = nil
	}
	if k.clientFd >= 0 {
		unix.Close(k.clientFd)
		k.clientFd = -1
	}
	sv.sb.Slot(k.slot).release()
	sv.free = append(sv.free, k.slot)
	delete(sv.kids, k.slot)
}

func (sv *supervisor) closeHandoff(k *kid) {
	if k.handoff >= 0 {
		unix.Close(k.handoff)
		k.handoff = -1
	}
}

// failure counts a worker that could not start or died young, and paces
// the next spawns: 0, 100ms, 200ms, ... up to 5s.
func (sv *supervisor) failure(g *generation) {
	g.failures++
	sv.failStreak++
	if sv.failStreak > 1 {
		d := min(time.Duration(100<<min(sv.failStreak-2, 6))*time.Millisecond, 5*time.Second)
		sv.nextSpawn = sv.env.now().Add(d)
	}
}

// census counts what the decisions need, in one pass over the table.
type census struct {
	live     int // kids of the current generation and the pool's kind, not retiring, without a client
	ready    int // kids of the current generation and the pool's kind, not retiring, that reported ready (a spare that took a client counts)
	starting int // live kids not yet reported
	procs    int // every kid of any generation and state: slots in use
	serving  int // forking: kids with a client not yet done with it
	handed   int // forking: spares of the current generation that took a client and have not exited
}

func (sv *supervisor) census() census {
	var c census
	kind := sv.poolKind()
	for _, k := range sv.kids {
		c.procs++
		if k.client && !sv.doneWithClient(k) {
			c.serving++
		}
		if k.gen != sv.cur || k.state == kRetiring || k.kind != kind {
			continue
		}
		if k.reported {
			c.ready++
		}
		if k.client {
			c.handed++
			continue
		}
		c.live++
		if !k.reported {
			c.starting++
		}
	}
	return c
}

// doneWithClient: a forking worker that has closed its one client (its
// served count went up, or it is exiting) serves no one while it exits, and
// must not make the master refuse the next client at maxfork.
func (sv *supervisor) doneWithClient(k *kid) bool {
	sl := sv.sb.Slot(k.slot)
	return sl.Served() > 0 || sl.State() == stateExiting
}

// poolKind is the kind of kid the pool keeps ready.
func (sv *supervisor) poolKind() kidKind {
	switch sv.mode {
	case modeForking:
		return kindSpare
	case modeNofork, modeConnected:
		return kindInproc
	}
	return kindWorker
}
