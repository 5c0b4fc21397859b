package pool

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/control"
)

// The metrics tests run the real HTTP server on 127.0.0.1:0 and read back
// what a scraper would: the bytes on the wire, parsed with expfmt.

// fakeStatus is the supervisor's published snapshot: a test swaps it while
// the server scrapes it.
type fakeStatus struct {
	p atomic.Pointer[control.Status]
}

func (f *fakeStatus) get() *control.Status { return f.p.Load() }

// testStatus has workers in every state (one not yet forked, so without a
// PID), a TCP listener with a name and a unix one without.
func testStatus() *control.Status {
	w := func(pid, slot int, state string, rss uint64, cpu float64) control.Worker {
		return control.Worker{PID: pid, Slot: slot, Gen: 3, Kind: "worker", State: state, RSS: rss, CPU: cpu}
	}
	return &control.Status{
		PID: 100, Mode: "prefork", Started: time.Unix(1700000000, 500000000),
		Generation: 3, Serving: 2,
		Prefork: 4, Maxfork: 16, Spares: 2,
		ListenOverflows: 42,
		Workers: []control.Worker{
			w(101, 0, "idle", 10<<20, 1.5),
			w(102, 1, "idle", 11<<20, 0.25),
			w(103, 2, "busy", 12<<20, 3),
			w(104, 3, "busy", 13<<20, 4),
			w(105, 4, "busy", 14<<20, 5),
			w(106, 5, "starting", 1<<20, 0.01),
			w(0, 6, "starting", 0, 0),
			w(107, 7, "exiting", 15<<20, 6),
			w(108, 8, "retiring", 16<<20, 7),
			w(109, 9, "retiring", 17<<20, 8),
		},
		Listeners: []control.Listener{
			{Name: "web", Addr: "0.0.0.0:8080", Queue: 3, MaxQueue: 128, Served: 1000, Failed: 7},
			{Addr: "/run/waiter/kv.sock", Queue: -1, MaxQueue: -1, Served: 50, Failed: 1},
		},
	}
}

// testDurations puts i+1 clients in bucket i: 15 buckets (14 bounds and
// +Inf), 120 clients.
func testDurations() durationSnapshot {
	d := durationSnapshot{Buckets: make([]uint64, len(clientDurationBuckets)+1), Sum: 123.25}
	for i := range d.Buckets {
		d.Buckets[i] = uint64(i + 1)
	}
	return d
}

// testClient keeps no connections between requests, so that a test's
// close is not waiting on one of its own.
var testClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// startMetrics serves m on 127.0.0.1:0 and closes it at the end of the
// test; the hook holds what it logged.
func startMetrics(t *testing.T, m *metrics) (string, *logtest.Hook) {
	t.Helper()
	log, hook := logtest.NewNullLogger()
	log.Level = logrus.DebugLevel
	addr, err := m.serve("127.0.0.1:0", log)
	if err != nil {
		t.Fatalf("serve: %v", err)
	}
	t.Cleanup(m.close)
	return addr.String(), hook
}

// get requests path with the Accept header (none if ""), and returns the
// response with its body read.
func get(t *testing.T, method, addr, path, accept string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp, body
}

// scrape GETs /metrics in the text format and parses it.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, body := get(t, "GET", addr, "/metrics", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: have %s, want 200\n%s", resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type: have %q, want text/plain", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parsing the scrape: %v\n%s", err, body)
	}
	return fams
}

// family is the named family, of type want.
func family(t *testing.T, fams map[string]*dto.MetricFamily, name string, want dto.MetricType) *dto.MetricFamily {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("%s: missing from the scrape", name)
	}
	if f.GetType() != want {
		t.Fatalf("%s: have type %v, want %v", name, f.GetType(), want)
	}
	return f
}

// key is a metric's labels as "a=x,b=y", in the order given: a label that
// is not there is "", as Prometheus reads it.
func key(m *dto.Metric, names ...string) string {
	vals := make([]string, len(names))
	for i, n := range names {
		for _, l := range m.GetLabel() {
			if l.GetName() == n {
				vals[i] = n + "=" + l.GetValue()
			}
		}
		if vals[i] == "" {
			vals[i] = n + "="
		}
	}
	return strings.Join(vals, ",")
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return math.NaN()
}

// values is a family's metrics by key.
func values(f *dto.MetricFamily, labels ...string) map[string]float64 {
	v := make(map[string]float64, len(f.GetMetric()))
	for _, m := range f.GetMetric() {
		v[key(m, labels...)] = value(m)
	}
	return v
}

