package pool

import (
	"fmt"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"
)

// What the master says to systemd (sd_notify(3)), from the supervisor loop
// only: workers have no NOTIFY_SOCKET (workerEnv strips it).

type statusState struct {
	last     string
	at       time.Time // last STATUS= check; zero: check at the next report
	note     string    // a reload refused or failed, until the next reload
	pingAt   time.Time
	tickAt   time.Time
	extendAt time.Time
}

// sdNotify sends one message when NOTIFY_SOCKET is set.
func sdNotify(log logrus.FieldLogger) func(string) {
	return func(state string) {
		if _, err := daemon.SdNotify(false, state); err != nil {
			log.Warnf("waiter: sd_notify %q: %v", state, err)
		}
	}
}

// watchdogInterval returns how often to ping systemd's watchdog (half of
// WATCHDOG_USEC, honouring WATCHDOG_PID), or 0 when it is off.
func watchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}

// report keeps STATUS= current (at most once a second) and pings the
// watchdog. It runs at each tick of the loop.
func (sv *supervisor) report(now time.Time) {
	st := &sv.status
	if now.Sub(st.at) >= time.Second {
		st.at = now
		if s := sv.statusLine(); s != st.last {
			sv.env.notify("STATUS=" + s)
			st.last = s
		}
	}
	sv.ping(now)
	st.tickAt = now
}

func (sv *supervisor) statusLine() string {
	busy, all := sv.sb.Counts()
	served, failed := sv.served, sv.failed
	for _, k := range sv.kids {
		sl := sv.sb.Slot(k.slot)
		served += sl.Served()
		failed += sl.Failed()
	}
	s := fmt.Sprintf("%s: %d workers, %d busy, %d served, %d failed", sv.cur.opts.o.Mode(), all, busy, served, failed)
	if sv.reloadAt.IsZero() == false {
		s = fmt.Sprintf("reloading to generation %d: %s", sv.cur.n, s)
	}
	if sv.stopping {
		s = "stopping: " + s
	}
	if st := sv.statusNote(); st != "" {
		s += "; " + st
	}
	return s
}

// ping sends WATCHDOG=1 from the supervisor loop itself, and only when the
// loop is healthy: this tick came on time (a wedged loop sends nothing at
// all) and the pool can be kept alive (workers start). When spawns keep
// failing the pings stop and systemd restarts the service.
func (sv *supervisor) ping(now time.Time) {
	st := &sv.status
	wd := sv.env.watchdog
	if wd <= 0 || now.Sub(st.pingAt) < wd {
		return
	}
	if !st.tickAt.IsZero() {
		if late := now.Sub(st.tickAt); late > 2*wd {
			sv.log.Warnf("waiter: the supervisor loop was stalled for %s", late)
		}
	}
	if !sv.healthy() {
		if st.pingAt.IsZero() || now.Sub(st.pingAt) < 2*wd {
			sv.log.Errorf("waiter: workers keep failing to start: not pinging the watchdog")
		}
		return
	}
	sv.env.notify("WATCHDOG=1")
	st.pingAt = now
}

// healthy is false when workers cannot be started: several spawns in a row
// failed or died young, and no worker of the serving generation is ready.
func (sv *supervisor) healthy() bool {
	if sv.failStreak < 5 {
		return true
	}
	if sv.mode == modeForking && sv.spares == 0 {
		return false // nothing is ready by design; the failures speak
	}
	for _, k := range sv.kids {
		if k.reported && k.state != kRetiring && (k.gen == sv.serving || k.gen == sv.cur) {
			return true
		}
	}
	return false
}
