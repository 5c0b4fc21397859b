// Command waiter-bench measures waiterd against a plain Go server on this
// machine, in one run, and prints one table.
//
// It builds waiterd (static, stripped, as shipped) into a temporary
// directory, then, for several rounds, starts each server on a free
// loopback port, waits for its READY=1 on a notify socket of its own, runs
// the load generator at each concurrency, and stops it. Every figure is the
// median of the rounds; every row is also given as a ratio to the baseline
// (one Go process, a goroutine per connection) of the same run. It also
// times the bare spawn of the waiterd binary (the ceiling of forking mode),
// and, for the prefork pool, the time to READY=1 and to the first served
// client and the idle memory of the process tree. The prefork pool is also
// run with its metrics and control socket on and watched (a /metrics
// scrape and a control status request each second, as Prometheus and
// waiterctl top would): in each round the two pools are up at once and
// loaded in alternate slices of a second, and the report gives the cost of
// leaving them on as the ratio of the two (prefork+ops in ops.go). The
// same pool with the PROXY protocol on, each client sending a v1 or v2
// header first (prefork+proxy1, prefork+proxy2 in proxy.go), is in the
// same group of slices. Plain waiterd greets and closes without reading,
// so a PROXY client also costs the server a read that a plain one does
// not: the same pool with waiterd's echo on, each client writing a line
// ("ping\n", after its header in the same write), half-closing and
// wanting the greeting and the line back (prefork+echo, and with a v1 or
// v2 header prefork+echo+proxy1, prefork+echo+proxy2 in echo.go), is a
// group of its own, which gives the header's own cost against a protocol
// that reads anyway. Forking mode and the bare spawn loop are paired the
// same way (group.go).
//
// Usage (from the repository):
//
//	go run ./cmd/waiter-bench            # the full run, about 12 minutes on 2 cores
//	go run ./cmd/waiter-bench -quick     # a smoke run, under a minute
//	go run ./cmd/waiter-bench -modes baseline,prefork -c 64 -rounds 5
//	go run ./cmd/waiter-bench -modes prefork,prefork+ops -c 64 -rounds 5 -startups 0
//	go run ./cmd/waiter-bench -modes prefork,prefork+proxy1,prefork+proxy2 -c 64 -rounds 5 -startups 0
//	go run ./cmd/waiter-bench -modes prefork+echo,prefork+echo+proxy1,prefork+echo+proxy2 -c 64 -rounds 5 -startups 0
//	go run ./cmd/waiter-bench -modes forking,spares,spawn -c 8 -rounds 5
//
// The load is loopback only and bounded in time; every server is killed at
// the end, on error and on ^C. It prints; it judges nothing by its exit
// status, except that it could not measure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if os.Getenv(envRole) == "baseline" {
		if len(os.Args) != 2 {
			fmt.Fprintln(os.Stderr, "baseline: want one argument, the address")
			os.Exit(1)
		}
		os.Exit(runBaseline(os.Args[1], os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// settings are the driver's flags.
type settings struct {
	Duration time.Duration
	Warmup   time.Duration
	Timeout  time.Duration
	MaxTime  time.Duration
	Rounds   int
	Startups int
	Concs    []int
	Modes    []string
	Prefork  int
	Maxfork  int
	Spares   int
	Pace     time.Duration
	Engine   string
	Waiterd  string
	Quick    bool
	Verbose  bool
	// Load, when set, only runs the load generator against this address
	// (a server started by hand, for profiling it).
	Load string
	// LoadProxy, with Load, has every client send a PROXY header of this
	// version (1 or 2) first; 0: none.
	LoadProxy int
}

// allModes, in the order they run and print.
var allModes = []string{"baseline", "nofork", "forking", "spares", "prefork", "prefork+ops", "prefork+proxy1", "prefork+proxy2",
	"prefork+echo", "prefork+echo+proxy1", "prefork+echo+proxy2", "spawn"}

func parseFlags(args []string, stderr io.Writer) (settings, error) {
	var st settings
	fs := flag.NewFlagSet("waiter-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&st.Duration, "duration", 5*time.Second, "measured time of each round at each concurrency")
	fs.DurationVar(&st.Warmup, "warmup", time.Second, "unmeasured load before each measurement (prefork grows, caches warm)")
	fs.DurationVar(&st.Timeout, "timeout", 2*time.Second, "per-connection timeout (connect plus reading to EOF)")
	fs.DurationVar(&st.MaxTime, "max-time", 15*time.Minute, "hard bound on the whole run")
	fs.IntVar(&st.Rounds, "rounds", 3, "rounds of every measurement; the table shows medians")
	fs.IntVar(&st.Startups, "startups", 5, "prefork starts timed (READY=1, first client) and measured (idle memory)")
	concs := fs.String("c", "1,8,64", "concurrencies: clients connecting at once")
	modes := fs.String("modes", strings.Join(allModes, ","), "what to measure: "+strings.Join(allModes, ", "))
	fs.IntVar(&st.Prefork, "prefork", 8, "prefork mode's initial workers")
	fs.IntVar(&st.Maxfork, "maxfork", 32, "prefork mode's maximum workers")
	fs.IntVar(&st.Spares, "spares", 4, "forking mode's spares in the 'spares' mode")
	fs.DurationVar(&st.Pace, "pace", 10*time.Millisecond, "the 'spares' mode is also measured with one client resting this long between connections (0: not)")
	fs.StringVar(&st.Engine, "engine", "net", "load generator's client: net (Go's net package, netpoller) or raw (blocking syscalls on 1 thread per client)")
	fs.StringVar(&st.Waiterd, "waiterd", "", "a waiterd binary to measure instead of building one")
	fs.BoolVar(&st.Quick, "quick", false, "a smoke run: 1 round of 1s, short warm-up, 2 starts (flags given explicitly still win)")
	fs.BoolVar(&st.Verbose, "v", false, "print each round and the first error of each kind")
	fs.StringVar(&st.Load, "load", "", "only run the load generator against this loopback host:port (-c, -duration, -rounds), for profiling a server started by hand")
	fs.IntVar(&st.LoadProxy, "load-proxy", 0, "with -load: every client sends a PROXY protocol header of this version (1 or 2) first")
	if err := fs.Parse(args); err != nil {
		return st, err
	}
	if st.LoadProxy != 0 && st.LoadProxy != 1 && st.LoadProxy != 2 {
		return st, fmt.Errorf("-load-proxy: %d is not a PROXY protocol version (1 or 2; 0: none)", st.LoadProxy)
	}
	if fs.NArg() > 0 {
		return st, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if st.Quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			st.Duration = time.Second
		}
		if !set["warmup"] {
			st.Warmup = 200 * time.Millisecond
		}
		if !set["rounds"] {
			st.Rounds = 1
		}
		if !set["startups"] {
			st.Startups = 2
		}
	}
	for _, f := range strings.Split(*concs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 4096 {
			return st, fmt.Errorf("-c: %q is not a concurrency (1 to 4096)", f)
		}
		st.Concs = append(st.Concs, n)
	}
	for _, m := range strings.Split(*modes, ",") {
		m = strings.TrimSpace(m)
		if !slices.Contains(allModes, m) {
			return st, fmt.Errorf("-modes: unknown mode %q (want some of %s)", m, strings.Join(allModes, ", "))
		}
		if !slices.Contains(st.Modes, m) {
			st.Modes = append(st.Modes, m)
		}
	}
	// Run (and print) in the canonical order whatever the flag's order.
	slices.SortFunc(st.Modes, func(a, b string) int { return slices.Index(allModes, a) - slices.Index(allModes, b) })
	switch {
	case st.Duration <= 0 || st.Warmup < 0 || st.Timeout <= 0 || st.MaxTime <= 0 || st.Pace < 0:
		return st, errors.New("-duration, -timeout and -max-time must be positive, -warmup and -pace not negative")
	case st.Rounds < 1 || st.Startups < 0:
		return st, errors.New("-rounds must be at least 1, -startups at least 0")
	case st.Prefork < 1 || st.Maxfork < st.Prefork || st.Spares < 1:
		return st, errors.New("want 1 <= -prefork <= -maxfork and -spares >= 1")
	case st.Engine != "raw" && st.Engine != "net":
		return st, fmt.Errorf("-engine: %q (want raw or net)", st.Engine)
	}
	return st, nil
}

// estimate is how long the run should take, without server starts.
func (st settings) estimate() time.Duration {
	per := len(st.Modes) * len(st.Concs)
	if slices.Contains(st.Modes, "spares") && st.Pace > 0 {
		per++
	}
	d := time.Duration(st.Rounds*per) * (st.Duration + st.Warmup)
	if slices.Contains(st.Modes, "prefork") {
		d += time.Duration(st.Startups) * 700 * time.Millisecond
	}
	return d
}

func run(args []string, stdout, stderr io.Writer) int {
	st, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "waiter-bench: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), st.MaxTime)
	defer cancel()
	// ^C (or TERM): kill every server now, then let the run unwind; a second
	// one exits at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	interrupted := make(chan struct{})
	go func() {
		select {
		case <-sigs:
		case <-ctx.Done():
			return
		}
		close(interrupted)
		killAll()
		cancel()
		<-sigs
		killAll()
		os.Exit(130)
	}()
	becomeSubreaper()
	defer killAll()

	b := &bench{st: st, out: stdout, log: stderr, res: map[rowKey][]loadResult{},
		watched: map[string]*watchStats{}, pairs: map[rowKey][]slicePair{}}
	if st.Load != "" {
		err = b.loadOnly(ctx)
	} else {
		err = b.run(ctx)
	}
	select {
	case <-interrupted:
		fmt.Fprintln(stderr, "waiter-bench: interrupted; servers killed")
		return 130
	default:
	}
	if err != nil {
		fmt.Fprintf(stderr, "waiter-bench: %v\n", err)
		if errors.Is(err, context.DeadlineExceeded) {
			fmt.Fprintf(stderr, "waiter-bench: the run passed -max-time %s\n", st.MaxTime)
		}
		return 1
	}
	return 0
}

type rowKey struct {
	mode string
	conc int
}

// startup is one timed start of the prefork pool.
type startup struct {
	ready, first time.Duration
	mem          memUse
}

type bench struct {
	st        settings
	out, log  io.Writer
	specs     map[string]serverSpec
	res       map[rowKey][]loadResult
	watched   map[string]*watchStats // by mode, over the rounds
	pairs     map[rowKey][]slicePair // a group's first mode and another, by the other and the concurrency
	starts    []startup
	dir       string
	waiterd   string
	began     time.Time
	loadStart string // the machine's load average when the run began
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "[%6.1fs] ", time.Since(b.began).Seconds())
	fmt.Fprintf(b.log, format, args...)
	fmt.Fprintln(b.log)
}

func (b *bench) run(ctx context.Context) error {
	b.began = time.Now()
	b.loadStart = loadAvg()
	dir, err := os.MkdirTemp("", "waiter-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b.dir = dir
	b.waiterd = b.st.Waiterd
	if b.waiterd == "" {
		root, err := moduleRoot(ctx)
		if err != nil {
			return err
		}
		b.logf("building waiterd (CGO_ENABLED=0 -trimpath -ldflags '-s -w')")
		if b.waiterd, err = buildWaiterd(ctx, root, dir); err != nil {
			return err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b.specs = map[string]serverSpec{
		"baseline": {Name: "baseline", Exe: self, Args: []string{"{addr}"}, Env: []string{envRole + "=baseline"}},
		"nofork":   {Name: "nofork", Exe: b.waiterd, Args: []string{"-listen", "{addr}", "-nofork"}},
		"forking":  {Name: "forking", Exe: b.waiterd, Args: []string{"-listen", "{addr}", "-prefork", "0", "-spares", "0"}},
		"spares": {Name: "spares", Exe: b.waiterd, Args: []string{"-listen", "{addr}", "-prefork", "0",
			"-spares", strconv.Itoa(b.st.Spares)}},
		"prefork": {Name: "prefork", Exe: b.waiterd, Args: []string{"-listen", "{addr}",
			"-prefork", strconv.Itoa(b.st.Prefork), "-maxfork", strconv.Itoa(b.st.Maxfork)}},
		// prefork's arguments and the operator's view on; the metrics port
		// is the kernel's choice, read back from the master's log.
		"prefork+ops": {Name: "prefork+ops", Exe: b.waiterd, Watch: true, Args: []string{"-listen", "{addr}",
			"-prefork", strconv.Itoa(b.st.Prefork), "-maxfork", strconv.Itoa(b.st.Maxfork),
			"-control", "{control}", "-metrics-listen", "127.0.0.1:0"}},
	}
	// prefork's arguments and the PROXY protocol on: every client sends a
	// header of that version first.
	for v := 1; v <= 2; v++ {
		m := fmt.Sprintf("prefork+proxy%d", v)
		b.specs[m] = serverSpec{Name: m, Exe: b.waiterd, Proxy: v, Args: []string{"-listen", "{addr}",
			"-prefork", strconv.Itoa(b.st.Prefork), "-maxfork", strconv.Itoa(b.st.Maxfork),
			"-proxy-protocol", "-proxy-from", "127.0.0.0/8"}}
	}
	// prefork's arguments and waiterd's echo on (its demo setting echo, a
	// flag as every setting is): every client writes a line, half-closes
	// and wants the greeting and the line back; with the PROXY protocol
	// on too, the header first, in the same write.
	b.specs["prefork+echo"] = serverSpec{Name: "prefork+echo", Exe: b.waiterd, Echo: true, Args: []string{"-listen", "{addr}",
		"-prefork", strconv.Itoa(b.st.Prefork), "-maxfork", strconv.Itoa(b.st.Maxfork), "-echo"}}
	for v := 1; v <= 2; v++ {
		m := fmt.Sprintf("prefork+echo+proxy%d", v)
		b.specs[m] = serverSpec{Name: m, Exe: b.waiterd, Echo: true, Proxy: v, Args: []string{"-listen", "{addr}",
			"-prefork", strconv.Itoa(b.st.Prefork), "-maxfork", strconv.Itoa(b.st.Maxfork), "-echo",
			"-proxy-protocol", "-proxy-from", "127.0.0.0/8"}}
	}
	b.logf("about %s of load: %d rounds x %d modes x %d concurrencies x (%s + %s warm-up)",
		b.st.estimate().Round(time.Second), b.st.Rounds, len(b.st.Modes), len(b.st.Concs), b.st.Duration, b.st.Warmup)

	if slices.Contains(b.st.Modes, "prefork") {
		if err := b.startups(ctx); err != nil {
			return err
		}
	}
	for r := 1; r <= b.st.Rounds; r++ {
		for _, m := range b.st.Modes {
			var err error
			if g, ok := b.groupOf(m); !ok {
				err = b.measure(ctx, m, r)
			} else if g[0] == m {
				err = b.measureGroup(ctx, g, r)
			} // else measured with g[0], in the same slices of time
			if err != nil {
				return err
			}
		}
	}
	b.report(b.out)
	return nil
}

// loadOnly runs the load generator alone against -load's address.
func (b *bench) loadOnly(ctx context.Context) error {
	b.began = time.Now()
	b.loadStart = loadAvg()
	ap, err := netip.ParseAddrPort(b.st.Load)
	if err != nil {
		return fmt.Errorf("-load: %w", err)
	}
	b.st.Modes = []string{"load"}
	b.st.Verbose = true
	for r := 1; r <= b.st.Rounds; r++ {
		for _, c := range b.st.Concs {
			res, err := runLoad(ctx, loadOptions{Addr: ap, Conc: c, Duration: b.st.Duration, Timeout: b.st.Timeout, Engine: b.st.Engine, Proxy: b.st.LoadProxy})
			if err != nil {
				return err
			}
			b.record("load", r, res)
		}
	}
	b.report(b.out)
	return nil
}

// startups times the prefork pool's start and measures its idle memory.
// Each time it starts the pool twice: once left alone, for fork to READY=1
// and the idle process tree's memory; once with a client connecting in a
// loop from the fork on, for fork to the first served client. (A client
// served while the pool starts makes it grow, and the loop takes CPU from
// the start: neither belongs in the first two figures.)
func (b *bench) startups(ctx context.Context) error {
	spec := b.specs["prefork"]
	for i := 0; i < b.st.Startups; i++ {
		s, err := startServer(ctx, spec, b.dir, false)
		if err != nil {
			return err
		}
		su := startup{ready: s.ready.Sub(s.started)}
		// Let the workers settle into their wait, as a pool does between
		// clients.
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
		}
		su.mem, err = treeMemory(s.cmd.Process.Pid)
		if serr := s.stop(); err == nil {
			err = serr
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		s, err = startServer(ctx, spec, b.dir, true)
		if err != nil {
			return err
		}
		su.first = s.first.Sub(s.started)
		if err := s.stop(); err != nil {
			return err
		}
		b.starts = append(b.starts, su)
		b.logf("prefork %d start %d: READY=1 after %s, first client after %s; idle: %d processes, RSS %s, PSS %s",
			b.st.Prefork, i+1, fmtDur(su.ready), fmtDur(su.first), su.mem.Procs, fmtMiB(su.mem.RSS), fmtMiB(su.mem.PSS))
	}
	return nil
}

// measure runs one round of one mode at every concurrency.
func (b *bench) measure(ctx context.Context, mode string, round int) error {
	if mode == "spawn" {
		for _, c := range b.st.Concs {
			r, err := spawnRate(ctx, b.waiterd, c, b.st.Duration, false)
			if err != nil {
				return fmt.Errorf("spawn rate: %w", err)
			}
			b.record(mode, round, r)
		}
		return nil
	}
	s, err := startServer(ctx, b.specs[mode], b.dir, false)
	if err != nil {
		return err
	}
	defer s.stop()
	var w *watcher
	if s.spec.Watch {
		// Alone (without plain prefork to pair it with), watched for the
		// server's whole life.
		if w, err = watchServer(s); err != nil {
			return err
		}
		w.run(ctx)
		// On an error, stopped before the server (defers run last first).
		defer w.stop()
	}
	for _, c := range b.st.Concs {
		o := loadOptions{Addr: s.addr, Conc: c, Duration: b.st.Warmup, Timeout: b.st.Timeout, Engine: b.st.Engine, Proxy: s.spec.Proxy, Echo: s.spec.Echo}
		if b.st.Warmup > 0 {
			if _, err := runLoad(ctx, o); err != nil {
				return err
			}
		}
		o.Duration = b.st.Duration
		r, err := b.loadOn(ctx, s, nil, o)
		if err != nil {
			return err
		}
		b.record(mode, round, r)
	}
	if mode == "spares" && b.st.Pace > 0 {
		// Closed-loop clients reconnect at once, so in forking mode they
		// wait for process starts whatever the spares. Paced below the
		// spawn rate, each finds a spare ready: this shows the hand-off.
		o := loadOptions{Addr: s.addr, Conc: 1, Duration: b.st.Duration, Timeout: b.st.Timeout, Engine: b.st.Engine, Pause: b.st.Pace}
		r, err := runLoad(ctx, o)
		if err != nil {
			return err
		}
		b.record("spares-paced", round, r)
	}
	if w != nil {
		if err := b.recordWatch(mode, round, w.stop()); err != nil {
			return err
		}
	}
	select {
	case <-s.exited:
		return fmt.Errorf("%s exited during the load (%s):\n%s", mode, s.cmd.ProcessState, s.stderrTail())
	default:
	}
	return s.stop()
}

// loadOn runs the load generator against s, with w's watchers on meanwhile
// (when w is not nil), and reads what the server's processes spent.
func (b *bench) loadOn(ctx context.Context, s *server, w *watcher, o loadOptions) (loadResult, error) {
	pid := s.cmd.Process.Pid
	cpu0, master0, cerr := treeCPU(pid)
	if w != nil {
		w.run(ctx)
	}
	r, err := runLoad(ctx, o)
	if w != nil {
		w.halt()
	}
	if err != nil {
		return r, err
	}
	// What the server spent per client is steadier than its rate when
	// other programs take the CPUs: the ops figures give both.
	if cpu1, master1, err := treeCPU(pid); err == nil && cerr == nil {
		r.CPU, r.MasterCPU = cpu1-cpu0, master1-master0
	}
	// The pool's size decides much of its rate on a small machine: read
	// how big it had grown, for -v and the ops figures.
	r.Procs = len(groupMembers(pid))
	return r, nil
}

func (b *bench) record(mode string, round int, r loadResult) {
	k := rowKey{mode, r.Conc}
	b.res[k] = append(b.res[k], r)
	if !b.st.Verbose {
		return
	}
	procs := ""
	if r.Procs > 0 {
		procs = fmt.Sprintf(" procs %d", r.Procs)
	}
	if c := r.cpuPerConn(); c > 0 {
		procs += fmt.Sprintf(" server CPU %.1fµs/conn", float64(c)/1e3)
	}
	b.logf("round %d %-14s c=%-3d %8.0f/s p50 %s p99 %s max %s errors %s%s",
		round, mode, r.Conc, r.PerSec, fmtDur(r.Lat.P50), fmtDur(r.Lat.P99), fmtDur(r.Lat.Max), fmtErrs(r.Errs), procs)
	for k, s := range r.Samples {
		if s != "" {
			b.logf("    first %s error: %s", errKind(k), s)
		}
	}
}

// recordWatch adds one server's watch to the mode's. A server that was not
// watched at all (every request failed) makes the mode's figure a lie:
// that is an error.
func (b *bench) recordWatch(mode string, round int, w watchStats) error {
	if b.watched[mode] == nil {
		b.watched[mode] = &watchStats{}
	}
	b.watched[mode].add(w)
	if b.st.Verbose {
		b.logf("round %d %-14s watched: %d scrapes (p50 %s), %d status (p50 %s), %d errors",
			round, mode, w.Scrapes, fmtDur(summarize(w.ScrapeLat).P50), w.Status, fmtDur(summarize(w.StatusLat).P50),
			w.ScrapeErrs+w.StatusErrs)
		if w.FirstErr != "" {
			b.logf("    first watch error: %s", w.FirstErr)
		}
	}
	if w.Scrapes == 0 || w.Status == 0 {
		return fmt.Errorf("%s: round %d was not watched: %d scrapes, %d status requests answered (%s)", mode, round, w.Scrapes, w.Status, w.FirstErr)
	}
	return nil
}

// loadAvg is the machine's 1-minute load average: another program's load
// moves every figure, and this says whether there was some.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// machine describes where the run happened, for the table's header.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	var u syscall.Utsname
	kernel := "?"
	if syscall.Uname(&u) == nil {
		var sb strings.Builder
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			sb.WriteByte(byte(c))
		}
		kernel = sb.String()
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 2 && f[0] == "MemTotal:" {
			if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
			}
		}
	}
	return fmt.Sprintf("%d CPUs (%s)%s, Linux %s, %s", runtime.NumCPU(), cpu, mem, kernel, runtime.Version())
}