// checkValues compares a family, by label set, with want: no series
// missing, none more.
func checkValues(t *testing.T, fams map[string]*dto.MetricFamily, name string, typ dto.MetricType, want map[string]float64, labels ...string) {
	t.Helper()
	have := values(family(t, fams, name, typ), labels...)
	for k, w := range want {
		h, ok := have[k]
		switch {
		case !ok:
			t.Errorf("%s{%s}: missing", name, k)
		case math.Abs(h-w) > 1e-9*math.Max(1, math.Abs(w)):
			t.Errorf("%s{%s}: have %v, want %v", name, k, h, w)
		}
	}
	for k, h := range have {
		if _, ok := want[k]; !ok {
			t.Errorf("%s{%s} = %v: not expected", name, k, h)
		}
	}
}

// checkHistogram compares the one histogram of a family: its cumulative
// buckets by upper bound, count and sum.
func checkHistogram(t *testing.T, fams map[string]*dto.MetricFamily, name string, bounds []float64, cumulative []uint64, count uint64, sum float64) {
	t.Helper()
	f := family(t, fams, name, dto.MetricType_HISTOGRAM)
	if len(f.GetMetric()) != 1 {
		t.Fatalf("%s: have %d series, want 1", name, len(f.GetMetric()))
	}
	h := f.GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != count {
		t.Errorf("%s_count: have %d, want %d", name, h.GetSampleCount(), count)
	}
	if math.Abs(h.GetSampleSum()-sum) > 1e-9 {
		t.Errorf("%s_sum: have %v, want %v", name, h.GetSampleSum(), sum)
	}
	// The text format's +Inf bucket is the count: the parser keeps it as
	// a bucket only in some versions, so it is not compared here.
	var got []*dto.Bucket
	for _, b := range h.GetBucket() {
		if !math.IsInf(b.GetUpperBound(), +1) {
			got = append(got, b)
		}
	}
	if len(got) != len(bounds) {
		t.Fatalf("%s: have %d finite buckets, want %d", name, len(got), len(bounds))
	}
	for i, b := range got {
		if b.GetUpperBound() != bounds[i] || b.GetCumulativeCount() != cumulative[i] {
			t.Errorf("%s_bucket %d: have le=%v %d, want le=%v %d", name, i,
				b.GetUpperBound(), b.GetCumulativeCount(), bounds[i], cumulative[i])
		}
	}
}

// countEvents calls the counter methods a known number of times: what
// TestMetricsScrape then reads back.
func countEvents(m *metrics) {
	for _, d := range []time.Duration{2 * time.Millisecond, 20 * time.Millisecond, 200 * time.Millisecond, 2 * time.Second, 20 * time.Second} {
		m.spawned(d)
	}
	m.spawnFailed()
	m.spawnFailed()
	for _, c := range []string{"crash", "crash", "crash", "px_idle", "px_idle", "client"} {
		m.exited(c)
	}
	for _, r := range []string{"ok", "ok", "refused"} {
		m.reloaded(r)
	}
}

