package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/waiter-go/waiter/control"
)

// fakeControl serves a control socket in dir that answers status with one
// worker (or, with fail, an error), and counts its connections.
func fakeControl(t *testing.T, fail bool) (path string, conns, reqs *atomic.Int64) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "control")
	l, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.Out = io.Discard
	conns, reqs = new(atomic.Int64), new(atomic.Int64)
	cs := &control.Server{
		Log: log,
		// Asked once a connection: a count of them.
		Allowed: func(uint32) bool { conns.Add(1); return true },
		Handle: func(ctx context.Context, r control.Request) control.Reply {
			reqs.Add(1)
			if fail || r.Cmd != control.CmdStatus {
				return control.Reply{Error: "no"}
			}
			return control.Reply{OK: true, Status: &control.Status{Workers: []control.Worker{{PID: 1}}}}
		},
	}
	cs.Start(l)
	t.Cleanup(func() { cs.Close() })
	return path, conns, reqs
}

// fakeMetrics serves body at /metrics with status code and records the
// Accept header of the last request.
func fakeMetrics(t *testing.T, code int, body string) (url string, accept *atomic.Value) {
	t.Helper()
	accept = new(atomic.Value)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		accept.Store(r.Header.Get("Accept"))
		w.WriteHeader(code)
		io.WriteString(w, body)
	}))
	t.Cleanup(hs.Close)
	return hs.URL + "/metrics", accept
}

// TestWatch plays both watchers against a fake metrics page and a real
// control server, and reads back what they asked and counted.
func TestWatch(t *testing.T) {
	url, accept := fakeMetrics(t, 200, "# TYPE waiter_clients_total counter\nwaiter_clients_total 3\n")
	path, conns, reqs := fakeControl(t, false)
	w := startWatch(context.Background(), url, path, 50*time.Millisecond)
	time.Sleep(330 * time.Millisecond)
	start := time.Now()
	st := w.stop()
	if took := time.Since(start); took > time.Second {
		t.Errorf("stop took %s", took)
	}
	// One at once, then one each 50ms: about 7 in 330ms.
	if st.Scrapes < 4 || st.Status < 4 {
		t.Errorf("want at least 4 scrapes and 4 status requests, have %d and %d", st.Scrapes, st.Status)
	}
	if st.ScrapeErrs+st.StatusErrs != 0 || st.FirstErr != "" {
		t.Errorf("want no failures, have %d and %d (%q)", st.ScrapeErrs, st.StatusErrs, st.FirstErr)
	}
	if have := reqs.Load(); have != int64(st.Status) {
		t.Errorf("the server answered %d requests, the watcher counted %d", have, st.Status)
	}
	if have := conns.Load(); have != 1 {
		t.Errorf("want one control connection kept across polls, have %d", have)
	}
	if have, _ := accept.Load().(string); have != promAccept {
		t.Errorf("Accept: want Prometheus' %q, have %q", promAccept, have)
	}
	if want := len("# TYPE waiter_clients_total counter\nwaiter_clients_total 3\n"); st.Bytes != want {
		t.Errorf("bytes: want %d, have %d", want, st.Bytes)
	}
	if len(st.ScrapeLat) != st.Scrapes || len(st.StatusLat) != st.Status {
		t.Errorf("want a latency per request, have %d/%d and %d/%d", len(st.ScrapeLat), st.Scrapes, len(st.StatusLat), st.Status)
	}
	// Stopped: no more requests, and stop again says the same.
	n := reqs.Load()
	time.Sleep(120 * time.Millisecond)
	if reqs.Load() != n {
		t.Error("the status watcher went on after stop")
	}
	if again := w.stop(); again.Scrapes != st.Scrapes || again.Status != st.Status {
		t.Errorf("a second stop: want %d, %d, have %d, %d", st.Scrapes, st.Status, again.Scrapes, again.Status)
	}
}

