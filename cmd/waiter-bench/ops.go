package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"sync"
	"time"

	"github.com/waiter-go/waiter/control"
)

// The "prefork+ops" mode is the prefork pool with its operator's view on
// (-control and -metrics-listen) and watched as an operator would watch
// it: Prometheus scraping /metrics and waiterctl top asking status, each
// once a second, while the load runs. Compared with plain prefork in the
// same rounds, it is the cost of leaving them on.

// watchEvery is how often each watcher asks: Prometheus' usual scrape
// interval is longer (15s), waiterctl top's refresh is a second.
const watchEvery = time.Second

// watchTimeout bounds one scrape or one status request.
const watchTimeout = 2 * time.Second

// promAccept is the Accept header Prometheus sends, so that the master
// encodes what a real scrape asks for.
const promAccept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"

// watchStats is what the watchers did during one server's life.
type watchStats struct {
	Scrapes, ScrapeErrs int
	Status, StatusErrs  int
	ScrapeLat           []time.Duration
	StatusLat           []time.Duration
	Bytes               int    // the last scrape's body
	FirstErr            string // the first error of either watcher
}

func (w *watchStats) add(o watchStats) {
	w.Scrapes += o.Scrapes
	w.ScrapeErrs += o.ScrapeErrs
	w.Status += o.Status
	w.StatusErrs += o.StatusErrs
	w.ScrapeLat = append(w.ScrapeLat, o.ScrapeLat...)
	w.StatusLat = append(w.StatusLat, o.StatusLat...)
	if o.Bytes > 0 {
		w.Bytes = o.Bytes
	}
	if w.FirstErr == "" {
		w.FirstErr = o.FirstErr
	}
}

// watcher is the two watchers of one server. They ask only while they
// are on (between run and halt: while that server is under load), each
// once per interval of the time on, and keep their connections across
// (Prometheus and waiterctl top keep theirs).
type watcher struct {
	url, path string
	every     time.Duration
	tr        *http.Transport
	hc        *http.Client
	ctl       *control.Client // the status loop's, between its runs too
	// Time on left before each loop's next request: its schedule goes on
	// from one run to the next.
	scrapeLeft, statusLeft time.Duration

	halted chan struct{} // of the current run; nil: off
	wg     sync.WaitGroup
	closed bool

	mu sync.Mutex
	st watchStats
}

func newWatcher(metricsURL, ctlPath string, every time.Duration) *watcher {
	tr := &http.Transport{MaxIdleConns: 1, IdleConnTimeout: time.Minute}
	return &watcher{url: metricsURL, path: ctlPath, every: every, tr: tr,
		hc: &http.Client{Transport: tr, Timeout: watchTimeout}}
}

// startWatch is a watcher already on: it scrapes metricsURL and asks
// status on the control socket at ctlPath, each every interval (the first
// at once), until stop.
func startWatch(ctx context.Context, metricsURL, ctlPath string, every time.Duration) *watcher {
	w := newWatcher(metricsURL, ctlPath, every)
	w.run(ctx)
	return w
}

// run turns the watchers on until halt: the first run asks at once, and
// each later request comes an interval of time on after the one before.
// ctx bounds the requests (as does watchTimeout each).
func (w *watcher) run(ctx context.Context) {
	if w.halted != nil || w.closed {
		return
	}
	w.halted = make(chan struct{})
	w.wg.Add(2)
	go func(halted <-chan struct{}) {
		defer w.wg.Done()
		w.pace(halted, &w.scrapeLeft, func() { w.scrapeOnce(ctx) })
	}(w.halted)
	go func(halted <-chan struct{}) {
		defer w.wg.Done()
		w.pace(halted, &w.statusLeft, func() { w.statusOnce(ctx) })
	}(w.halted)
}

// halt turns the watchers off and waits for them. A request under way is
// finished (within watchTimeout), not cut: the server has begun the work.
func (w *watcher) halt() {
	if w.halted == nil {
		return
	}
	close(w.halted)
	w.wg.Wait()
	w.halted = nil
}

// pace calls f each time *left of time on has passed, then waits every
// from the call's start, until halted; *left keeps what was left of the
// wait for the next run.
func (w *watcher) pace(halted <-chan struct{}, left *time.Duration, f func()) {
	for {
		start := time.Now()
		t := time.NewTimer(*left)
		select {
		case <-halted:
			t.Stop()
			*left = max(0, *left-time.Since(start))
			return
		case <-t.C:
		}
		t0 := time.Now()
		f()
		*left = max(0, w.every-time.Since(t0))
	}
}

