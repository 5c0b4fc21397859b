package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = ms(i + 1)
	}
	cases := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		// Nearest rank over 1..100 ms: the p-th value itself.
		{"p50 of 100", hundred, 50, ms(50)},
		{"p90 of 100", hundred, 90, ms(90)},
		{"p99 of 100", hundred, 99, ms(99)},
		{"p100 of 100", hundred, 100, ms(100)},
		// Rank ceil(0.5*3) = 2.
		{"p50 of 3", []time.Duration{ms(1), ms(2), ms(3)}, 50, ms(2)},
		// Rank ceil(0.99*3) = 3: with few samples the tail is the max.
		{"p99 of 3", []time.Duration{ms(1), ms(2), ms(3)}, 99, ms(3)},
		// Rank ceil(0.5*4) = 2: the lower middle, not an average.
		{"p50 of 4", []time.Duration{ms(1), ms(2), ms(3), ms(4)}, 50, ms(2)},
		// One value is every percentile.
		{"p1 of 1", []time.Duration{ms(7)}, 1, ms(7)},
		// Nothing measured.
		{"empty", nil, 50, 0},
	}
	for _, c := range cases {
		if have := percentile(c.sorted, c.p); have != c.want {
			t.Errorf("%s: want %s, have %s", c.name, c.want, have)
		}
	}
}

func TestSummarizeSorts(t *testing.T) {
	d := []time.Duration{ms(5), ms(1), ms(4), ms(2), ms(3)}
	want := latencies{P50: ms(3), P90: ms(5), P99: ms(5), Max: ms(5)}
	if have := summarize(d); have != want {
		t.Errorf("want %+v, have %+v", want, have)
	}
}

func TestMedian(t *testing.T) {
	cases := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},      // odd: the middle one
		{[]float64{4, 1, 3, 2}, 2.5}, // even: the mean of the middle two
		{[]float64{7}, 7},
		{nil, 0},
	}
	for _, c := range cases {
		if have := median(c.in); have != c.want {
			t.Errorf("median(%v): want %v, have %v", c.in, c.want, have)
		}
	}
}

func TestClassify(t *testing.T) {
	op := func(op string, errno syscall.Errno) error {
		return &net.OpError{Op: op, Net: "tcp", Err: os.NewSyscallError(op, errno)}
	}
	cases := []struct {
		name string
		err  error
		want errKind
	}{
		{"refused, net", op("dial", syscall.ECONNREFUSED), errRefused},
		{"refused, raw", os.NewSyscallError("connect", syscall.ECONNREFUSED), errRefused},
		{"reset on read", op("read", syscall.ECONNRESET), errReset},
		{"broken pipe", os.NewSyscallError("write", syscall.EPIPE), errReset},
		{"deadline, net", &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, errTimeout},
		{"SO_RCVTIMEO passed", os.NewSyscallError("read", syscall.EAGAIN), errTimeout},
		{"SO_SNDTIMEO passed on connect", os.NewSyscallError("connect", syscall.EINPROGRESS), errTimeout},
		{"wrong reply", fmt.Errorf("%w: %q", errWrongReply, "bye"), errWrong},
		{"out of ports", os.NewSyscallError("connect", syscall.EADDRNOTAVAIL), errOther},
		{"anything else", errors.New("boom"), errOther},
	}
	for _, c := range cases {
		if have := classify(c.err); have != c.want {
			t.Errorf("%s (%v): want %s, have %s", c.name, c.err, c.want, have)
		}
	}
}

// testServer is a loopback server that treats each client with handle.
func testServer(t *testing.T, handle func(*net.TCPConn)) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var held []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// closedPort is a loopback port nobody listens on (just closed).
func closedPort(t *testing.T) netip.AddrPort {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := l.Addr().(*net.TCPAddr).AddrPort()
	l.Close()
	return ap
}