// TestWatchOnOff: halted, the watchers ask nothing; run again, they go on
// with their schedule of time on (not at once again), on the connection
// they kept.
func TestWatchOnOff(t *testing.T) {
	url, _ := fakeMetrics(t, 200, "waiter_clients_total 3\n")
	path, conns, reqs := fakeControl(t, false)
	ctx := context.Background()

	// An interval longer than the test: only the first run's request.
	w := newWatcher(url, path, time.Hour)
	for i := 0; i < 3; i++ {
		w.run(ctx)
		w.run(ctx) // already on: nothing more
		time.Sleep(40 * time.Millisecond)
		w.halt()
		w.halt()
	}
	if st := w.stop(); reqs.Load() != 1 || st.Status != 1 || st.Scrapes != 1 {
		t.Errorf("three runs of 40ms, one request each an hour: want 1 of each, have %d status (%d answered), %d scrapes", st.Status, reqs.Load(), st.Scrapes)
	}

	// One each 100ms of time on, halted 300ms in between: the halt asks
	// nothing, and the count follows the time on.
	reqs.Store(0)
	conns.Store(0)
	w = newWatcher(url, path, 100*time.Millisecond)
	w.run(ctx)
	time.Sleep(250 * time.Millisecond) // at 0, 100 and 200ms
	w.halt()
	n := reqs.Load()
	time.Sleep(300 * time.Millisecond)
	if have := reqs.Load(); have != n {
		t.Errorf("halted: want no request, have %d more", have-n)
	}
	w.run(ctx)
	time.Sleep(250 * time.Millisecond) // at about 300, 400 of time on
	st := w.stop()
	// 500ms on: 5 or 6 requests (8 or 9 if the halt had not stopped
	// them). A busy machine may delay some: at least 3.
	if st.Status < 3 || st.Status > 6 || st.Scrapes < 3 || st.Scrapes > 6 {
		t.Errorf("500ms on at one each 100ms: want 3 to 6 of each, have %d status, %d scrapes", st.Status, st.Scrapes)
	}
	if have := conns.Load(); have != 1 {
		t.Errorf("want one control connection across the runs, have %d", have)
	}
	// Stopped for good: run does nothing.
	w.run(ctx)
	time.Sleep(30 * time.Millisecond)
	if w.stop(); reqs.Load() != int64(st.Status) {
		t.Errorf("run after stop asked: %d requests, %d before", reqs.Load(), st.Status)
	}
}

// TestWatchFailures: what is not waiter's page, a server error and a
// control socket that refuses or is absent are failures, never scrapes
// or answers.
func TestWatchFailures(t *testing.T) {
	okURL, _ := fakeMetrics(t, 200, "waiter_clients_total 1\n")
	okPath, _, _ := fakeControl(t, false)
	failPath, _, _ := fakeControl(t, true)
	cases := []struct {
		name      string
		url, path func(t *testing.T) string
		want      string // in FirstErr
		scrapes   bool   // the scrapes succeed
	}{
		{"not waiter's page",
			func(t *testing.T) string { u, _ := fakeMetrics(t, 200, "go_goroutines 3\n"); return u },
			func(*testing.T) string { return okPath }, "no waiter_clients_total", false},
		{"server error",
			func(t *testing.T) string { u, _ := fakeMetrics(t, 500, "waiter_clients_total 1\n"); return u },
			func(*testing.T) string { return okPath }, "500", false},
		{"control refuses",
			func(*testing.T) string { return okURL },
			func(*testing.T) string { return failPath }, "no", true},
		{"no control socket",
			func(*testing.T) string { return okURL },
			func(t *testing.T) string { return filepath.Join(t.TempDir(), "none") }, "no such file", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := startWatch(context.Background(), c.url(t), c.path(t), 40*time.Millisecond)
			time.Sleep(150 * time.Millisecond)
			st := w.stop()
			if !strings.Contains(st.FirstErr, c.want) {
				t.Errorf("first error: want it to say %q, have %q", c.want, st.FirstErr)
			}
			if c.scrapes {
				if st.Scrapes == 0 || st.ScrapeErrs != 0 || st.Status != 0 || st.StatusErrs == 0 {
					t.Errorf("want scrapes and only failed status requests, have %+v", st)
				}
			} else if st.Scrapes != 0 || st.ScrapeErrs == 0 || st.Status == 0 || st.StatusErrs != 0 {
				t.Errorf("want only failed scrapes and answered status requests, have %+v", st)
			}
		})
	}
}