// checkScrape checks every waiter_ family of a scrape against what
// testStatus, testDurations and countEvents put in.
func checkScrape(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	const gauge, counter = dto.MetricType_GAUGE, dto.MetricType_COUNTER

	checkValues(t, fams, "waiter_workers", gauge, map[string]float64{
		"state=starting": 2, "state=idle": 2, "state=busy": 3, "state=exiting": 1, "state=retiring": 2,
	}, "state")
	checkValues(t, fams, "waiter_clients_total", counter, map[string]float64{
		"listener=0.0.0.0:8080,name=web": 1000, "listener=/run/waiter/kv.sock,name=": 50,
	}, "listener", "name")
	checkValues(t, fams, "waiter_clients_failed_total", counter, map[string]float64{
		"listener=0.0.0.0:8080,name=web": 7, "listener=/run/waiter/kv.sock,name=": 1,
	}, "listener", "name")
	// The unix socket's queue is unknown (-1): no series, rather than a
	// -1 that a sum or an alert would take for a length.
	checkValues(t, fams, "waiter_accept_queue_length", gauge, map[string]float64{
		"listener=0.0.0.0:8080,name=web": 3,
	}, "listener", "name")
	checkValues(t, fams, "waiter_accept_queue_max", gauge, map[string]float64{
		"listener=0.0.0.0:8080,name=web": 128,
	}, "listener", "name")
	checkValues(t, fams, "waiter_listen_overflows_total", counter, map[string]float64{"": 42})
	if h := fams["waiter_listen_overflows_total"].GetHelp(); !strings.Contains(h, "network namespace") {
		t.Errorf("waiter_listen_overflows_total: the help %q does not say the count is the namespace's", h)
	}
	checkValues(t, fams, "waiter_pool_limit", gauge, map[string]float64{
		"limit=prefork": 4, "limit=maxfork": 16, "limit=spares": 2,
	}, "limit")
	checkValues(t, fams, "waiter_generation", gauge, map[string]float64{
		"which=newest": 3, "which=serving": 2,
	}, "which")
	checkValues(t, fams, "waiter_start_time_seconds", gauge, map[string]float64{"": 1700000000.5})

	// Every worker with a process, by pid and slot; the one not yet
	// forked (PID 0) has none.
	rss, cpu := map[string]float64{}, map[string]float64{}
	for _, w := range testStatus().Workers {
		if w.PID == 0 {
			continue
		}
		k := fmt.Sprintf("slot=%d", w.Slot)
		rss[k], cpu[k] = float64(w.RSS), w.CPU
	}
	if len(rss) != 9 {
		t.Fatalf("the test's status: have %d workers with a PID, want 9", len(rss))
	}
	checkValues(t, fams, "waiter_worker_rss_bytes", gauge, rss, "slot")
	checkValues(t, fams, "waiter_worker_cpu_seconds_total", counter, cpu, "slot")

	// i+1 clients in bucket i: cumulative n(n+1)/2; 120 with +Inf's 15.
	checkHistogram(t, fams, "waiter_client_duration_seconds", clientDurationBuckets,
		[]uint64{1, 3, 6, 10, 15, 21, 28, 36, 45, 55, 66, 78, 91, 105}, 120, 123.25)

	checkValues(t, fams, "waiter_spawns_total", counter, map[string]float64{"": 5})
	checkValues(t, fams, "waiter_spawn_failures_total", counter, map[string]float64{"": 2})
	// Spawns of 2 ms, 20 ms, 200 ms, 2 s and 20 s.
	checkHistogram(t, fams, "waiter_spawn_latency_seconds",
		[]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		[]uint64{0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4}, 5, 22.222)
	// Every cause and result from the start, those never counted at 0.
	checkValues(t, fams, "waiter_worker_exits_total", counter, map[string]float64{
		"cause=px_idle": 2, "cause=max_requests": 0, "cause=memory": 0, "cause=request_timeout": 0,
		"cause=crash": 3, "cause=retired": 0, "cause=killed": 0, "cause=start_failed": 0, "cause=client": 1, "cause=hook": 0,
	}, "cause")
	checkValues(t, fams, "waiter_reloads_total", counter, map[string]float64{
		"result=ok": 2, "result=refused": 1, "result=failed": 0,
	}, "result")

	// Nothing else: every waiter_ family is checked above.
	want := map[string]bool{}
	for _, n := range []string{"workers", "clients_total", "clients_failed_total", "accept_queue_length", "accept_queue_max",
		"listen_overflows_total", "pool_limit", "generation", "start_time_seconds", "worker_rss_bytes",
		"worker_cpu_seconds_total", "client_duration_seconds", "spawns_total", "spawn_failures_total",
		"spawn_latency_seconds", "worker_exits_total", "reloads_total"} {
		want["waiter_"+n] = true
	}
	for name := range fams {
		if strings.HasPrefix(name, "waiter_") && !want[name] {
			t.Errorf("%s: a family this test does not check", name)
		}
	}
}

func TestMetricsScrape(t *testing.T) {
	st := &fakeStatus{}
	st.p.Store(testStatus())
	m := newMetrics(st.get, testDurations)
	addr, hook := startMetrics(t, m)
	countEvents(m)

	fams := scrape(t, addr)
	checkScrape(t, fams)

	// The master's own process and runtime.
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "go_goroutines", "go_memstats_heap_alloc_bytes"} {
		if fams[name] == nil {
			t.Errorf("%s: missing from the scrape", name)
		}
	}
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.WarnLevel {
			t.Errorf("logged %s: %s", e.Level, e.Message)
		}
	}

	// The next scrape reads the snapshot again: the states it lacks are
	// shown at 0, the workers it lost are gone.
	only := testStatus()
	only.Workers = only.Workers[:2]
	st.p.Store(only)
	fams = scrape(t, addr)
	const gauge = dto.MetricType_GAUGE
	checkValues(t, fams, "waiter_workers", gauge, map[string]float64{
		"state=starting": 0, "state=idle": 2, "state=busy": 0, "state=exiting": 0, "state=retiring": 0,
	}, "state")
	checkValues(t, fams, "waiter_worker_rss_bytes", gauge, map[string]float64{
		"slot=0": 10 << 20, "slot=1": 11 << 20,
	}, "slot")
}

