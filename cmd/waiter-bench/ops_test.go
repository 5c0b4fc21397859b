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

func TestRoundOrder(t *testing.T) {
	all := []string{"baseline", "prefork", "prefork+ops", "spawn"}
	cases := []struct {
		modes []string
		round int
		want  []string
	}{
		// Odd rounds keep the canonical order.
		{all, 1, all},
		{all, 3, all},
		// Even rounds run prefork+ops before prefork, the rest in place.
		{all, 2, []string{"baseline", "prefork+ops", "prefork", "spawn"}},
		// Without both, nothing moves.
		{[]string{"baseline", "prefork"}, 2, []string{"baseline", "prefork"}},
	}
	for _, c := range cases {
		if have := roundOrder(c.modes, c.round); !slices.Equal(have, c.want) {
			t.Errorf("%v round %d: want %v, have %v", c.modes, c.round, c.want, have)
		}
	}
	if !slices.Equal(all, []string{"baseline", "prefork", "prefork+ops", "spawn"}) {
		t.Errorf("roundOrder changed its argument: %v", all)
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
	b := &bench{st: settings{Modes: []string{"prefork", "prefork+ops"}, Concs: []int{64}, Rounds: 3, Prefork: 8, Maxfork: 32},
		res: map[rowKey][]loadResult{}, watched: map[string]*watchStats{}}
	res := func(perSec float64, cpu time.Duration) loadResult {
		ok := int(perSec) * 5
		return loadResult{Conc: 64, PerSec: perSec, OK: ok, Window: 5 * time.Second, CPU: cpu * time.Duration(ok), MasterCPU: 50 * time.Millisecond, Procs: 9}
	}
	b.res[rowKey{"prefork", 64}] = []loadResult{res(1000, 100*time.Microsecond), res(1100, 90*time.Microsecond), res(900, 110*time.Microsecond)}
	b.res[rowKey{"prefork+ops", 64}] = []loadResult{res(990, 101*time.Microsecond), res(1045, 95*time.Microsecond), res(900, 110*time.Microsecond)}
	b.watched["prefork+ops"] = &watchStats{Scrapes: 15, Status: 15, Bytes: 14 << 10}
	if r, ok := b.opsRatio(64); !ok || r != 0.99 {
		t.Errorf("ratio of the medians: want 0.99 (990/1000), have %v, %v", r, ok)
	}
	if have, want := b.pairedRatios(64, perSec), []float64{0.95, 0.99, 1}; !slices.Equal(have, want) {
		t.Errorf("round by round: want %v, have %v", want, have)
	}
	var out bytes.Buffer
	b.opsReport(&out)
	for _, want := range []string{
		"c=64  conn/s on 990, off 1000: 0.990x of off (round by round 0.950..1.000, median 0.990)",
		"processes on 9, off 9",
		"per conn on 101.0µs, off 100.0µs: 1.010x of off (round by round 1.000..1.056, median 1.010); the master's CPU on 10.0ms/s, off 10.0ms/s",
		"watched: 15 scrapes (14.0 KiB",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("want %q in:\n%s", want, out.String())
		}
	}
}

// TestTreeCPU reads this process's CPU time back after spending some.
func TestTreeCPU(t *testing.T) {
	before, own0, err := treeCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now().Add(100 * time.Millisecond)
	for n := 0; time.Now().Before(end); n++ {
	}
	after, own1, err := treeCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// 100ms of spinning, read in 10ms ticks.
	if d := after - before; d < 50*time.Millisecond {
		t.Errorf("want at least 50ms more CPU, have %s (%s to %s)", d, before, after)
	}
	// No child: the tree is this process, its own time all of it.
	if d := own1 - own0; d < 50*time.Millisecond || own1 > after {
		t.Errorf("own CPU: want at least 50ms more and at most the tree's, have %s more, %s of %s", d, own1, after)
	}
	if _, _, err := treeCPU(1 << 30); err == nil {
		t.Error("want an error for a pid that cannot exist")
	}
}