func TestMetricsAddr(t *testing.T) {
	cases := []struct {
		name, log string
		want      string // "" : an error
	}{
		{"logrus line", `time="2026-12-01T23:24:52Z" level=info msg="waiter: metrics: serving http://127.0.0.1:41013/metrics"
time="2026-12-01T23:24:52Z" level=info msg="waiter: metrics on http://127.0.0.1:41013/metrics"
`, "127.0.0.1:41013"},
		{"IPv6 loopback", `msg="waiter: metrics on http://[::1]:9124/metrics"`, "[::1]:9124"},
		// The load stays on loopback.
		{"not loopback", `msg="waiter: metrics on http://192.0.2.1:9124/metrics"`, ""},
		{"absent", `msg="waiter: control socket /run/x/control"`, ""},
	}
	for _, c := range cases {
		p := filepath.Join(t.TempDir(), "stderr")
		if err := os.WriteFile(p, []byte(c.log), 0o644); err != nil {
			t.Fatal(err)
		}
		ap, err := metricsAddr(p, 50*time.Millisecond)
		switch {
		case c.want == "" && err == nil:
			t.Errorf("%s: want an error, have %s", c.name, ap)
		case c.want != "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && ap.String() != c.want:
			t.Errorf("%s: want %s, have %s", c.name, c.want, ap)
		}
	}
}

func TestSliceCount(t *testing.T) {
	cases := []struct {
		d    time.Duration
		want int
	}{
		{5 * time.Second, 5},
		{time.Second, 1},
		// Never none, and the nearest count of about a second each.
		{200 * time.Millisecond, 1},
		{2400 * time.Millisecond, 2},
		{2600 * time.Millisecond, 3},
	}
	for _, c := range cases {
		if have := sliceCount(c.d); have != c.want {
			t.Errorf("%s: want %d slices, have %d", c.d, c.want, have)
		}
	}
}

// TestMergeResults: slices add up to one window, their latencies to one
// set.
func TestMergeResults(t *testing.T) {
	a := loadResult{Conc: 8, Window: time.Second, OK: 3, raw: []time.Duration{ms(1), ms(2), ms(9)}, CPU: ms(30), MasterCPU: ms(1), Procs: 9}
	a.Errs[errReset] = 1
	a.Samples[errReset] = "reset"
	b := loadResult{Conc: 8, Window: time.Second, OK: 2, raw: []time.Duration{ms(3), ms(4)}, CPU: ms(20), Procs: 10}
	b.Errs[errReset] = 2
	b.Samples[errReset] = "later"
	m := mergeResults([]loadResult{a, b})
	if m.Conc != 8 || m.Window != 2*time.Second || m.OK != 5 || m.PerSec != 2.5 {
		t.Errorf("want 5 ok in 2s (2.5/s) at c=8, have %d in %s (%v/s) at c=%d", m.OK, m.Window, m.PerSec, m.Conc)
	}
	if want := (latencies{P50: ms(3), P90: ms(9), P99: ms(9), Max: ms(9)}); m.Lat != want {
		t.Errorf("latencies: want %+v, have %+v", want, m.Lat)
	}
	if m.Errs[errReset] != 3 || m.Samples[errReset] != "reset" {
		t.Errorf("errors: want 3 resets, the first sample; have %d, %q", m.Errs[errReset], m.Samples[errReset])
	}
	if m.CPU != ms(50) || m.MasterCPU != ms(1) || m.Procs != 10 || m.cpuPerConn() != ms(10) {
		t.Errorf("CPU: want 50ms (10ms a conn), master 1ms, 10 processes (the last); have %s (%s), %s, %d", m.CPU, m.cpuPerConn(), m.MasterCPU, m.Procs)
	}
}

