package pool

import (
	"fmt"
	"syscall"
	"time"
)

// Stop and the deadlines the supervisor enforces at each tick.

// quitGrace is how long a worker sent SIGQUIT for request_timeout has to
// write its stacks and exit before SIGKILL.
const quitGrace = 2 * time.Second

// stop begins a graceful stop: STOPPING=1 at once, no more accepting (a
// self-bound listener refuses new clients at once; systemd's sockets stay
// open, and systemd queues clients for the next start), every worker
// finishes its client and exits; after graceful_timeout the rest are killed.
func (sv *supervisor) stop(why string) {
	if sv.stopping {
		return
	}
	sv.stopping = true
	sv.endReloadWaits()
	now := sv.env.now()
	gt := sv.cur.opts.o.GracefulTimeout.D()
	sv.deadline = now.Add(gt)
	sv.env.notify("STOPPING=1")
	busy, all := sv.sb.Counts()
	sv.log.Infof("waiter: %s: stopping; %d of %d workers busy, waiting up to %s", why, busy, all, gt)
	if sv.acc != nil {
		sv.acc.stop()
	}
	for _, k := range sv.kids {
		sv.retire(k, sv.deadline)
	}
	if sv.shutdown != nil {
		sv.shutdown()
	}
	sv.status.at = time.Time{}
	sv.report(now)
}

// deadlines kills what outstayed its time: retiring workers past their
// deadline (graceful_timeout after a reload, a px_idle retirement or a
// stop), workers busy with one client past request_timeout, and workers
// still starting after startTimeout.
func (sv *supervisor) deadlines(now time.Time) {
	rt := sv.cur.opts.o.RequestTimeout.D()
	if sv.stopping && !now.Before(sv.deadline) && len(sv.waiting) > 0 {
		sv.endWaiting()
	}
	for _, k := range sv.kids {
		switch {
		case k.pid <= 0:
			continue
		case !k.killedAt.IsZero():
			if k.kind == kindInproc && now.Sub(k.killedAt) > quitGrace {
				sv.abandon(k)
			}
			continue
		case k.state == kRetiring && !now.Before(k.killAt):
			sv.kill(k, now, fmt.Sprintf("graceful_timeout (%s) passed", k.gen.opts.o.GracefulTimeout))
			continue
		case !k.reported && now.Sub(k.startAt) > startTimeout:
			sv.kill(k, now, fmt.Sprintf("not ready after %s", startTimeout))
			continue
		case !k.quitAt.IsZero():
			if now.Sub(k.quitAt) <= quitGrace {
				continue
			}
			if k.kind == kindInproc {
				sv.abandon(k) // its client is closed already; nothing more to try
			} else {
				sv.kill(k, now, "request_timeout: no exit after SIGQUIT")
			}
			continue
		}
		sl := sv.sb.Slot(k.slot)
		b := sl.BusySince()
		if sl.State() != stateBusy || b <= 0 {
			continue
		}
		busy := sv.since(b)
		if rt > 0 && busy > rt {
			sv.log.WithField("WORKER_PID", k.pid).Errorf("waiter: %s pid %d busy with one client for over %s (request_timeout): writing its stacks and ending it", k.kind, k.pid, rt)
			k.quitAt = now
			k.cause = causeRequestTimeout
			sv.env.signal(k, syscall.SIGQUIT)
			continue
		}
		if slow := sv.cur.opts.o.SlowRequest.D(); slow > 0 && busy > slow && k.slowAt != b && k.reported {
			sv.slowRequest(k, b)
		}
	}
	if sv.stopping && now.Sub(sv.status.extendAt) >= time.Second {
		// Draining may outlast TimeoutStopSec: ask for the time it needs.
		if left := sv.deadline.Sub(now) + 5*time.Second; left > 0 {
			sv.env.notify(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", left.Microseconds()))
		}
		sv.status.extendAt = now
	}
}

// abandon gives up an in-process worker whose hook did not return after its
// client was closed: a goroutine cannot be killed, and a second worker must
// not serve beside it, so the server stops and Run returns ErrStuck (systemd's
// Restart= starts it again; its socket keeps the clients meanwhile).
func (sv *supervisor) abandon(k *kid) {
	sv.log.Errorf("waiter: the in-process worker did not return %s after its client was closed: stopping with status 1 so that the service restarts", quitGrace)
	sv.remove(k)
	sv.err = ErrStuck
	sv.log.Error(ErrStuck.Error())
	sv.stop("a stuck in-process worker")
}

// slowRequest has a worker busy past slow_request log its stacks and its
// client, once per client (b is when that client began); it goes on.
func (sv *supervisor) slowRequest(k *kid, b int64) {
	k.slowAt = b
	sv.obs.slow++
	// One stack dump a second across the pool: many slow clients at once
	// (idle ones count, being busy) must not flood the journal.
	ok, held := sv.warn.allow("slow_request")
	if !ok {
		return
	}
	if held > 0 {
		sv.log.Warnf("waiter: %d more clients were slow (slow_request %s) since the last stack dump; one is logged a second at most", held, sv.cur.opts.o.SlowRequest)
	}
	sl := sv.sb.Slot(k.slot)
	if k.kind != kindInproc {
		sl.askStacks(stacksLog)
		sv.env.signal(k, sigStacks)
		return
	}
	if k.w != nil {
		k.w.logSlow(allStacks(maxStacksMsg))
	}
}
