package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// row is the medians of one mode at one concurrency over the rounds.
type row struct {
	perSec             float64
	p50, p90, p99, max time.Duration
	errs               errCounts // summed over the rounds
	ok                 int       // summed over the rounds
}

func medianRow(rs []loadResult) row {
	var per []float64
	var p50, p90, p99, mx []time.Duration
	var r row
	for _, x := range rs {
		per = append(per, x.PerSec)
		p50 = append(p50, x.Lat.P50)
		p90 = append(p90, x.Lat.P90)
		p99 = append(p99, x.Lat.P99)
		mx = append(mx, x.Lat.Max)
		r.errs.add(x.Errs)
		r.ok += x.OK
	}
	r.perSec = median(per)
	r.p50, r.p90, r.p99, r.max = median(p50), median(p90), median(p99), median(mx)
	return r
}

func (b *bench) row(mode string, c int) (row, bool) {
	rs, ok := b.res[rowKey{mode, c}]
	if !ok || len(rs) == 0 {
		return row{}, false
	}
	return medianRow(rs), true
}

func (b *bench) modeLabel(m string) string {
	switch m {
	case "baseline":
		return "baseline (Go, goroutine per conn)"
	case "nofork":
		return "waiterd nofork"
	case "forking":
		return "waiterd forking, no spares"
	case "spares":
		return fmt.Sprintf("waiterd forking, %d spares", b.st.Spares)
	case "prefork":
		return fmt.Sprintf("waiterd prefork %d..%d", b.st.Prefork, b.st.Maxfork)
	case "prefork+ops":
		return fmt.Sprintf("prefork %d..%d, metrics+control watched", b.st.Prefork, b.st.Maxfork)
	case "prefork+proxy1", "prefork+proxy2":
		return fmt.Sprintf("prefork %d..%d, PROXY v%s header", b.st.Prefork, b.st.Maxfork, strings.TrimPrefix(m, "prefork+proxy"))
	case "prefork+echo":
		return fmt.Sprintf("prefork %d..%d, echo", b.st.Prefork, b.st.Maxfork)
	case "prefork+echo+proxy1", "prefork+echo+proxy2":
		return fmt.Sprintf("prefork %d..%d, echo, PROXY v%s header", b.st.Prefork, b.st.Maxfork, strings.TrimPrefix(m, "prefork+echo+proxy"))
	case "spares-paced":
		return fmt.Sprintf("waiterd forking, %d spares, paced %s", b.st.Spares, b.st.Pace)
	case "spawn":
		return "spawn: waiterd -version"
	}
	return m
}

// report prints the table, the start-up figures and the targets.
func (b *bench) report(w io.Writer) {
	fmt.Fprintf(w, "\nwaiter-bench: %s\n", machine())
	fmt.Fprintf(w, "%d round(s) of %s (after %s warm-up) per row, medians; load generator on the same machine (%s clients), loopback; run took %s; load average %s at the start, %s at the end\n\n",
		b.st.Rounds, b.st.Duration, b.st.Warmup, b.st.Engine, time.Since(b.began).Round(time.Second), b.loadStart, loadAvg())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tc\tconn/s\tx base\tp50\tp90\tp99\tp99 x base\tmax\terrors\tx spawn\t")
	var modes []string
	for _, m := range b.st.Modes {
		modes = append(modes, m)
		if m == "spares" {
			modes = append(modes, "spares-paced")
		}
	}
	for _, m := range modes {
		concs := b.st.Concs
		if m == "spares-paced" {
			concs = []int{1}
		}
		for _, c := range concs {
			r, ok := b.row(m, c)
			if !ok {
				continue
			}
			xb, xp99, xs := "-", "-", "-"
			if base, ok := b.row("baseline", c); ok && m != "spawn" && m != "spares-paced" {
				xb = ratio(r.perSec, base.perSec)
				xp99 = ratio(float64(r.p99), float64(base.p99))
			}
			if sp, ok := b.row("spawn", c); ok && (m == "forking" || m == "spares") {
				xs = ratio(r.perSec, sp.perSec)
			}
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", b.modeLabel(m), c, r.perSec, xb,
				fmtDur(r.p50), fmtDur(r.p90), fmtDur(r.p99), xp99, fmtDur(r.max), fmtErrs(r.errs), xs)
		}
	}
	tw.Flush()
	if slices.Contains(b.st.Modes, "spawn") {
		fmt.Fprintln(w, "\nspawn rows: fork+exec+exit+wait of the waiterd binary per second from c loops; latency is one whole spawn.")
	}
	b.opsReport(w)
	b.proxyReport(w)
	b.spawnReport(w)
	if len(b.starts) > 0 {
		ready, first, rss, pss := b.startMedians()
		m := b.starts[0].mem
		fmt.Fprintf(w, "\nprefork %d..%d start (median of %d): fork to READY=1 %s, to first client served %s\n",
			b.st.Prefork, b.st.Maxfork, len(b.starts), fmtDur(ready), fmtDur(first))
		fmt.Fprintf(w, "prefork %d..%d idle, %d processes (master + workers): RSS %s, PSS %s (smaps_rollup)\n",
			b.st.Prefork, b.st.Maxfork, m.Procs, fmtMiB(rss), fmtMiB(pss))
	}
	b.targets(w)
}