func TestModesFlag(t *testing.T) {
	st, err := parseFlags([]string{"-modes", "prefork+ops,prefork", "-quick"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"prefork", "prefork+ops"}; !slices.Equal(st.Modes, want) {
		t.Errorf("want %v, have %v", want, st.Modes)
	}
	// The default run, and so -quick, has both.
	st, err = parseFlags([]string{"-quick"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(st.Modes, "prefork") || !slices.Contains(st.Modes, "prefork+ops") {
		t.Errorf("the default modes lack prefork or prefork+ops: %v", st.Modes)
	}
}

// TestOpsReport checks the ratios printed from known rounds.
func TestOpsReport(t *testing.T) {
	b := &bench{st: settings{Modes: []string{"prefork", "prefork+ops"}, Concs: []int{64}, Rounds: 3, Prefork: 8, Maxfork: 32, Duration: 5 * time.Second},
		res: map[rowKey][]loadResult{}, watched: map[string]*watchStats{}, pairs: map[rowKey][]slicePair{}}
	res := func(perSec float64, cpu time.Duration) loadResult {
		ok := int(perSec) * 5
		return loadResult{Conc: 64, PerSec: perSec, OK: ok, Window: 5 * time.Second, CPU: cpu * time.Duration(ok), MasterCPU: 50 * time.Millisecond, Procs: 9}
	}
	b.res[rowKey{"prefork", 64}] = []loadResult{res(1000, 100*time.Microsecond), res(1100, 90*time.Microsecond), res(900, 110*time.Microsecond)}
	b.res[rowKey{"prefork+ops", 64}] = []loadResult{res(990, 101*time.Microsecond), res(1045, 95*time.Microsecond), res(900, 110*time.Microsecond)}
	b.watched["prefork+ops"] = &watchStats{Scrapes: 15, Status: 15, Bytes: 14 << 10}
	// Eight slice pairs: ops/plain of 0.91, 0.92, ... 0.98 in conn/s.
	for i := 8; i >= 1; i-- {
		b.pairs[rowKey{"prefork+ops", 64}] = append(b.pairs[rowKey{"prefork+ops", 64}], slicePair{res(1000, 100*time.Microsecond), res(float64(900+10*i), 100*time.Microsecond)})
	}
	if r, ok := b.ratioOf("prefork+ops", "prefork", 64); !ok || r != 0.99 {
		t.Errorf("ratio of the medians: want 0.99 (990/1000), have %v, %v", r, ok)
	}
	if have, want := b.pairedRatios("prefork+ops", "prefork", 64, perSec), []float64{0.95, 0.99, 1}; !slices.Equal(have, want) {
		t.Errorf("round by round: want %v, have %v", want, have)
	}
	var out bytes.Buffer
	b.opsReport(&out)
	for _, want := range []string{
		"c=64  conn/s on 990, off 1000: 0.990x of off; p99",
		"; processes on 9, off 9",
		// Nearest ranks 2 and 6 of 8 for the middle half.
		"on/off round by round 0.950..1.000, median 0.990; 8 slice pairs of 1s: median 0.945, middle half 0.920..0.960",
		"per conn on 101.0µs, off 100.0µs: 1.010x of off; the master's own on 10.0ms/s, off 10.0ms/s",
		"CPU per conn on/off round by round 1.000..1.056, median 1.010; 8 slice pairs of 1s: median 1.000, middle half 1.000..1.000",
		"watched: 15 scrapes (14.0 KiB",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("want %q in:\n%s", want, out.String())
		}
	}
}

// TestTreeCPU reads this process's CPU time back while it spends some:
// it must grow, in step with its own (there is no child).
func TestTreeCPU(t *testing.T) {
	pid := os.Getpid()
	before, own0, err := treeCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Spin until 50ms more are read (in 10ms ticks), however little of a
	// busy machine's CPUs this gets.
	deadline := time.Now().Add(20 * time.Second)
	for {
		for end := time.Now().Add(10 * time.Millisecond); time.Now().Before(end); {
		}
		after, own1, err := treeCPU(pid)
		if err != nil {
			t.Fatal(err)
		}
		if after-before != own1-own0 {
			t.Fatalf("the tree grew by %s, the process's own time by %s: want the same", after-before, own1-own0)
		}
		if after-before >= 50*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20s of spinning: the CPU time read went from %s to %s only", before, after)
		}
	}
	if _, _, err := treeCPU(1 << 30); err == nil {
		t.Error("want an error for a pid that cannot exist")
	}
}
