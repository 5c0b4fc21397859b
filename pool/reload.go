package pool

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"time"

	"github.com/waiter-go/waiter/config"
)

// Generations and reload. A HUP makes a new generation of workers with the
// options read anew; the old one retires once the new one is ready, so no
// client is refused or cut. A HUP during a reload supersedes it: the
// newest generation wins and the one it replaces retires at once. Every
// RELOADING=1 is followed by READY=1: when the newest generation is ready,
// or at once when the reload is refused (with an error and STATUS= saying
// why), or when its workers cannot start (the old generation serves on).

// optionsSnapshot is what workers of a generation are given.
type optionsSnapshot struct {
	o        config.Options
	optsJSON string
	carry    string      // the program's settings (Server.Load's or Carry), JSON
	settings any         // the master's value of them (Server.Load's)
	tlsPEM   []byte      // the TLS files as checked (JSON), for worker processes
	tls      *tls.Config // the same, for the in-process worker
}

// snapshot prepares a generation's options and settings once, not per
// spawn.
func (s *Server) snapshot(o config.Options, settings any) (optionsSnapshot, []string, error) {
	snap := optionsSnapshot{o: o, settings: settings}
	b, err := json.Marshal(o)
	if err != nil {
		return snap, nil, fmt.Errorf("pool: options: %w", err)
	}
	snap.optsJSON = string(b)
	carry := s.Carry
	if s.Load != nil {
		carry = settings
	}
	if carry != nil {
		c, err := json.Marshal(carry)
		if err != nil {
			return snap, nil, fmt.Errorf("pool: Carry: %w", err)
		}
		snap.carry = string(c)
	}
	if s.TLSConfig != nil {
		snap.tls = s.TLSConfig
		return snap, nil, nil
	}
	cfg, pem, warns, err := masterTLS(o)
	if err != nil {
		return snap, nil, err
	}
	snap.tls, snap.tlsPEM = cfg, pem
	return snap, warns, nil
}

// reload is SIGHUP, and waiterctl reload. It returns why it was refused
// (already logged, in STATUS= and answered with READY=1), or nil when a
// new generation is starting.
func (sv *supervisor) reload() error {
	if sv.stopping {
		return errStopping
	}
	sv.s.hk.SigHUP() // on_sig_hup: a reload is a reload, however it was asked for
	now := sv.env.now()
	sv.env.notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonic()/1000))
	snap, err := sv.loadOptions()
	if err != nil {
		sv.refuse(err)
		return err
	}
	g := &generation{n: sv.nextGen, opts: snap}
	sv.nextGen++
	if sv.cur != sv.serving {
		// Superseded: the generation still starting retires now.
		for _, k := range sv.kids {
			if k.gen == sv.cur {
				sv.retire(k, now.Add(sv.cur.opts.o.GracefulTimeout.D()))
			}
		}
		sv.log.Infof("waiter: SIGHUP during a reload: generation %d superseded", sv.cur.n)
	}
	sv.cur = g
	sv.apply(g)
	sv.s.setCurrent(g.opts.o, g.opts.settings)
	sv.reloadAt = now
	sv.failStreak, sv.nextSpawn = 0, time.Time{}
	if sv.mode == modeNofork {
		// One in-process worker at a time: the old one finishes its client
		// before the new one starts (room() waits for it).
		for _, k := range sv.kids {
			if k.gen != g {
				sv.retire(k, now.Add(g.opts.o.GracefulTimeout.D()))
			}
		}
	}
	sv.log.Infof("waiter: SIGHUP: reloading: starting generation %d", g.n)
	return nil
}

// loadOptions reads the options anew (Server.Reload) and checks that this
// running master can take them.
func (sv *supervisor) loadOptions() (optionsSnapshot, error) {
	old := sv.cur.opts.o
	o, settings := old, sv.cur.opts.settings
	if sv.s.Reload != nil || sv.s.Load != nil {
		var n config.Options
		var err error
		if sv.s.Load != nil {
			n, settings, err = sv.s.Load()
		} else {
			n, err = sv.s.Reload()
		}
		if err != nil {
			return optionsSnapshot{}, err
		}
		for _, note := range n.Normalize() {
			sv.log.Warn(note)
		}
		if err := n.Validate(); err != nil {
			return optionsSnapshot{}, err
		}
		if n.Nofork != old.Nofork || (n.Prefork == 0) != (old.Prefork == 0) {
			return optionsSnapshot{}, fmt.Errorf("changing the mode (%s to %s) needs a restart", old.Mode(), n.Mode())
		}
		spares := 0
		if sv.mode == modeForking {
			spares = n.Spares // spares are forking mode's alone
		}
		if need := slotsFor(n.Maxfork, spares); need > sv.sb.Slots() && (sv.mode == modePrefork || sv.mode == modeForking) {
			return optionsSnapshot{}, fmt.Errorf("maxfork %d with spares %d needs a restart: this start has room for %d workers",
				n.Maxfork, spares, sv.sb.Slots())
		}
		if bound := sv.s.Options; n.Listen != bound.Listen || n.Port != bound.Port {
			sv.log.Warn("waiter: reload: a new listen address or port takes a restart; still serving the one of the start")
		}
		if start := sv.s.Options; n.Control != start.Control || n.MetricsListen != start.MetricsListen || n.Backlog != start.Backlog {
			sv.log.Warn("waiter: reload: a new control, metrics_listen or backlog takes a restart; still using those of the start")
		}
		o = n
	}
	snap, warns, err := sv.s.snapshot(o, settings)
	for _, w := range warns {
		sv.log.Warnf("waiter: %s", w)
	}
	return snap, err
}