func (b *bench) startMedians() (ready, first time.Duration, rss, pss int64) {
	var r, f []time.Duration
	var rs, ps []int64
	for _, s := range b.starts {
		r = append(r, s.ready)
		f = append(f, s.first)
		rs = append(rs, s.mem.RSS)
		ps = append(ps, s.mem.PSS)
	}
	return median(r), median(f), median(rs), median(ps)
}

// targets prints issue 7's targets, each with what this run measured. It
// judges nothing by its exit status: timings on a shared machine vary.
func (b *bench) targets(w io.Writer) {
	type target struct {
		what       string
		have, want string
		met        bool
		by         string
	}
	var ts []target
	atLeast := func(what string, have, want float64, unit string) {
		by := fmt.Sprintf("%+.0f%%", (have/want-1)*100)
		ts = append(ts, target{what, fmt.Sprintf("%.2f%s", have, unit), fmt.Sprintf(">= %.2f%s", want, unit), have >= want, by})
	}
	atMost := func(what string, have, want float64, unit string) {
		by := fmt.Sprintf("%+.0f%%", (have/want-1)*100)
		ts = append(ts, target{what, fmt.Sprintf("%.2f%s", have, unit), fmt.Sprintf("<= %.2f%s", want, unit), have <= want, by})
	}
	vsBase := func(mode string, c int, want float64) {
		r, ok1 := b.row(mode, c)
		base, ok2 := b.row("baseline", c)
		if ok1 && ok2 && base.perSec > 0 {
			atLeast(fmt.Sprintf("%s c=%d conn/s vs baseline", mode, c), r.perSec/base.perSec, want, "x")
		}
	}
	vsBase("prefork", 64, 0.85)
	if r, ok := b.row("prefork", 64); ok {
		if base, ok := b.row("baseline", 64); ok && base.p99 > 0 {
			atMost("prefork c=64 p99 vs baseline", float64(r.p99)/float64(base.p99), 1.5, "x")
		}
	}
	if r, ok := b.ratioOf("prefork+ops", "prefork", 64); ok {
		atLeast("prefork+ops c=64 conn/s vs prefork (same run)", r, 0.97, "x")
	}
	for _, m := range []string{"prefork+proxy1", "prefork+proxy2"} {
		if r, ok := b.ratioOf(m, "prefork", 64); ok {
			atLeast(m+" c=64 conn/s vs prefork (same run)", r, 0.95, "x")
		}
	}
	for _, m := range echoVariants {
		if r, ok := b.ratioOf(m, "prefork+echo", 64); ok {
			atLeast(m+" c=64 conn/s vs prefork+echo (same run)", r, 0.95, "x")
		}
	}
	vsBase("prefork", 1, 0.9)
	vsBase("nofork", 1, 0.9)
	if r, ok := b.row("forking", 8); ok {
		atLeast("forking c=8 conn/s", r.perSec, 1000, "")
	}
	if r, ok := b.row("spares", 1); ok {
		atMost("spares c=1 p50 (ms)", r.p50.Seconds()*1000, 1, "")
	}
	if r, ok := b.row("spares-paced", 1); ok {
		atMost(fmt.Sprintf("spares c=1 paced %s p50 (ms)", b.st.Pace), r.p50.Seconds()*1000, 1, "")
	}
	if r, ok := b.ratioOf("forking", "spawn", 8); ok {
		atLeast("forking c=8 conn/s vs bare spawn (same run)", r, 0.85, "x")
	}
	if len(b.starts) > 0 {
		ready, _, _, pss := b.startMedians()
		atMost(fmt.Sprintf("prefork %d idle PSS (MiB)", b.st.Prefork), float64(pss)/(1<<20), 16, "")
		atMost(fmt.Sprintf("prefork %d READY=1 after start (ms)", b.st.Prefork), ready.Seconds()*1000, 30, "")
	}
	if len(ts) == 0 {
		return
	}
	fmt.Fprintln(w, "\ntargets (issue 7, the metrics issue's ops cost, the PROXY protocol's cost, plain and against echo; for people to judge: this exit status does not depend on them)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\thave\twant\t\tby")
	for _, t := range ts {
		v := "MISSED"
		if t.met {
			v = "met"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.what, t.have, t.want, v, t.by)
	}
	tw.Flush()
}