// TestMetricsOpenMetrics: a scraper that asks for OpenMetrics (Prometheus
// does, first) gets it, and it parses.
func TestMetricsOpenMetrics(t *testing.T) {
	st := &fakeStatus{}
	st.p.Store(testStatus())
	m := newMetrics(st.get, testDurations)
	addr, _ := startMetrics(t, m)
	countEvents(m)

	resp, body := get(t, "GET", addr, "/metrics", "application/openmetrics-text; version=1.0.0; charset=utf-8")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("have %s, want 200\n%s", resp.Status, body)
	}
	format := expfmt.ResponseFormat(resp.Header)
	if format.FormatType() != expfmt.TypeOpenMetrics {
		t.Fatalf("Content-Type %q: have format %v, want OpenMetrics", resp.Header.Get("Content-Type"), format)
	}
	if !strings.HasSuffix(string(body), "# EOF\n") {
		t.Errorf("the body does not end with OpenMetrics' # EOF line")
	}
	// The Go collector's go_memstats_alloc_bytes (a gauge) and
	// go_memstats_alloc_bytes_total (a counter, whose OpenMetrics family
	// is go_memstats_alloc_bytes too) collide, a known upstream problem
	// (prometheus/client_golang#829) that Prometheus' own parser lets
	// pass and expfmt's strict one does not: only waiter's families are
	// decoded here.
	dec := expfmt.NewDecoder(strings.NewReader(onlyWaiter(string(body))), format)
	fams := map[string]*dto.MetricFamily{}
	for {
		f := &dto.MetricFamily{}
		err := dec.Decode(f)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decoding OpenMetrics: %v\n%s", err, body)
		}
		fams[f.GetName()] = f
	}
	// expfmt names a counter's family with its _total, as the text
	// format does: the same checks hold.
	checkScrape(t, fams)
}

// onlyWaiter keeps the lines of an OpenMetrics body that are about
// waiter_ families, and the # EOF line.
func onlyWaiter(body string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(body, "\n") {
		name := line
		for _, p := range []string{"# HELP ", "# TYPE ", "# UNIT "} {
			name = strings.TrimPrefix(name, p)
		}
		if strings.HasPrefix(name, "waiter_") || line == "# EOF\n" {
			b.WriteString(line)
		}
	}
	return b.String()
}

// TestMetricsNilStatus: before the supervisor's first snapshot a scrape
// succeeds with what is known: no status families (rather than zeros
// that claim an empty pool), the counters and the histogram.
func TestMetricsNilStatus(t *testing.T) {
	m := newMetrics(func() *control.Status { return nil }, func() durationSnapshot { return durationSnapshot{} })
	addr, hook := startMetrics(t, m)
	fams := scrape(t, addr)
	for _, name := range []string{"waiter_workers", "waiter_clients_total", "waiter_pool_limit", "waiter_worker_rss_bytes", "waiter_start_time_seconds"} {
		if fams[name] != nil {
			t.Errorf("%s: present with no status", name)
		}
	}
	checkValues(t, fams, "waiter_spawns_total", dto.MetricType_COUNTER, map[string]float64{"": 0})
	// An empty snapshot (no slots yet) is a histogram of no clients.
	checkHistogram(t, fams, "waiter_client_duration_seconds", clientDurationBuckets,
		make([]uint64, len(clientDurationBuckets)), 0, 0)
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.WarnLevel {
			t.Errorf("logged %s: %s", e.Level, e.Message)
		}
	}
}