// refuse ends a reload that cannot be made: the running generation serves
// on with its options.
func (sv *supervisor) refuse(err error) {
	sv.log.Errorf("waiter: reload refused, keeping the running options: %v", err)
	sv.status.note = "reload refused: " + err.Error()
	sv.reloadResult(0, "refused", err.Error()) // no generation: no waiter is answered but the asker
	sv.status.at = time.Time{}                 // say it now
	sv.report(sv.env.now())
	if sv.cur == sv.serving {
		sv.env.notify("READY=1")
	} // else the reload in progress ends with its own READY=1
}

// checkReady sends READY=1 once the current generation can serve: its
// prefork workers (the initial number), one of its spares, or the
// in-process worker have reported ready. During a reload this is also when every
// older generation retires.
func (sv *supervisor) checkReady() {
	if sv.cur == sv.serving || sv.stopping {
		return
	}
	need := 1
	switch sv.mode {
	case modePrefork:
		need = sv.target
	case modeForking:
		// One spare of the generation proves it starts: under load each
		// spare takes a client as soon as it is ready, and waiting for all
		// of them at once could wait for ever.
		need = min(sv.spares, 1)
		if sv.census().serving >= sv.cur.opts.o.Maxfork {
			need = 0 // at maxfork no spare starts: the next worker gets the new options
		}
	}
	if sv.census().ready < need {
		return
	}
	now := sv.env.now()
	for _, k := range sv.kids {
		if k.gen != sv.cur {
			sv.retire(k, now.Add(sv.cur.opts.o.GracefulTimeout.D()))
		}
	}
	if sv.serving != nil || len(sv.reloadWaiters) > 0 {
		// A reload asked for before the first READY=1 superseded the
		// start: it is done too.
		sv.log.Infof("waiter: reloaded: generation %d serving", sv.cur.n)
		sv.status.note = ""
		sv.reloadResult(sv.cur.n, "ok", "")
	}
	sv.serving = sv.cur
	sv.reloadAt = time.Time{}
	if sv.acc != nil {
		sv.acc.setTimeout(sv.cur.opts.o.Timeout.D())
	}
	sv.env.notify("READY=1")
}

// checkReload gives up a reload whose workers cannot start: several died
// young with none ready, or startTimeout passed. The old generation goes
// on serving with its options.
func (sv *supervisor) checkReload(now time.Time) {
	if sv.reloadAt.IsZero() || sv.serving == nil || sv.cur == sv.serving {
		return
	}
	c := sv.census()
	var why string
	switch {
	case sv.cur.failures >= 5 && c.ready == 0:
		why = fmt.Sprintf("%d of its workers failed to start", sv.cur.failures)
	case now.Sub(sv.reloadAt) > startTimeout:
		why = fmt.Sprintf("not ready after %s", startTimeout)
	default:
		return
	}
	failed := sv.cur.n
	sv.log.Errorf("waiter: reload failed: generation %d: %s; generation %d serves on", failed, why, sv.serving.n)
	sv.reloadResult(failed, "failed", fmt.Sprintf("generation %d: %s; generation %d serves on", failed, why, sv.serving.n))
	for _, k := range sv.kids {
		if k.gen == sv.cur {
			sv.retire(k, now.Add(sv.serving.opts.o.GracefulTimeout.D()))
		}
	}
	sv.cur = sv.serving
	sv.apply(sv.cur)
	sv.s.setCurrent(sv.cur.opts.o, sv.cur.opts.settings)
	sv.reloadAt = time.Time{}
	sv.failStreak, sv.nextSpawn = 0, time.Time{}
	sv.status.note = fmt.Sprintf("reload failed: generation %d: %s", failed, why)
	sv.status.at = time.Time{}
	sv.env.notify("READY=1")
}