// ratioOf is num's median conn/s over den's at c.
func (b *bench) ratioOf(num, den string, c int) (float64, bool) {
	n, ok1 := b.row(num, c)
	d, ok2 := b.row(den, c)
	if !ok1 || !ok2 || d.perSec == 0 {
		return 0, false
	}
	return n.perSec / d.perSec, true
}

// pairedRatios are num's figure over den's round by round (the two ran in
// the same slices of time in each), sorted: their spread is the noise the
// ratio of the medians carries.
func (b *bench) pairedRatios(num, den string, c int, of func(loadResult) float64) []float64 {
	ns, ds := b.res[rowKey{num, c}], b.res[rowKey{den, c}]
	var out []float64
	for i := 0; i < len(ns) && i < len(ds); i++ {
		if of(ds[i]) > 0 && of(ns[i]) > 0 {
			out = append(out, of(ns[i])/of(ds[i]))
		}
	}
	slices.Sort(out)
	return out
}

func perSec(r loadResult) float64     { return r.PerSec }
func cpuPerConn(r loadResult) float64 { return float64(r.cpuPerConn()) }

// medianCPU is a mode's median server CPU time per connection at c.
func (b *bench) medianCPU(mode string, c int) time.Duration {
	var v []time.Duration
	for _, r := range b.res[rowKey{mode, c}] {
		if d := r.cpuPerConn(); d > 0 {
			v = append(v, d)
		}
	}
	return median(v)
}

// masterPerSec is a mode's median master CPU time per second of load at c
// (what being watched costs the master, beside the workers).
func (b *bench) masterPerSec(mode string, c int) time.Duration {
	var v []time.Duration
	for _, r := range b.res[rowKey{mode, c}] {
		if r.CPU > 0 && r.Window > 0 {
			v = append(v, time.Duration(float64(r.MasterCPU)/r.Window.Seconds()))
		}
	}
	return median(v)
}

// sliceRatios are num's figure over den's in each slice pair at c (one of
// the two is its group's first mode), unsorted.
func (b *bench) sliceRatios(num, den string, c int, of func(loadResult) float64) []float64 {
	var r []float64
	if ps, ok := b.pairs[rowKey{num, c}]; ok {
		for _, p := range ps {
			if of(p.base) > 0 && of(p.other) > 0 {
				r = append(r, of(p.other)/of(p.base))
			}
		}
		return r
	}
	for _, p := range b.pairs[rowKey{den, c}] {
		if of(p.base) > 0 && of(p.other) > 0 {
			r = append(r, of(p.base)/of(p.other))
		}
	}
	return r
}

