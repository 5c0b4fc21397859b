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

// watcher runs the two watchers until stop.
type watcher struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu sync.Mutex
	st watchStats
}

// startWatch scrapes metricsURL and asks status on the control socket at
// ctlPath, each every interval (the first at once), until stop.
func startWatch(ctx context.Context, metricsURL, ctlPath string, every time.Duration) *watcher {
	ctx, cancel := context.WithCancel(ctx)
	w := &watcher{cancel: cancel}
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		w.scrapeLoop(ctx, metricsURL, every)
	}()
	go func() {
		defer w.wg.Done()
		w.statusLoop(ctx, ctlPath, every)
	}()
	return w
}

// stop ends both watchers, waits for them (each request is bounded by
// watchTimeout) and returns what they did. Later calls return the same.
func (w *watcher) stop() watchStats {
	w.once.Do(func() {
		w.cancel()
		w.wg.Wait()
	})
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

// tick calls f at once and then every interval until ctx ends.
func tick(ctx context.Context, every time.Duration, f func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		f()
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// scrapeLoop is Prometheus: one kept-alive connection, a GET of the whole
// page, gzip asked for (Go's transport does it, as Prometheus does).
func (w *watcher) scrapeLoop(ctx context.Context, url string, every time.Duration) {
	tr := &http.Transport{MaxIdleConns: 1, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: watchTimeout}
	tick(ctx, every, func() {
		t0 := time.Now()
		n, err := scrape(ctx, hc, url)
		d := time.Since(t0)
		if ctx.Err() != nil {
			return // stopped mid-request: neither a scrape nor an error
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
	})
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

// statusLoop is waiterctl top: one connection kept across polls (dialled
// again after an error), a status request each time.
func (w *watcher) statusLoop(ctx context.Context, path string, every time.Duration) {
	var c *control.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	tick(ctx, every, func() {
		t0 := time.Now()
		var err error
		if c == nil {
			if c, err = control.Dial(path, watchTimeout); err != nil {
				c = nil
				w.fail(false, err)
				return
			}
		}
		rep, err := c.Do(control.Request{Cmd: control.CmdStatus}, watchTimeout)
		d := time.Since(t0)
		if err == nil && (rep.Status == nil || len(rep.Status.Workers) == 0) {
			err = errors.New("status: no workers in the reply")
		}
		if err != nil {
			c.Close()
			c = nil
			if ctx.Err() == nil {
				w.fail(false, err)
			}
			return
		}
		w.mu.Lock()
		w.st.Status++
		w.st.StatusLat = append(w.st.StatusLat, d)
		w.mu.Unlock()
	})
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

// watchServer starts the watchers against a server started with the ops
// flags.
func watchServer(ctx context.Context, s *server) (*watcher, error) {
	ap, err := metricsAddr(s.stderr, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%s: %w:\n%s", s.spec.Name, err, s.stderrTail())
	}
	url := "http://" + net.JoinHostPort(ap.Addr().String(), fmt.Sprint(ap.Port())) + "/metrics"
	return startWatch(ctx, url, s.control, watchEvery), nil
}

// roundOrder is the order of the modes in round r (from 1): plain prefork
// and prefork+ops swap places every other round, so that neither is always
// the one that runs first (after a server stop, on a cooler machine).
func roundOrder(modes []string, r int) []string {
	out := append([]string(nil), modes...)
	if r%2 == 1 {
		return out
	}
	i, j := -1, -1
	for k, m := range out {
		switch m {
		case "prefork":
			i = k
		case "prefork+ops":
			j = k
		}
	}
	if i >= 0 && j >= 0 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}