// TestLoadAgainstServers runs the load generator against real loopback
// servers that answer right, answer wrong, reset, never answer, or are not
// there, and reads back how it counted them.
func TestLoadAgainstServers(t *testing.T) {
	greet := func(c *net.TCPConn) { c.Write([]byte(greeting)); c.Close() }
	wrong := func(c *net.TCPConn) { c.Write([]byte("goodbye\n")); c.Close() }
	long := func(c *net.TCPConn) { c.Write(make([]byte, 200)); c.Close() }
	reset := func(c *net.TCPConn) { c.SetLinger(0); c.Close() } // RST instead of FIN
	hang := func(c *net.TCPConn) {}                             // held open until the test ends
	cases := []struct {
		name   string
		addr   func(*testing.T) netip.AddrPort
		wantOK bool
		want   errKind // the only kind of error expected, when !wantOK
	}{
		{"greeting", func(t *testing.T) netip.AddrPort { return testServer(t, greet) }, true, 0},
		{"wrong reply", func(t *testing.T) netip.AddrPort { return testServer(t, wrong) }, false, errWrong},
		{"reply too long", func(t *testing.T) netip.AddrPort { return testServer(t, long) }, false, errWrong},
		{"reset", func(t *testing.T) netip.AddrPort { return testServer(t, reset) }, false, errReset},
		{"no reply", func(t *testing.T) netip.AddrPort { return testServer(t, hang) }, false, errTimeout},
		{"refused", closedPort, false, errRefused},
	}
	for _, engine := range []string{"raw", "net"} {
		for _, c := range cases {
			t.Run(engine+"/"+c.name, func(t *testing.T) {
				o := loadOptions{Addr: c.addr(t), Conc: 3, Duration: 300 * time.Millisecond, Timeout: 100 * time.Millisecond, Engine: engine}
				start := time.Now()
				r, err := runLoad(context.Background(), o)
				if err != nil {
					t.Fatal(err)
				}
				// Bounded: the window plus at most one connection's timeout.
				if took, most := time.Since(start), o.Duration+o.Timeout+200*time.Millisecond; took > most {
					t.Errorf("took %s, want at most %s", took, most)
				}
				if c.wantOK {
					if r.OK == 0 || r.Errs.total() != 0 {
						t.Fatalf("want only successes, have %d ok, errors %s (%q)", r.OK, fmtErrs(r.Errs), r.Samples)
					}
					l := r.Lat
					if !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max && l.Max <= o.Timeout) {
						t.Errorf("latencies out of order or bounds: %+v", l)
					}
					if want := float64(r.OK) / o.Duration.Seconds(); r.PerSec != want {
						t.Errorf("conn/s: want %v, have %v", want, r.PerSec)
					}
					return
				}
				if r.OK != 0 || r.Errs[c.want] == 0 || r.Errs.total() != r.Errs[c.want] {
					t.Fatalf("want only %s errors, have %d ok, errors %s (%q)", c.want, r.OK, fmtErrs(r.Errs), r.Samples)
				}
				if r.Lat != (latencies{}) {
					t.Errorf("failed connections must not count in the latencies: %+v", r.Lat)
				}
			})
		}
	}
}

// TestLoadPaced checks that a paced client rests between connections.
func TestLoadPaced(t *testing.T) {
	addr := testServer(t, func(c *net.TCPConn) { c.Write([]byte(greeting)); c.Close() })
	o := loadOptions{Addr: addr, Conc: 1, Duration: 300 * time.Millisecond, Timeout: time.Second, Pause: 50 * time.Millisecond}
	r, err := runLoad(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	// At most one connection per pause in the window, and at least one.
	if most := int(o.Duration/o.Pause) + 1; r.OK < 1 || r.OK > most {
		t.Errorf("want 1 to %d connections, have %d", most, r.OK)
	}
}

func TestLoadRefusesNonLoopback(t *testing.T) {
	o := loadOptions{Addr: netip.MustParseAddrPort("192.0.2.1:80"), Conc: 1, Duration: time.Second, Timeout: time.Second}
	if _, err := runLoad(context.Background(), o); err == nil {
		t.Fatal("want an error for a non-loopback address")
	}
}

func TestLoadStopsOnCancel(t *testing.T) {
	addr := testServer(t, func(c *net.TCPConn) { c.Write([]byte(greeting)); c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := runLoad(ctx, loadOptions{Addr: addr, Conc: 2, Duration: time.Minute, Timeout: time.Second})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the context's error, have %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %s after the context ended", took)
	}
}
