package pool

import (
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// How many workers the pool keeps, and when it grows and shrinks.

// growAfter is how long every prefork worker must have been busy with its
// current client before the pool grows. Workers that are all busy only for
// an instant are CPU-bound, and more processes would only share the same
// CPUs at the cost of context switches (measured on 2 cores at c=64: 2
// workers 10,576 conn/s, 8 workers 8,506, 32 workers 7,162).
const growAfter = 20 * time.Millisecond

// maxGrowRamp caps the spawns one tick of growth makes. As in Apache's
// prefork MPM, the ramp doubles each tick that growth is still wanted
// (1, 2, 4, ... 32 per tick) and falls back to 1 when it is not: a burst
// is met quickly, and a flood of idle connections does not make the master
// fork hundreds of processes in one go.
const maxGrowRamp = 32

// sparesRoom is the most spares TTIN may raise the forking pool to: the
// scoreboard is sized for it at start.
func sparesRoom(spares int) int { return spares + 16 }

// slotsFor is the scoreboard's size for the options: the current
// generation (maxfork workers, or maxfork busy oneshots and the spares), a
// second one while a reload starts it, and the spares room of both.
// Workers of generations older than that are retired at once and killed at
// graceful_timeout; while they hold slots, new workers wait for a slot
// rather than fail (see room).
func slotsFor(maxfork, spares int) int { return 2*(maxfork+sparesRoom(spares)) + 2 }

// slotsAtStart sizes the scoreboard with room for a reload to double
// maxfork (and spares) without a restart: a slot is 128 bytes of a sparse
// memfd, and refusing "maxfork 16 to 17" would be a surprise.
func slotsAtStart(maxfork, spares int) int { return slotsFor(2*maxfork, 2*spares) }

// room is how many more kids may be started now: the spawner's bound on
// outstanding requests, the free slots, and in nofork one in-process
// worker at a time (never two serving side by side, even across a reload).
func (sv *supervisor) room(c census) int {
	r := min(spawnInflight-sv.inflight, len(sv.free))
	if sv.mode == modeNofork || sv.mode == modeConnected {
		r = min(r, 1-c.procs)
	}
	return max(r, 0)
}

// want is how many live kids of the pool's kind the current generation
// keeps.
func (sv *supervisor) want(c census) int {
	switch sv.mode {
	case modeForking:
		if c.serving >= sv.cur.opts.o.Maxfork || sv.spares == 0 {
			return 0 // at maxfork a spare would wait for nothing
		}
		// A spare that took a client is replaced when it exits, not while
		// it serves: a start takes both CPUs of a small machine for a few
		// ms, which would be that client's time (measured in waiter-bench).
		// Only when no spare is left waiting does one start at once.
		return max(sv.spares-c.handed, 1)
	case modeNofork:
		return 1
	case modeConnected:
		if sv.connectedStarted {
			return 0 // one client, one worker, then the end
		}
		return 1
	}
	return sv.target
}

// maintain starts what the pool lacks. It runs after every event.
func (sv *supervisor) maintain() {
	if sv.stopping || sv.env.now().Before(sv.nextSpawn) {
		return
	}
	if sv.mode == modeConnected && sv.connectedStarted && len(sv.kids) == 0 {
		sv.stop("the one client is served (Accept=yes)")
		return
	}
	c := sv.census()
	n := sv.want(c) - c.live
	if sv.failStreak > 1 {
		n = min(n, 1-c.starting) // after failures, one at a time
	}
	n = min(n, sv.room(c))
	for ; n > 0; n-- {
		sv.add(sv.poolKind(), -1)
		if sv.mode == modeConnected {
			sv.connectedStarted = true
		}
	}
}

// grow adds prefork workers when every worker is busy, up to maxfork: half
// again as many as there are, at least one, within the tick's ramp.
func (sv *supervisor) grow() {
	if sv.stopping || sv.mode != modePrefork || sv.fixed || sv.env.now().Before(sv.nextSpawn) {
		return
	}
	c := sv.census()
	o := sv.cur.opts.o
	if c.live >= o.Maxfork || c.starting > 0 {
		return // a worker on its way will take a client soon
	}
	// Grow only when every worker has been with its client for growAfter:
	// then clients are slow (waiting on I/O) and more processes serve more
	// of them.
	age := sv.busyAge()
	if age < growAfter {
		if age >= 0 && sv.growAt.IsZero() {
			sv.growAt = sv.env.now().Add(growAfter - age)
		}
		return
	}
	n := min(max(1, c.live/2), o.Maxfork-c.live, sv.growCredit, sv.room(c))
	if n <= 0 {
		if sv.growAt.IsZero() {
			sv.growAt = sv.env.now().Add(tickEvery) // wanted, but not this tick
		}
		return
	}
	sv.growCredit -= n
	sv.log.Debugf("waiter: all %d workers busy: starting %d more", c.live, n)
	for ; n > 0; n-- {
		sv.add(kindWorker, -1)
	}
}

// growAsked is a worker's ask to grow (evGrow), or the timer grow set for
// itself. The scoreboard's want flag stays up while a decision is pending
// (growAt): workers do not ask again meanwhile. Cleared at once, it let
// every client that found the pool all busy ask, hundreds a second under
// saturation, each a wake-up of the master for the same answer (measured:
// 106 ms of the master's CPU a second with clients that speak first).
func (sv *supervisor) growAsked() {
	sv.grow()
	if sv.growAt.IsZero() {
		sv.sb.takeWant()
	}
}

// refillGrowth runs each tick: the ramp doubles while growth used all its
// credit, and falls back to 1 when it did not.
func (sv *supervisor) refillGrowth() {
	if sv.growCredit <= 0 {
		sv.growRamp = min(2*sv.growRamp, maxGrowRamp)
	} else {
		sv.growRamp = 1
	}
	sv.growCredit = sv.growRamp
}

// busyAge returns how long the most recently busy worker of the current
// generation has been with its client, or -1 when a worker is idle or
// still starting (it will take a client soon: no need for more yet).
func (sv *supervisor) busyAge() time.Duration {
	age := time.Duration(-1)
	for _, k := range sv.kids {
		if k.kind != kindWorker || k.gen != sv.cur || k.state == kRetiring {
			continue
		}
		sl := sv.sb.Slot(k.slot)
		b := sl.BusySince()
		if sl.State() != stateBusy || b == 0 {
			return -1
		}
		if a := sv.since(b); age < 0 || a < age {
			age = a
		}
	}
	return age
}

// shrink is px_idle, decided here rather than by each worker alone (which
// let every idle worker exit in the same tick, below prefork): at most one
// worker a tick, the one idle longest, and only while the pool is above
// prefork.
func (sv *supervisor) shrink(now time.Time) {
	if sv.stopping || sv.mode != modePrefork || sv.fixed {
		return
	}
	c := sv.census()
	if c.live <= sv.target {
		return
	}
	px := sv.cur.opts.o.PxIdle.D()
	var pick *kid
	var since int64
	for _, k := range sv.kids {
		if k.kind != kindWorker || k.gen != sv.cur || k.state != kReady {
			continue
		}
		sl := sv.sb.Slot(k.slot)
		if sl.State() != stateIdle {
			continue
		}
		if t := sl.IdleSince(); sv.since(t) >= px && (pick == nil || t < since) {
			pick, since = k, t
		}
	}
	if pick != nil {
		sv.log.Debugf("waiter: worker pid %d idle for %s (px_idle): retiring it", pick.pid, px)
		pick.cause = causePxIdle
		sv.retire(pick, now.Add(sv.cur.opts.o.GracefulTimeout.D()))
	}
}

// resize is gunicorn's TTIN/TTOU: one worker more or fewer (prefork), one
// spare more or fewer (forking). A reload goes back to the file's sizes.
func (sv *supervisor) resize(sig syscall.Signal) (refused string) {
	if sv.stopping {
		return "the server is stopping"
	}
	name := unix.SignalName(sig)
	o := sv.cur.opts.o
	switch sv.mode {
	case modeForking:
		switch {
		case sig == syscall.SIGTTIN && sv.spares >= sv.sparesRoom:
			why := fmt.Sprintf("%d spares is the most this start has room for (spares + 16)", sv.spares)
			sv.log.Warnf("waiter: %s: refused: %s", name, why)
			return why
		case sig == syscall.SIGTTIN:
			sv.spares++
		case sv.spares == 0:
			why := "no spares to take away"
			sv.log.Warnf("waiter: %s: refused: %s", name, why)
			return why
		default:
			sv.spares--
			sv.retireOne(kindSpare)
		}
		if !sv.quietResize {
			sv.log.Infof("waiter: %s: %d spares", name, sv.spares)
		}
	case modePrefork:
		switch {
		case sv.fixed:
			why := fmt.Sprintf("a fixed pool (prefork: -%d) never grows or shrinks", o.Prefork)
			sv.log.Warnf("waiter: %s: refused: %s", name, why)
			return why
		case sig == syscall.SIGTTIN && sv.target >= o.Maxfork:
			why := fmt.Sprintf("the pool is at maxfork (%d)", o.Maxfork)
			sv.log.Warnf("waiter: %s: refused: %s", name, why)
			return why
		case sig == syscall.SIGTTIN:
			sv.target++
		case sv.target <= 1:
			why := "the pool keeps at least one worker"
			sv.log.Warnf("waiter: %s: refused: %s", name, why)
			return why
		default:
			sv.target--
			if sv.census().live > sv.target {
				sv.retireOne(kindWorker)
			}
		}
		if !sv.quietResize {
			sv.log.Infof("waiter: %s: pool of %d workers", name, sv.target)
		}
	default:
		why := fmt.Sprintf("%s serves in one process", o.Mode())
		sv.log.Warnf("waiter: %s: ignored: %s", name, why)
		return why
	}
	return ""
}

// retireOne retires a kid of the current generation: an idle one if any.
func (sv *supervisor) retireOne(kind kidKind) {
	var pick *kid
	for _, k := range sv.kids {
		if k.kind != kind || k.gen != sv.cur || k.state == kRetiring || k.client {
			continue
		}
		if pick == nil || sv.sb.Slot(k.slot).State() == stateIdle {
			pick = k
		}
	}
	if pick != nil {
		sv.retire(pick, sv.env.now().Add(sv.cur.opts.o.GracefulTimeout.D()))
	}
}
