package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/waiter-go/waiter/control"
)

// The master's Prometheus metrics, served at /metrics on metrics_listen.
//
// Everything the supervisor owns reaches a scrape as a copy: the status
// snapshot it publishes and the histogram summed from the scoreboard, both
// read through funcs handed to newMetrics, and the events it counts through
// prometheus' own counters. A scrape therefore never waits on the
// supervisor, and the supervisor never waits on a scrape.

// clientDurationBuckets are the upper bounds, in seconds, of the client
// duration histogram; workers count into them in the scoreboard.
var clientDurationBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// spawnLatencyBuckets are the upper bounds, in seconds, of the time from a
// start request to the worker's ready byte: a Go binary's exec and init is
// milliseconds, a program that loads a model or warms a cache may take
// seconds.
var spawnLatencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// durationSnapshot is the client duration histogram summed over workers:
// Buckets[i] counts clients that took <= clientDurationBuckets[i] and more
// than the bound before (NOT cumulative); Buckets[len(clientDurationBuckets)]
// counts the rest (+Inf). Sum is in seconds.
type durationSnapshot struct {
	Buckets []uint64
	Sum     float64
}

// The label values the counters are created with, so that a scrape shows
// every series at 0 from the start (a rate over a series that appears
// only at its first increment misses that increment).
var (
	exitCauses    = []string{"px_idle", "max_requests", "memory", "request_timeout", "crash", "retired", "killed", "start_failed", "client", "hook"}
	reloadResults = []string{"ok", "refused", "failed"}
	workerStates  = []string{"starting", "idle", "busy", "exiting", "retiring"}
)

// The HTTP server's bounds. A scrape is one small GET: anything slower or
// larger than these is a client to drop, not to wait for.
const (
	metricsReadHeaderTimeout = 5 * time.Second
	metricsReadTimeout       = 10 * time.Second
	// metricsHandlerTimeout is promhttp's: past it the scrape is answered
	// 503 while the gathering finishes in the background.
	metricsHandlerTimeout = 10 * time.Second
	// metricsWriteTimeout runs from the end of the request's header: it is
	// longer than metricsHandlerTimeout so that the 503 can still be
	// written rather than the connection cut under it.
	metricsWriteTimeout = metricsHandlerTimeout + 5*time.Second
	// metricsIdleTimeout bounds a keep-alive connection between scrapes.
	metricsIdleTimeout = 5 * time.Second
	metricsMaxHeader   = 8 << 10
	// metricsMaxInFlight is how many scrapes gather at once; more are
	// answered 503 at once.
	metricsMaxInFlight = 4
	// metricsMaxConns is how many connections the server holds open; past
	// it, new ones wait in the kernel's accept queue, where they cost the
	// master no fd (the fds it needs for pipes and pidfds to start workers).
	metricsMaxConns = 16
	// metricsShutdownTimeout bounds close: in-flight scrapes are given this
	// long to finish, then their connections are closed under them.
	metricsShutdownTimeout = 2 * time.Second
)

var (
	errMetricsClosed  = errors.New("pool: metrics: closed")
	errMetricsServing = errors.New("pool: metrics: already serving")
)

// metrics is the master's registry, its counters, and the HTTP server that
// serves them.
type metrics struct {
	reg *prometheus.Registry

	spawns        prometheus.Counter
	spawnFailures prometheus.Counter
	spawnLatency  prometheus.Histogram
	exits         *prometheus.CounterVec
	reloads       *prometheus.CounterVec

	// The server's bounds, the constants above; tests shorten them.
	readHeaderTimeout time.Duration
	maxConns          int

	mu     sync.Mutex
	srv    *http.Server
	ln     net.Listener  // the bound socket, for tests to read its fd flags
	served chan struct{} // closed when srv.Serve has returned
	closed bool
}

// newMetrics: status returns the supervisor's latest published snapshot
// (it may be nil before the first); durations the histogram. Both are safe
// to call from any goroutine and cheap.
func newMetrics(status func() *control.Status, durations func() durationSnapshot) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		spawns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "waiter_spawns_total",
			Help: "Workers that started and reported ready.",
		}),
		spawnFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "waiter_spawn_failures_total",
			Help: "Workers that could not start.",
		}),
		spawnLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "waiter_spawn_latency_seconds",
			Help:    "Time from a worker's start request to its readiness.",
			Buckets: spawnLatencyBuckets,
		}),
		exits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waiter_worker_exits_total",
			Help: "Workers that ended, by cause.",
		}, []string{"cause"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "waiter_reloads_total",
			Help: "Reloads (SIGHUP or the control socket), by result.",
		}, []string{"result"}),
		readHeaderTimeout: metricsReadHeaderTimeout,
		maxConns:          metricsMaxConns,
	}
	for _, c := range exitCauses {
		m.exits.WithLabelValues(c)
	}
	for _, r := range reloadResults {
		m.reloads.WithLabelValues(r)
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newStatusCollector(status, durations),
		m.spawns, m.spawnFailures, m.spawnLatency, m.exits, m.reloads,
	)
	return m
}

