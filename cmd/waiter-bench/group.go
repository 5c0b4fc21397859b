package main

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// A group is modes measured together, in the same slices of time, so that
// their ratio does not depend on the load of the moment on a shared
// machine: plain prefork with its variants (prefork+ops, prefork+proxy1,
// prefork+proxy2), prefork with echo on with its PROXY variants
// (prefork+echo+proxy1, prefork+echo+proxy2), and forking (no spares) with
// the bare spawn loop. The first mode of a group is the one the others are
// compared with.

// preforkVariants are compared with plain prefork, in this order.
var preforkVariants = []string{"prefork+ops", "prefork+proxy1", "prefork+proxy2"}

// echoVariants are compared with prefork+echo, in this order.
var echoVariants = []string{"prefork+echo+proxy1", "prefork+echo+proxy2"}

// groups are the groups of the run's modes, each of two modes or more.
func (b *bench) groups() [][]string {
	var gs [][]string
	for _, base := range []struct {
		mode     string
		variants []string
	}{{"prefork", preforkVariants}, {"prefork+echo", echoVariants}} {
		if !slices.Contains(b.st.Modes, base.mode) {
			continue
		}
		g := []string{base.mode}
		for _, m := range base.variants {
			if slices.Contains(b.st.Modes, m) {
				g = append(g, m)
			}
		}
		if len(g) > 1 {
			gs = append(gs, g)
		}
	}
	if slices.Contains(b.st.Modes, "forking") && slices.Contains(b.st.Modes, "spawn") {
		gs = append(gs, []string{"forking", "spawn"})
	}
	return gs
}

// groupOf is the group mode belongs to, if any.
func (b *bench) groupOf(mode string) ([]string, bool) {
	for _, g := range b.groups() {
		if slices.Contains(g, mode) {
			return g, true
		}
	}
	return nil, false
}

// sliceLen is about how long one slice of a grouped measurement lasts.
const sliceLen = time.Second

// sliceCount is how many slices of about sliceLen make d.
func sliceCount(d time.Duration) int { return max(1, int((d+sliceLen/2)/sliceLen)) }

// slicePair is one slice of a group's first mode (base) and one of another
// mode (other) at one concurrency, from the same turn of slices.
type slicePair struct{ base, other loadResult }

// rotation is the order in which a group of n takes its slices in turn i
// of round r: each turn starts one further on, so that in n turns each
// mode has gone first once, and each pair of modes has run in both orders.
// Two modes alternate.
func rotation(n, i, r int) []int {
	order := make([]int, n)
	for j := range order {
		order[j] = (i + j + r) % n
	}
	return order
}

// groupMember is one mode of a group in a round: a server (and its
// watchers, when watched), or the spawn loop (no server).
type groupMember struct {
	mode string
	s    *server
	w    *watcher
}

// measureGroup measures a group's modes in one round. Every server of the
// group is up for the whole round, and their measured load comes in
// slices of about a second (-duration of each in all), one of each mode
// per turn, in the rotating order above, so that all see the same
// machine: a load from elsewhere that comes and goes over seconds falls on
// all of them alike. Which server starts first rotates round to round too.
// A watched server's watchers are on only while it is under load (its
// warm-up too), so that their cost falls on it alone. The spawn loop has
// no server and no warm-up.
func (b *bench) measureGroup(ctx context.Context, g []string, round int) error {
	ms := make([]groupMember, len(g))
	for _, k := range rotation(len(g), 0, round-1) {
		ms[k].mode = g[k]
		if g[k] == "spawn" {
			continue
		}
		spec := b.specs[g[k]]
		s, err := startServer(ctx, spec, b.dir, false)
		if err != nil {
			return err
		}
		defer s.stop()
		ms[k].s = s
		if spec.Watch {
			w, err := watchServer(s)
			if err != nil {
				return err
			}
			defer w.stop() // before the server (defers run last first)
			ms[k].w = w
		}
	}
	load := func(m groupMember, o loadOptions) (loadResult, error) {
		if m.s == nil {
			r, err := spawnRate(ctx, b.waiterd, o.Conc, o.Duration, o.Keep)
			if err != nil {
				err = fmt.Errorf("spawn rate: %w", err)
			}
			return r, err
		}
		o.Addr, o.Proxy, o.Echo = m.s.addr, m.s.spec.Proxy, m.s.spec.Echo
		return b.loadOn(ctx, m.s, m.w, o)
	}
	n := sliceCount(b.st.Duration)
	for _, c := range b.st.Concs {
		o := loadOptions{Conc: c, Timeout: b.st.Timeout, Engine: b.st.Engine}
		if b.st.Warmup > 0 {
			o.Duration = b.st.Warmup
			for _, m := range ms {
				if m.s == nil {
					continue
				}
				if _, err := load(m, o); err != nil {
					return err
				}
			}
		}
		parts := make([][]loadResult, len(g))
		o.Duration, o.Keep = b.st.Duration/time.Duration(n), true
		for i := 0; i < n; i++ {
			for _, k := range rotation(len(g), i, round) {
				r, err := load(ms[k], o)
				if err != nil {
					return err
				}
				parts[k] = append(parts[k], r)
			}
			for k := 1; k < len(g); k++ {
				p, q := parts[0][i], parts[k][i]
				p.raw, q.raw = nil, nil
				key := rowKey{g[k], c}
				b.pairs[key] = append(b.pairs[key], slicePair{p, q})
			}
		}
		for k, m := range ms {
			b.record(m.mode, round, mergeResults(parts[k]))
		}
	}
	for _, m := range ms {
		if m.s == nil {
			continue
		}
		select {
		case <-m.s.exited:
			return fmt.Errorf("%s exited during the load (%s):\n%s", m.mode, m.s.cmd.ProcessState, m.s.stderrTail())
		default:
		}
	}
	for _, m := range ms {
		if m.w != nil {
			if err := b.recordWatch(m.mode, round, m.w.stop()); err != nil {
				return err
			}
		}
	}
	for _, m := range ms {
		if m.s != nil {
			if err := m.s.stop(); err != nil {
				return err
			}
		}
	}
	return nil
}