// TestMetricsCollectError: a series that cannot be sent (two listeners
// alike, a name that is not UTF-8) costs only itself: the scrape is
// served, and the error reaches the server's logger.
func TestMetricsCollectError(t *testing.T) {
	s := testStatus()
	s.Listeners = append(s.Listeners, s.Listeners[0], control.Listener{Name: "bad\xff", Addr: "[::]:9", Queue: 0, MaxQueue: 8})
	m := newMetrics(func() *control.Status { return s }, testDurations)
	addr, hook := startMetrics(t, m)
	scrape(t, addr)
	// The second scrape counts the first's error (promhttp counts after
	// gathering).
	fams := scrape(t, addr)
	checkValues(t, fams, "waiter_workers", dto.MetricType_GAUGE, map[string]float64{
		"state=starting": 2, "state=idle": 2, "state=busy": 3, "state=exiting": 1, "state=retiring": 2,
	}, "state")
	checkValues(t, fams, "waiter_clients_total", dto.MetricType_COUNTER, map[string]float64{
		"listener=0.0.0.0:8080,name=web": 1000, "listener=/run/waiter/kv.sock,name=": 50,
	}, "listener", "name")
	var logged []string
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.ErrorLevel {
			logged = append(logged, e.Message)
		}
	}
	all := strings.Join(logged, "\n")
	if !strings.Contains(all, "waiter_clients_total") || !strings.Contains(all, "UTF-8") {
		t.Errorf("the errors logged do not name the duplicate and the bad name:\n%s", all)
	}
	errs := family(t, fams, "promhttp_metric_handler_errors_total", dto.MetricType_COUNTER)
	if v := values(errs, "cause")["cause=gathering"]; v != 1 {
		t.Errorf("promhttp_metric_handler_errors_total{cause=gathering}: have %v, want 1 (the first scrape's)", v)
	}
}

// TestMetricsPaths: only GET and HEAD of /metrics.
func TestMetricsPaths(t *testing.T) {
	m := newMetrics(func() *control.Status { return nil }, testDurations)
	addr, _ := startMetrics(t, m)
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/metrics", 200},
		{"HEAD", "/metrics", 200},
		{"GET", "/other", 404},
		{"GET", "/", 404},
		// A pattern without a trailing slash matches only itself.
		{"GET", "/metrics/", 404},
		{"GET", "/metrics/x", 404},
		{"POST", "/metrics", 405},
		{"PUT", "/metrics", 405},
	} {
		resp, body := get(t, c.method, addr, c.path, "")
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: have %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
		if c.method == "HEAD" && len(body) != 0 {
			t.Errorf("HEAD: have a %d-byte body, want none", len(body))
		}
	}
}

// holdHalfHeader connects and sends half a request header, as a slow or
// hostile client does; the returned channel is closed when the server
// closes the connection, and the duration is how long after the write.
func holdHalfHeader(t *testing.T, addr string) <-chan time.Duration {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cut := make(chan time.Duration, 1)
	go func() {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		b, err := io.ReadAll(c)
		if err != nil || len(b) > 0 {
			// A read error is the deadline: the server never cut it.
			t.Errorf("the half-header client: read %q, %v; want EOF", b, err)
		}
		cut <- time.Since(start)
	}()
	return cut
}

// TestMetricsSlowHeader: a client that sends half a header is cut at
// ReadHeaderTimeout, and a scrape meanwhile is served at once.
func TestMetricsSlowHeader(t *testing.T) {
	m := newMetrics(func() *control.Status { return testStatus() }, testDurations)
	m.readHeaderTimeout = time.Second
	addr, _ := startMetrics(t, m)

	cut := holdHalfHeader(t, addr)
	start := time.Now()
	fams := scrape(t, addr)
	if took := time.Since(start); took >= m.readHeaderTimeout {
		t.Errorf("the scrape beside the slow client took %v: it waited for the slow one", took)
	}
	family(t, fams, "waiter_workers", dto.MetricType_GAUGE)
	select {
	case <-cut:
		t.Fatalf("the slow client was cut before the scrape beside it ended")
	default:
	}
	d := <-cut
	if d < m.readHeaderTimeout-50*time.Millisecond || d > m.readHeaderTimeout+5*time.Second {
		t.Errorf("the slow client was cut after %v, want about ReadHeaderTimeout (%v)", d, m.readHeaderTimeout)
	}
}

// TestMetricsConnLimit goes past metricsMaxConns: the next connection
// waits in the kernel's queue (no fd in the master) until one closes, and
// is then served.
func TestMetricsConnLimit(t *testing.T) {
	m := newMetrics(func() *control.Status { return testStatus() }, testDurations)
	m.readHeaderTimeout = 500 * time.Millisecond
	m.maxConns = 2
	addr, _ := startMetrics(t, m)

	cuts := []<-chan time.Duration{holdHalfHeader(t, addr), holdHalfHeader(t, addr)}
	start := time.Now()
	scrape(t, addr)
	// The scrape could only be accepted once a slow client was cut.
	if took := time.Since(start); took < m.readHeaderTimeout-100*time.Millisecond {
		t.Errorf("the third connection was served after %v, before either of the two held ones was cut (%v)", took, m.readHeaderTimeout)
	}
	for _, c := range cuts {
		<-c
	}
}