// spawned counts a worker that reported ready, latency after its start
// request.
func (m *metrics) spawned(latency time.Duration) {
	m.spawns.Inc()
	m.spawnLatency.Observe(latency.Seconds())
}

// spawnFailed counts a worker that could not start.
func (m *metrics) spawnFailed() { m.spawnFailures.Inc() }

// exited counts a worker's end: px_idle, max_requests, memory,
// request_timeout, crash, retired, killed, start_failed, or client (in
// forking mode, done with its client).
func (m *metrics) exited(cause string) { m.exits.WithLabelValues(cause).Inc() }

// reloaded counts a reload's result: ok, refused or failed.
func (m *metrics) reloaded(result string) { m.reloads.WithLabelValues(result).Inc() }

// serve listens on addr ("host:port", port 0 allowed) and serves GET
// /metrics until close; it returns the bound address.
//
// The listener is Go's, so close-on-exec: workers never inherit it.
func (m *metrics) serve(addr string, logger logrus.FieldLogger) (net.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errMetricsClosed
	}
	if m.srv != nil {
		return nil, errMetricsServing
	}
	// An IPv4 address means IPv4: "tcp" would make 0.0.0.0 a dual-stack
	// socket that answers on [::] too.
	network := "tcp"
	if h, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(h); ip != nil && ip.To4() != nil {
			network = "tcp4"
		}
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("pool: metrics: %w", err)
	}
	mux := http.NewServeMux()
	// "GET" matches HEAD too; other methods get 405, other paths 404.
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog: log.New(logWriter{logger, logrus.ErrorLevel}, "waiter: metrics: ", 0),
		// A collector's error (a duplicate series, say) drops that series
		// and is logged and counted; the rest of the scrape is served.
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            m.reg,
		MaxRequestsInFlight: metricsMaxInFlight,
		Timeout:             metricsHandlerTimeout,
		EnableOpenMetrics:   true,
	}))
	m.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: m.readHeaderTimeout,
		ReadTimeout:       metricsReadTimeout,
		WriteTimeout:      metricsWriteTimeout,
		IdleTimeout:       metricsIdleTimeout,
		MaxHeaderBytes:    metricsMaxHeader,
		ErrorLog:          log.New(logWriter{logger, logrus.WarnLevel}, "waiter: metrics: ", 0),
	}
	// One scrape a connection: an idle keep-alive connection would hold
	// one of the few the listener admits while a real scrape waits.
	m.srv.SetKeepAlivesEnabled(false)
	m.ln = ln
	m.served = make(chan struct{})
	bound := ln.Addr()
	go func(srv *http.Server, ln net.Listener, served chan<- struct{}) {
		defer close(served)
		// Serve ends when close shuts the server down, or when accepting
		// fails for good; either way it has closed ln.
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			logger.WithError(err).Error("waiter: metrics: the server stopped")
		}
	}(m.srv, newLimitListener(ln, m.maxConns), m.served)
	return bound, nil
}

// close shuts the server down: it stops listening at once, gives scrapes in
// flight metricsShutdownTimeout, then closes their connections. It is
// idempotent, and a serve after it fails.
func (m *metrics) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.closed = true
	if m.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		m.srv.Close()
	}
	<-m.served
}

// statusCollector turns the supervisor's snapshot and the scoreboard's
// histogram into metrics, reading each once per scrape.
type statusCollector struct {
	status    func() *control.Status
	durations func() durationSnapshot

	workers, clients, clientsFailed, queueLen, queueMax, overflows,
	limit, generation, started, rss, cpu, duration, age *prometheus.Desc
}