// stop halts the watchers, closes their connections and returns what they
// did. Later calls return the same.
func (w *watcher) stop() watchStats {
	w.halt()
	if !w.closed {
		w.closed = true
		w.tr.CloseIdleConnections()
		if w.ctl != nil {
			w.ctl.Close()
			w.ctl = nil
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st
}

func (w *watcher) fail(scrape bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if scrape {
		w.st.ScrapeErrs++
	} else {
		w.st.StatusErrs++
	}
	if w.st.FirstErr == "" {
		w.st.FirstErr = err.Error()
	}
}

// scrapeOnce is Prometheus: a GET of the whole page on the kept-alive
// connection, gzip asked for (Go's transport does it, as Prometheus does).
func (w *watcher) scrapeOnce(ctx context.Context) {
	t0 := time.Now()
	n, err := scrape(ctx, w.hc, w.url)
	d := time.Since(t0)
	if ctx.Err() != nil {
		return // the run is ending: neither a scrape nor an error
	}
	if err != nil {
		w.fail(true, err)
		return
	}
	w.mu.Lock()
	w.st.Scrapes++
	w.st.ScrapeLat = append(w.st.ScrapeLat, d)
	w.st.Bytes = n
	w.mu.Unlock()
}

// scrape GETs the metrics page and checks that it is waiter's.
func scrape(ctx context.Context, hc *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", promAccept)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, fmt.Errorf("scrape: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scrape: %s", resp.Status)
	}
	if !bytes.Contains(body, []byte("waiter_clients_total")) {
		return 0, fmt.Errorf("scrape: no waiter_clients_total in %d bytes", len(body))
	}
	return len(body), nil
}

// statusOnce is waiterctl top: a status request on the connection kept
// across polls (dialled again after an error).
func (w *watcher) statusOnce(ctx context.Context) {
	t0 := time.Now()
	var err error
	if w.ctl == nil {
		if w.ctl, err = control.Dial(w.path, watchTimeout); err != nil {
			w.ctl = nil
			w.fail(false, err)
			return
		}
	}
	rep, err := w.ctl.Do(control.Request{Cmd: control.CmdStatus}, watchTimeout)
	d := time.Since(t0)
	if err == nil && (rep.Status == nil || len(rep.Status.Workers) == 0) {
		err = errors.New("status: no workers in the reply")
	}
	if err != nil {
		w.ctl.Close()
		w.ctl = nil
		if ctx.Err() == nil {
			w.fail(false, err)
		}
		return
	}
	w.mu.Lock()
	w.st.Status++
	w.st.StatusLat = append(w.st.StatusLat, d)
	w.mu.Unlock()
}

// metricsLine is how the master says where it serves metrics (the port is
// the kernel's choice: -metrics-listen 127.0.0.1:0).
var metricsLine = regexp.MustCompile(`waiter: metrics on http://([^/ "]+)/metrics`)

// metricsAddr finds the metrics address in a server's log, waiting up to
// wait for it (the master logs it before it starts its workers, so it is
// there by READY=1; the wait is a margin). The address must be loopback.
func metricsAddr(logPath string, wait time.Duration) (netip.AddrPort, error) {
	end := time.Now().Add(wait)
	for {
		b, err := os.ReadFile(logPath)
		if err != nil {
			return netip.AddrPort{}, err
		}
		if m := metricsLine.FindSubmatch(b); m != nil {
			ap, err := netip.ParseAddrPort(string(m[1]))
			if err != nil {
				return netip.AddrPort{}, fmt.Errorf("metrics address %q: %w", m[1], err)
			}
			if !ap.Addr().IsLoopback() {
				return netip.AddrPort{}, fmt.Errorf("metrics address %s is not loopback", ap)
			}
			return ap, nil
		}
		if time.Now().After(end) {
			return netip.AddrPort{}, errors.New("no \"waiter: metrics on http://ADDR/metrics\" in the log")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// watchServer makes the watchers of a server started with the ops flags,
// off until run.
func watchServer(s *server) (*watcher, error) {
	ap, err := metricsAddr(s.stderr, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%s: %w:\n%s", s.spec.Name, err, s.stderrTail())
	}
	url := "http://" + net.JoinHostPort(ap.Addr().String(), fmt.Sprint(ap.Port())) + "/metrics"
	return newWatcher(url, s.control, watchEvery), nil
}