// TestMetricsClose: close stops listening, is bounded with a client
// holding a connection, and is idempotent; serve after it fails.
func TestMetricsClose(t *testing.T) {
	m := newMetrics(func() *control.Status { return nil }, testDurations)
	addr, _ := startMetrics(t, m)
	scrape(t, addr)
	holdHalfHeader(t, addr) // cut at 5 s by ReadHeaderTimeout, or by close

	start := time.Now()
	m.close()
	if took := time.Since(start); took > metricsShutdownTimeout+time.Second {
		t.Errorf("close took %v with a client holding a connection, want at most about %v", took, metricsShutdownTimeout)
	}
	m.close()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after close", addr)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dialing after close: have %v, want ECONNREFUSED", err)
	}
	if _, err := m.serve("127.0.0.1:0", logrus.New()); !errors.Is(err, errMetricsClosed) {
		t.Errorf("serve after close: have %v, want %v", err, errMetricsClosed)
	}

	// close before serve is fine too.
	newMetrics(func() *control.Status { return nil }, testDurations).close()
}

// TestMetricsServeErrors: a second serve, and an address in use.
func TestMetricsServeErrors(t *testing.T) {
	m := newMetrics(func() *control.Status { return nil }, testDurations)
	addr, _ := startMetrics(t, m)
	if _, err := m.serve("127.0.0.1:0", logrus.New()); !errors.Is(err, errMetricsServing) {
		t.Errorf("a second serve: have %v, want %v", err, errMetricsServing)
	}
	other := newMetrics(func() *control.Status { return nil }, testDurations)
	defer other.close()
	if _, err := other.serve(addr, logrus.New()); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("serve on %s in use: have %v, want EADDRINUSE", addr, err)
	}
}

// TestMetricsListenerCloexec: the listening socket is close-on-exec, so
// no worker the master starts holds the metrics port.
func TestMetricsListenerCloexec(t *testing.T) {
	m := newMetrics(func() *control.Status { return nil }, testDurations)
	startMetrics(t, m)
	rc, err := m.ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	if err := rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFD, 0) }); err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	if flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("the metrics listener's fd flags %#x lack FD_CLOEXEC", flags)
	}
}

// TestMetricsConcurrent counts from one goroutine, as the supervisor does,
// swaps the snapshot from another, and scrapes from four (the in-flight
// limit) at once; -race checks the sharing, and the last scrape the
// totals.
func TestMetricsConcurrent(t *testing.T) {
	st := &fakeStatus{}
	st.p.Store(testStatus())
	m := newMetrics(st.get, testDurations)
	addr, _ := startMetrics(t, m)

	const n = 20000
	var wg sync.WaitGroup
	counted := make(chan struct{})
	go func() {
		defer close(counted)
		for i := range n {
			m.spawned(time.Duration(i) * time.Microsecond)
			m.exited("crash")
			m.reloaded("ok")
			if i%100 == 0 {
				s := testStatus()
				s.Generation = i
				st.p.Store(s)
			}
		}
	}()
	var scrapes atomic.Int64
	for range metricsMaxInFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				resp, err := testClient.Get("http://" + addr + "/metrics")
				if err != nil {
					t.Errorf("scrape: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				// 503 is the in-flight limit: the client can have read
				// the whole answer before the handler has returned.
				if resp.StatusCode != 200 && resp.StatusCode != 503 {
					t.Errorf("scrape: %s", resp.Status)
				}
				scrapes.Add(1)
				select {
				case <-counted:
					return
				default:
				}
			}
		}()
	}
	wg.Wait()
	<-counted
	if scrapes.Load() == 0 {
		t.Fatal("no scrape ran")
	}
	fams := scrape(t, addr)
	checkValues(t, fams, "waiter_spawns_total", dto.MetricType_COUNTER, map[string]float64{"": n})
	if v := values(fams["waiter_worker_exits_total"], "cause")["cause=crash"]; v != n {
		t.Errorf("waiter_worker_exits_total{cause=crash}: have %v, want %d", v, n)
	}
	if v := values(fams["waiter_reloads_total"], "result")["result=ok"]; v != n {
		t.Errorf("waiter_reloads_total{result=ok}: have %v, want %d", v, n)
	}
	if v := values(fams["waiter_generation"], "which")["which=newest"]; v != float64((n-1)/100*100) {
		t.Errorf("waiter_generation{which=newest}: have %v, want the last snapshot's %d", v, (n-1)/100*100)
	}
}