// sliceSpread is num's figure over den's in the slice pairs at c: their
// median and middle half (with a few pairs, their range).
func (b *bench) sliceSpread(num, den string, c int, of func(loadResult) float64) string {
	r := b.sliceRatios(num, den, c, of)
	if len(r) < 2 {
		return ""
	}
	slices.Sort(r)
	lo, hi := r[0], r[len(r)-1]
	what := "range"
	if len(r) >= 8 {
		// Nearest ranks of the first and third quartiles.
		lo, hi = r[(len(r)+3)/4-1], r[(3*len(r)+3)/4-1]
		what = "middle half"
	}
	return fmt.Sprintf("; %d slice pairs of %s: median %.3f, %s %.3f..%.3f", len(r), b.sliceDur(), median(r), what, lo, hi)
}

// sliceDur is how long each slice of a grouped measurement lasted.
func (b *bench) sliceDur() time.Duration {
	return b.st.Duration / time.Duration(sliceCount(b.st.Duration))
}

// spread prints sorted ratios as their range and median.
func spread(r []float64) string {
	if len(r) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f..%.3f, median %.3f", r[0], r[len(r)-1], median(r))
}

// procRange is the smallest and largest process count (master and
// workers) a mode had at the end of its rounds at c.
func (b *bench) procRange(mode string, c int) string {
	var n []int
	for _, r := range b.res[rowKey{mode, c}] {
		if r.Procs > 0 {
			n = append(n, r.Procs)
		}
	}
	if len(n) == 0 {
		return "-"
	}
	lo, hi := slices.Min(n), slices.Max(n)
	if lo == hi {
		return fmt.Sprint(lo)
	}
	return fmt.Sprintf("%d..%d", lo, hi)
}

// pairedHow says how two modes were measured against each other.
func (b *bench) pairedHow(num, den string) string {
	g, ok := b.groupOf(num)
	switch {
	case !ok || !slices.Contains(g, den):
		return "same run"
	case slices.Contains(g, "spawn"):
		return fmt.Sprintf("loaded in alternate slices of %s", b.sliceDur())
	}
	return fmt.Sprintf("%d pools up at once (%s), loaded in turn in slices of %s", len(g), strings.Join(g, ", "), b.sliceDur())
}

// compare prints num against den at each concurrency, num called as and
// den ds: the ratio of the medians, the rounds' and the slice pairs'
// ratios, and, when both have it, the server CPU per connection.
func (b *bench) compare(w io.Writer, num, den, ns, ds string) {
	for _, c := range b.st.Concs {
		r, ok := b.ratioOf(num, den, c)
		if !ok {
			continue
		}
		n, _ := b.row(num, c)
		d, _ := b.row(den, c)
		procs := ""
		if pn, pd := b.procRange(num, c), b.procRange(den, c); pn != "-" && pd != "-" {
			procs = fmt.Sprintf("; processes %s %s, %s %s", ns, pn, ds, pd)
		}
		fmt.Fprintf(w, "  c=%-3d conn/s %s %.0f, %s %.0f: %.3fx of %s; p99 %s %s, %s %s%s\n",
			c, ns, n.perSec, ds, d.perSec, r, ds, ns, fmtDur(n.p99), ds, fmtDur(d.p99), procs)
		many := b.st.Rounds > 1 || len(b.sliceRatios(num, den, c, perSec)) > 1
		if many {
			fmt.Fprintf(w, "        %s/%s round by round %s%s\n", ns, ds, spread(b.pairedRatios(num, den, c, perSec)), b.sliceSpread(num, den, c, perSec))
		}
		if on, off := b.medianCPU(num, c), b.medianCPU(den, c); on > 0 && off > 0 {
			fmt.Fprintf(w, "        server CPU (master and workers) per conn %s %.1fµs, %s %.1fµs: %.3fx of %s; the master's own %s %.1fms/s, %s %.1fms/s\n",
				ns, float64(on)/1e3, ds, float64(off)/1e3, float64(on)/float64(off), ds,
				ns, float64(b.masterPerSec(num, c))/1e6, ds, float64(b.masterPerSec(den, c))/1e6)
			if many {
				fmt.Fprintf(w, "        CPU per conn %s/%s round by round %s%s\n", ns, ds, spread(b.pairedRatios(num, den, c, cpuPerConn)), b.sliceSpread(num, den, c, cpuPerConn))
			}
		}
	}
}