func newStatusCollector(status func() *control.Status, durations func() durationSnapshot) *statusCollector {
	listener := []string{"listener", "name"}
	// By slot, not pid: in forking mode every client is a new process, and
	// a series per pid would grow without bound. A slot's counter starts
	// again with its next worker (a reset, to Prometheus).
	worker := []string{"slot"}
	return &statusCollector{
		status:    status,
		durations: durations,
		workers: prometheus.NewDesc("waiter_workers",
			"Workers by state (retiring: told to finish, possibly still serving).",
			[]string{"state"}, nil),
		clients: prometheus.NewDesc("waiter_clients_total",
			"Clients served, by listener (its address, and its name if it has one).",
			listener, nil),
		clientsFailed: prometheus.NewDesc("waiter_clients_failed_total",
			"Clients whose service failed, by listener.",
			listener, nil),
		queueLen: prometheus.NewDesc("waiter_accept_queue_length",
			"Connections in the listener's accept queue, as the kernel last told (TCP only).",
			listener, nil),
		queueMax: prometheus.NewDesc("waiter_accept_queue_max",
			"The listener's accept queue size, its backlog (TCP only).",
			listener, nil),
		overflows: prometheus.NewDesc("waiter_listen_overflows_total",
			"Connections the kernel dropped because an accept queue was full (TcpExt ListenOverflows): the count for the whole network namespace, not only this server's sockets.",
			nil, nil),
		limit: prometheus.NewDesc("waiter_pool_limit",
			"The pool's limits: prefork is the current target (TTIN/TTOU change it), maxfork, spares.",
			[]string{"limit"}, nil),
		generation: prometheus.NewDesc("waiter_generation",
			"The newest generation (what new workers get) and the serving one (the last that became ready).",
			[]string{"which"}, nil),
		age: prometheus.NewDesc("waiter_snapshot_age_seconds",
			"How old the master's snapshot behind these figures is: it is taken once a second by the supervisor loop, so a growing age means the loop is stuck.",
			nil, nil),
		started: prometheus.NewDesc("waiter_start_time_seconds",
			"When the server started, in seconds since the Unix epoch.",
			nil, nil),
		rss: prometheus.NewDesc("waiter_worker_rss_bytes",
			"A worker's resident set size, as the master last sampled it.",
			worker, nil),
		cpu: prometheus.NewDesc("waiter_worker_cpu_seconds_total",
			"A worker's user and system CPU time, as the master last sampled it.",
			worker, nil),
		duration: prometheus.NewDesc("waiter_client_duration_seconds",
			"How long clients took to serve, over every worker.",
			nil, nil),
	}
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.workers, c.clients, c.clientsFailed, c.queueLen, c.queueMax,
		c.overflows, c.limit, c.generation, c.started, c.rss, c.cpu, c.duration, c.age} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	c.collectDurations(ch)
	s := c.status()
	if s == nil {
		// Before the supervisor's first snapshot nothing is known: absent
		// series say so, where zeros would claim an empty pool.
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		emit(ch, d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		emit(ch, d, prometheus.CounterValue, v, labels...)
	}

	states := make(map[string]int, len(workerStates))
	for _, st := range workerStates {
		states[st] = 0
	}
	for _, w := range s.Workers {
		// A state this list lacks is still shown, under its own name.
		states[w.State]++
		if w.PID <= 0 {
			continue // not started: no process to measure
		}
		slot := strconv.Itoa(w.Slot)
		gauge(c.rss, float64(w.RSS), slot)
		counter(c.cpu, w.CPU, slot)
	}
	names := make([]string, 0, len(states))
	for st := range states {
		names = append(names, st)
	}
	sort.Strings(names)
	for _, st := range names {
		gauge(c.workers, float64(states[st]), st)
	}

	for _, l := range s.Listeners {
		counter(c.clients, float64(l.Served), l.Addr, l.Name)
		counter(c.clientsFailed, float64(l.Failed), l.Addr, l.Name)
		if l.Queue < 0 {
			continue // the kernel cannot tell (a unix socket)
		}
		gauge(c.queueLen, float64(l.Queue), l.Addr, l.Name)
		gauge(c.queueMax, float64(l.MaxQueue), l.Addr, l.Name)
	}
	counter(c.overflows, float64(s.ListenOverflows))

	gauge(c.limit, float64(s.Prefork), "prefork")
	gauge(c.limit, float64(s.Maxfork), "maxfork")
	gauge(c.limit, float64(s.Spares), "spares")
	gauge(c.generation, float64(s.Generation), "newest")
	gauge(c.generation, float64(s.Serving), "serving")
	if !s.Started.IsZero() {
		gauge(c.started, float64(s.Started.UnixNano())/1e9)
		if !s.At.IsZero() {
			gauge(c.age, time.Since(s.At).Seconds())
		}
	}
}

// collectDurations sends the scoreboard's histogram, its buckets made
// cumulative as Prometheus counts them.
func (c *statusCollector) collectDurations(ch chan<- prometheus.Metric) {
	d := c.durations()
	cumulative := make(map[float64]uint64, len(clientDurationBuckets))
	var count uint64
	for i, bound := range clientDurationBuckets {
		if i < len(d.Buckets) {
			count += d.Buckets[i]
		}
		cumulative[bound] = count
	}
	// The +Inf bucket, and any beyond it a longer snapshot might carry: a
	// client is counted, whatever bucket it was put in.
	for i := len(clientDurationBuckets); i < len(d.Buckets); i++ {
		count += d.Buckets[i]
	}
	ch <- prometheus.MustNewConstHistogram(c.duration, count, d.Sum, cumulative)
}

// emit sends one constant metric, or an invalid one that fails only its
// own series: a label value that is not UTF-8 (a listener's name, say)
// must not panic a scrape.
func emit(ch chan<- prometheus.Metric, d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	ch <- m
}

// logWriter turns the lines of a log.Logger (net/http's and promhttp's
// error logs) into entries of the server's logger.
type logWriter struct {
	log   logrus.FieldLogger
	level logrus.Level
}

var _ io.Writer = logWriter{}

func (w logWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	if w.level == logrus.ErrorLevel {
		w.log.Error(msg)
	} else {
		w.log.Warn(msg)
	}
	return len(p), nil
}

// limitListener holds at most cap(sem) connections open: Accept waits for
// one to close before taking the next from the kernel.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

// Close also ends an Accept waiting for a free place.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its place back once, however often net/http closes it.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
