// Command loadclient is the end-to-end suite's client: C concurrent clients
// for D seconds against one TCP address, each connecting, reading the whole
// reply and checking it, then connecting again. It counts every outcome and
// exits 1 if any connection failed or none succeeded, so that a reload or a
// restart under load that drops a single client fails the step.
//
// It is also the suite's one-shot probe (-c 1 -n 1 -print) and its
// fixed-source-port client (-lport), so the container needs no netcat.
//
// Every loop is bounded: by -d in time and by -n in connections per client.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// outcome is how one connection ended.
type outcome string

const (
	ok       outcome = "ok"
	refused  outcome = "refused" // connect: ECONNREFUSED (no one listening)
	reset    outcome = "reset"   // ECONNRESET or EPIPE at any point
	wrong    outcome = "wrong"   // a reply other than -want (short, long, garbled)
	timedOut outcome = "timeout" // no connect or no full reply within -timeout
	other    outcome = "other"   // any other error (EADDRNOTAVAIL, ...)
)

var failures = []outcome{refused, reset, wrong, timedOut, other}

type config struct {
	addr    string
	clients int
	dur     time.Duration
	perConn int // connections per client at most
	pause   time.Duration
	timeout time.Duration
	want    string
	lport   int
	print   bool
}

// tally is shared by the clients; the mutex guards everything in it.
type tally struct {
	mu      sync.Mutex
	counts  map[outcome]int
	samples []string // the first few failures, for the report
	first   string   // the first reply, for -print
}

func (t *tally) add(o outcome, detail, reply string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.counts[o]++
	if t.first == "" && reply != "" {
		t.first = reply
	}
	if o != ok && len(t.samples) < 8 {
		t.samples = append(t.samples, fmt.Sprintf("%s %s: %s", time.Now().Format("15:04:05.000"), o, detail))
	}
}

func main() {
	var c config
	flag.StringVar(&c.addr, "addr", "127.0.0.1:9123", "host:port to connect to")
	flag.IntVar(&c.clients, "c", 8, "concurrent clients")
	flag.DurationVar(&c.dur, "d", 5*time.Second, "how long each client keeps connecting")
	flag.IntVar(&c.perConn, "n", 100000, "connections per client at most")
	flag.DurationVar(&c.pause, "pause", 5*time.Millisecond, "pause between a client's connections (keeps the load steady and bounded)")
	flag.DurationVar(&c.timeout, "timeout", 10*time.Second, "deadline for one connection: connect and full reply")
	want := flag.String("want", `hello world\n`, `the whole reply expected (\n is a newline)`)
	flag.IntVar(&c.lport, "lport", 0, "local port to connect from (only with -c 1)")
	flag.BoolVar(&c.print, "print", false, "print the first reply on stdout")
	flag.Parse()
	c.want = strings.ReplaceAll(*want, `\n`, "\n")
	if c.clients < 1 || c.perConn < 1 || c.dur <= 0 || (c.lport != 0 && c.clients != 1) {
		fmt.Fprintln(os.Stderr, "loadclient: want -c >= 1, -n >= 1, -d > 0, and -lport only with -c 1")
		os.Exit(2)
	}
	os.Exit(run(c, os.Stdout))
}

func run(c config, out io.Writer) int {
	t := &tally{counts: map[outcome]int{}}
	deadline := time.Now().Add(c.dur)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < c.clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < c.perConn && time.Now().Before(deadline); n++ {
				o, detail, reply := once(c)
				t.add(o, detail, reply)
				if n+1 < c.perConn {
					time.Sleep(c.pause)
				}
			}
		}()
	}
	wg.Wait()
	if c.print {
		fmt.Fprint(out, t.first)
	}
	failed := 0
	for _, o := range failures {
		failed += t.counts[o]
	}
	keys := make([]string, 0, len(t.counts))
	for _, o := range append([]outcome{ok}, failures...) {
		keys = append(keys, fmt.Sprintf("%s=%d", o, t.counts[o]))
	}
	sort.Strings(t.samples)
	fmt.Fprintf(os.Stderr, "loadclient: %s: %d clients for %s: %s\n", c.addr, c.clients,
		time.Since(start).Round(time.Millisecond), strings.Join(keys, " "))
	for _, s := range t.samples {
		fmt.Fprintln(os.Stderr, "loadclient:   ", s)
	}
	if failed > 0 || t.counts[ok] == 0 {
		return 1
	}
	return 0
}

// once makes one connection and classifies how it ended.
func once(c config) (outcome, string, string) {
	d := net.Dialer{Timeout: c.timeout}
	if c.lport != 0 {
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: c.lport}
	}
	conn, err := d.Dial("tcp", c.addr)
	if err != nil {
		return classify(err), err.Error(), ""
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		return other, err.Error(), ""
	}
	// Read one byte more than expected, so a longer reply is caught too.
	buf, err := io.ReadAll(io.LimitReader(conn, int64(len(c.want))+1))
	reply := string(buf)
	if err != nil {
		return classify(err), fmt.Sprintf("after %q: %v", reply, err), reply
	}
	if reply != c.want {
		return wrong, fmt.Sprintf("got %q, want %q", reply, c.want), reply
	}
	return ok, "", reply
}

func classify(err error) outcome {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return refused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return reset
	case errors.As(err, &ne) && ne.Timeout():
		return timedOut
	}
	return other
}