// opsReport prints the cost of the operator's view: prefork with metrics
// and the control socket on and watched, over prefork with both off.
func (b *bench) opsReport(w io.Writer) {
	ws := b.watched["prefork+ops"]
	if ws == nil || !slices.Contains(b.st.Modes, "prefork") {
		return
	}
	fmt.Fprintf(w, "\nprefork %d..%d with metrics and the control socket on, watched (a /metrics scrape and a control status each %s), vs both off; %s, %d round(s), medians:\n",
		b.st.Prefork, b.st.Maxfork, watchEvery, b.pairedHow("prefork+ops", "prefork"), b.st.Rounds)
	b.compare(w, "prefork+ops", "prefork", "on", "off")
	sl, tl := summarize(ws.ScrapeLat), summarize(ws.StatusLat)
	fmt.Fprintf(w, "  watched: %d scrapes (%.1f KiB, p50 %s, max %s), %d status requests (p50 %s, max %s), %d failed\n",
		ws.Scrapes, float64(ws.Bytes)/1024, fmtDur(sl.P50), fmtDur(sl.Max), ws.Status, fmtDur(tl.P50), fmtDur(tl.Max), ws.ScrapeErrs+ws.StatusErrs)
	if ws.FirstErr != "" {
		fmt.Fprintf(w, "  first failure: %s\n", ws.FirstErr)
	}
}

// proxyReport prints the cost of the PROXY protocol: prefork reading a v1
// or v2 header from every client, over plain prefork; then the same with
// echo on, where every client writes a line and half-closes and the
// server reads it whether or not a header came first: the header's own
// cost.
func (b *bench) proxyReport(w io.Writer) {
	for _, base := range []struct{ mode, prefix, how, what, ds string }{
		{"prefork", "prefork+proxy", "first", "plain prefork", "plain"},
		{"prefork+echo", "prefork+echo+proxy", "in the same write as its line (echo on: the line back, then EOF)", "prefork+echo, no header", "echo"},
	} {
		if !slices.Contains(b.st.Modes, base.mode) {
			continue
		}
		for _, v := range []string{"1", "2"} {
			m := base.prefix + v
			if !slices.Contains(b.st.Modes, m) {
				continue
			}
			kind := map[string]string{"1": "text", "2": "binary"}[v]
			fmt.Fprintf(w, "\nprefork %d..%d with -proxy-protocol, each client sending a PROXY v%s (%s) header %s, vs %s; %s, %d round(s), medians:\n",
				b.st.Prefork, b.st.Maxfork, v, kind, base.how, base.what, b.pairedHow(m, base.mode), b.st.Rounds)
			b.compare(w, m, base.mode, "v"+v, base.ds)
		}
	}
}

// spawnReport prints forking mode (no spares) against the bare spawn loop,
// its ceiling.
func (b *bench) spawnReport(w io.Writer) {
	if !slices.Contains(b.st.Modes, "forking") || !slices.Contains(b.st.Modes, "spawn") {
		return
	}
	fmt.Fprintf(w, "\nforking (no spares) vs the bare spawn of waiterd -version from as many loops; %s, %d round(s), medians:\n",
		b.pairedHow("forking", "spawn"), b.st.Rounds)
	b.compare(w, "forking", "spawn", "forking", "spawn")
}

func ratio(a, b float64) string {
	if b == 0 || math.IsNaN(a/b) {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// fmtDur prints a latency with three significant figures.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%.0fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func fmtMiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func fmtErrs(e errCounts) string {
	if e.total() == 0 {
		return "0"
	}
	var parts []string
	for k, n := range e {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", errKind(k), n))
		}
	}
	return strings.Join(parts, ", ")
}
