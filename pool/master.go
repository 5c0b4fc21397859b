package pool

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/config"
)

// The master of a pool (prefork or forking mode). One goroutine, the
// supervisor loop in run, owns every field; signals, child exits, worker
// events, accepted clients and spawn results reach it over channels.

type kidKind int

const (
	kindWorker  kidKind = iota // prefork: accepts by itself
	kindSpare                  // forking: waits to be handed a client
	kindOneshot                // forking: started with its client
)

func (k kidKind) String() string {
	return [...]string{"worker", "spare", "oneshot"}[k]
}

type kid struct {
	slot    int
	pid     int // 0 until the spawn is done
	gen     int
	kind    kidKind
	handoff int // spare: the master's end of the handoff socket, -1 when none
	ready   bool
	client  bool      // forking: it has (or had) a client
	started time.Time // when the spawn was asked for
	termAt  time.Time // when it was asked to finish and exit
	quitAt  time.Time // when request_timeout sent SIGQUIT
}

type exitEv struct {
	slot, pid int
	ws        syscall.WaitStatus
}

type acceptEv struct {
	fd      int
	err     error
	timeout bool
}

// tickEvery paces the loop's housekeeping. It bounds how late a pool grows
// without a worker's request, a stuck worker is found, or STATUS is updated.
const tickEvery = 100 * time.Millisecond

type master struct {
	s      *Server
	log    *logrus.Entry
	o      config.Options
	sb     *Scoreboard
	sp     *spawner
	kids   map[int]*kid // by slot
	free   []int
	gen    int
	target int

	baseEnv  []string
	optsJSON string
	carry    string
	names    string
	lifeR    int
	lifeW    int
	evR, evW int

	spawned chan spawnRes
	exits   chan exitEv
	events  chan uint32
	accepts chan acceptEv
	sigs    chan os.Signal

	acc        *acceptor
	acceptStop atomic.Bool
	acceptDone chan struct{}

	stopping   bool
	deadline   time.Time
	readySent  bool
	reloadGen  int // the generation whose readiness ends a reload; 0: none
	spares     []*kid
	oneshots   int // forking: workers with a client
	pending    int // spawns asked for, not done
	failStreak int
	nextSpawn  time.Time
	served     uint64 // by workers already reaped
	failed     uint64
	growC      <-chan time.Time // armed while a growth waits for growAfter
	lastStatus string
	statusAt   time.Time
	watchdog   time.Duration // ping interval; 0: off
	pingAt     time.Time
	lastTick   time.Time
	extendAt   time.Time
}

func (s *Server) runMaster() int {
	m := &master{
		s: s, log: s.log, o: s.Options,
		kids:    map[int]*kid{},
		spawned: make(chan spawnRes, 64),
		exits:   make(chan exitEv, 64),
		events:  make(chan uint32, 256),
		accepts: make(chan acceptEv, 16),
		sigs:    make(chan os.Signal, 16),
	}
	if err := m.setup(); err != nil {
		s.log.Errorf("waiter: %v", err)
		return ExitConfig
	}
	defer m.teardown()
	return m.run()
}

func (m *master) setup() error {
	slots := 2*m.o.Maxfork + m.o.Spares + 2 // room for two generations during a reload
	sb, err := NewScoreboard(slots)
	if err != nil {
		return err
	}
	m.sb = sb
	m.s.sb = sb
	for i := slots - 1; i >= 0; i-- {
		m.free = append(m.free, i)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("pool: lifeline pipe: %w", err)
	}
	m.lifeR, m.lifeW = p[0], p[1]
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("pool: event pipe: %w", err)
	}
	m.evR, m.evW = p[0], p[1]
	// The master's environment, filtered once: every spawn only appends.
	m.baseEnv = workerEnv(os.Environ(), nil)
	if _, ok := os.LookupEnv("GOTRACEBACK"); !ok {
		m.baseEnv = append(m.baseEnv, "GOTRACEBACK=all") // request_timeout's SIGQUIT dumps every goroutine
	}
	names := make([]string, len(m.s.sockets))
	for i, sk := range m.s.sockets {
		names[i] = strings.ReplaceAll(sk.Name, ":", "_")
	}
	m.names = strings.Join(names, ":")
	if err := m.setOptions(m.o); err != nil {
		return err
	}
	m.sp = newSpawner(m.spawned)
	go m.readEvents()
	return nil
}

func (m *master) setOptions(o config.Options) error {
	b, err := json.Marshal(o)
	if err != nil {
		return fmt.Errorf("pool: options: %w", err)
	}
	m.o = o
	m.s.Options = o
	m.optsJSON = string(b)
	if m.s.Carry != nil {
		c, err := json.Marshal(m.s.Carry)
		if err != nil {
			return fmt.Errorf("pool: Carry: %w", err)
		}
		m.carry = string(c)
	}
	m.target = o.Prefork
	m.sb.setTarget(m.target)
	return nil
}

// teardown runs once every worker is reaped: only then is shared state
// removed (Net::Waiter removed it while workers still ran).
func (m *master) teardown() {
	close(m.sp.reqs)
	unix.Close(m.lifeW)
	unix.Close(m.lifeR)
	unix.Close(m.evW) // ends readEvents
	m.s.sb = nil
	m.sb.Close()
}

func (m *master) readEvents() {
	unix.SetNonblock(m.evR, true)
	f := os.NewFile(uintptr(m.evR), "waiter-events")
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		n, err := f.Read(buf)
		for i := 0; i+4 <= n; i += 4 {
			m.events <- uint32(buf[i]) | uint32(buf[i+1])<<8 | uint32(buf[i+2])<<16 | uint32(buf[i+3])<<24
		}
		if err != nil {
			return
		}
	}
}

func (m *master) run() int {
	signal.Notify(m.sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTTIN, syscall.SIGTTOU)
	defer signal.Stop(m.sigs)
	signal.Ignore(syscall.SIGPIPE)
	m.s.onBreak(func() { m.sigs <- syscall.SIGTERM })

	if m.o.Prefork > 0 {
		m.log.Infof("waiter: prefork: starting %d workers (up to %d)", m.target, m.o.Maxfork)
	} else {
		m.log.Infof("waiter: forking: one process per client, up to %d, %d spares", m.o.Maxfork, m.o.Spares)
		if err := m.startAcceptor(); err != nil {
			m.log.Errorf("waiter: %v", err)
			return ExitListen
		}
	}
	m.maintain()
	m.checkReady()
	every := tickEvery
	if m.watchdog = watchdogInterval(); m.watchdog > 0 {
		every = min(every, m.watchdog/2)
		m.log.Debugf("waiter: watchdog: pinging every %s", m.watchdog)
	}
	m.lastTick = time.Now()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for !(m.stopping && len(m.kids) == 0 && m.acceptDone == nil) {
		select {
		case sig := <-m.sigs:
			m.signal(sig.(syscall.Signal))
		case r := <-m.spawned:
			m.spawnDone(r)
		case e := <-m.exits:
			m.reaped(e)
		case ev := <-m.events:
			m.event(ev)
		case a, ok := <-m.accepts:
			if !ok {
				m.acceptDone = nil
				m.accepts = nil
				continue
			}
			m.accepted(a)
		case <-m.growC:
			m.growC = nil
			m.grow()
		case <-tick.C:
			m.tick()
		}
	}
	m.log.Infof("waiter: stopped: %d clients served, %d failed", m.served, m.failed)
	return ExitOK
}

// allocSlot returns a free scoreboard slot, or -1.
func (m *master) allocSlot() int {
	if len(m.free) == 0 {
		return -1
	}
	i := m.free[len(m.free)-1]
	m.free = m.free[:len(m.free)-1]
	return i
}

// spawn asks the spawner for one worker. clientFd (oneshot) is closed in
// the master once the child has it.
func (m *master) spawn(kind kidKind, clientFd int) *kid {
	tlsFd := -1
	if m.o.SSL {
		// The files as the master last loaded them, not as they are now: a
		// rotation is the master's to check, on HUP.
		fd, err := tlsMemfd(m.s.tlsPEM)
		if err != nil {
			m.log.Errorf("waiter: %v", err)
			if clientFd >= 0 {
				unix.Close(clientFd)
			}
			return nil
		}
		tlsFd = fd
	}
	slot := m.allocSlot()
	if slot < 0 {
		m.log.Errorf("waiter: no free scoreboard slot for a %s", kind)
		if clientFd >= 0 {
			unix.Close(clientFd)
		}
		if tlsFd >= 0 {
			unix.Close(tlsFd)
		}
		return nil
	}
	m.sb.Slot(slot).claim(m.gen)
	k := &kid{slot: slot, gen: m.gen, kind: kind, handoff: -1, started: time.Now()}
	vars := map[string]string{
		envRole:    roleWorker,
		envSlot:    strconv.Itoa(slot),
		envGen:     strconv.Itoa(m.gen),
		envMaster:  strconv.Itoa(os.Getpid()),
		envOptions: m.optsJSON,
	}
	if m.carry != "" {
		vars[envCarry] = m.carry
	}
	files := []int{m.sb.Fd(), m.lifeR, m.evW}
	var closeAfter []int
	switch kind {
	case kindWorker:
		vars[envNames] = m.names
		files = append(files, m.s.listenFds()...)
	case kindSpare:
		vars[envRole] = roleOneshot
		vars[envHandoff] = "spare"
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			m.log.Errorf("waiter: handoff socket: %v", err)
			if tlsFd >= 0 {
				unix.Close(tlsFd)
			}
			m.sb.Slot(slot).release()
			m.free = append(m.free, slot)
			return nil
		}
		k.handoff = sp[0]
		files = append(files, sp[1])
		closeAfter = append(closeAfter, sp[1])
		m.spares = append(m.spares, k)
	case kindOneshot:
		vars[envRole] = roleOneshot
		files = append(files, clientFd)
		closeAfter = append(closeAfter, clientFd)
		k.client = true
		m.oneshots++
	}
	if tlsFd >= 0 {
		files = append(files, tlsFd) // after the listeners, the client or the handoff at fdFirst
		closeAfter = append(closeAfter, tlsFd)
		vars[envTLS] = strconv.Itoa(3 + len(files) - 1)
	}
	m.kids[slot] = k
	m.pending++
	m.sp.reqs <- spawnReq{slot: slot, env: withVars(m.baseEnv, vars), files: files, closeAfter: closeAfter}
	return k
}

func (m *master) spawnDone(r spawnRes) {
	m.pending--
	k := m.kids[r.slot]
	if r.err != nil {
		m.log.Errorf("waiter: %v", r.err)
		m.forget(k)
		m.failStreak++
		m.nextSpawn = time.Now().Add(m.backoff())
		return
	}
	k.pid = r.pid
	m.sb.Slot(r.slot).SetPID(r.pid)
	go func(slot, pid, pidfd int) {
		m.exits <- exitEv{slot: slot, pid: pid, ws: waitChild(pid, pidfd)}
	}(r.slot, r.pid, r.pidfd)
	m.s.hk.ForkOK(r.pid)
	m.log.Debugf("waiter: started %s pid %d (slot %d, generation %d)", k.kind, k.pid, k.slot, k.gen)
	if !k.termAt.IsZero() && k.ready {
		syscall.Kill(k.pid, syscall.SIGTERM) // asked to stop before its pid was known
	}
}

// forget drops a kid from the table and frees its slot.
func (m *master) forget(k *kid) {
	if k.handoff >= 0 {
		unix.Close(k.handoff)
		k.handoff = -1
	}
	for i, sp := range m.spares {
		if sp == k {
			m.spares = append(m.spares[:i], m.spares[i+1:]...)
			break
		}
	}
	if k.client {
		m.oneshots--
	}
	m.sb.Slot(k.slot).release()
	m.free = append(m.free, k.slot)
	delete(m.kids, k.slot)
}

func (m *master) reaped(e exitEv) {
	k := m.kids[e.slot]
	if k == nil || k.pid != e.pid {
		return
	}
	sl := m.sb.Slot(e.slot)
	m.served += sl.Served()
	m.failed += sl.Failed()
	clean := e.ws.Exited() && e.ws.ExitStatus() == 0
	fields := logrus.Fields{"WORKER_PID": e.pid}
	switch {
	case clean:
		m.log.WithFields(fields).Debugf("waiter: %s pid %d exited", k.kind, e.pid)
	case !k.quitAt.IsZero():
		m.log.WithFields(fields).Warnf("waiter: %s pid %d stopped after request_timeout: %s", k.kind, e.pid, describeStatus(e.ws))
	default:
		m.log.WithFields(fields).Warnf("waiter: %s pid %d exited abnormally: %s", k.kind, e.pid, describeStatus(e.ws))
	}
	if !clean && k.termAt.IsZero() && time.Since(k.started) < time.Second {
		m.failStreak++ // died young: perhaps a crash loop, back off
		m.nextSpawn = time.Now().Add(m.backoff())
	} else if clean {
		m.failStreak = 0
	}
	m.forget(k)
	m.s.hk.SigChild(e.pid, e.ws)
	m.maintain()
}

// backoff paces respawns after failures: 0, 100ms, 200ms, ... up to 5s.
func (m *master) backoff() time.Duration {
	if m.failStreak <= 1 {
		return 0
	}
	d := time.Duration(100<<min(m.failStreak-2, 6)) * time.Millisecond
	return min(d, 5*time.Second)
}

// live counts the kids of the current generation that are not retiring.
func (m *master) live(kind kidKind) int {
	n := 0
	for _, k := range m.kids {
		if k.kind == kind && k.gen == m.gen && k.termAt.IsZero() && !(kind == kindSpare && k.client) {
			n++
		}
	}
	return n
}

// maintain starts what the pool lacks: prefork workers up to the target,
// forking spares up to their number.
func (m *master) maintain() {
	if m.stopping || time.Now().Before(m.nextSpawn) {
		return
	}
	want, kind := m.target, kindWorker
	if m.o.Prefork == 0 {
		want, kind = m.o.Spares, kindSpare
		if m.oneshots >= m.o.Maxfork {
			want = 0 // at maxfork a spare would wait for nothing
		}
	}
	n := want - m.live(kind)
	if m.failStreak > 1 {
		n = min(n, 1) // after failures, one at a time
	}
	for ; n > 0; n-- {
		if m.spawn(kind, -1) == nil {
			return
		}
	}
}

// grow adds prefork workers when the last idle one took a client, up to
// maxfork: half again as many as there are, at least one.
func (m *master) grow() {
	if m.stopping || m.o.Prefork == 0 || time.Now().Before(m.nextSpawn) {
		return
	}
	have := 0
	for _, k := range m.kids {
		if k.kind == kindWorker && k.termAt.IsZero() {
			have++
		}
	}
	if have >= m.o.Maxfork {
		return
	}
	// Grow only when every worker has been with its client for growAfter:
	// then clients are slow (waiting on I/O) and more processes serve more
	// of them. Workers that are all busy only for an instant are CPU-bound,
	// and more processes would only share the same CPUs at the cost of
	// context switches (measured on 2 cores at c=64: 2 workers 10,576
	// conn/s, 8 workers 8,506, 32 workers 7,162).
	if age := m.busyAge(); age < growAfter {
		if age >= 0 && m.growC == nil {
			m.growC = time.After(growAfter - age)
		}
		return
	}
	n := min(max(1, have/2), m.o.Maxfork-have)
	if n > 0 {
		m.log.Debugf("waiter: all %d workers busy: starting %d more", have, n)
	}
	for ; n > 0; n-- {
		if m.spawn(kindWorker, -1) == nil {
			return
		}
	}
}

// growAfter is how long every prefork worker must have been busy with its
// current client before the pool grows.
const growAfter = 20 * time.Millisecond

// busyAge returns how long the most recently busy worker of the pool has
// been with its client, or -1 when a worker is idle or still starting (it
// will take a client soon: no need for more yet).
func (m *master) busyAge() time.Duration {
	age := time.Duration(-1)
	for _, k := range m.kids {
		if k.kind != kindWorker || !k.termAt.IsZero() {
			continue
		}
		sl := m.sb.Slot(k.slot)
		b := sl.BusySince()
		if sl.State() != stateBusy || b == 0 {
			return -1
		}
		if a := sinceMono(b); age < 0 || a < age {
			age = a
		}
	}
	return age
}

func (m *master) event(ev uint32) {
	kind, slot := byte(ev>>24), int(ev&0xffffff)
	switch kind {
	case evReady:
		if k := m.kids[slot]; k != nil {
			k.ready = true
			if !k.termAt.IsZero() && k.pid > 0 {
				syscall.Kill(k.pid, syscall.SIGTERM) // retired while starting
			}
		}
		m.checkReady()
	case evGrow:
		m.sb.takeWant()
		m.grow()
	}
}

// checkReady sends READY=1 once the current generation can serve: its
// prefork workers (the initial number) or its spares have reported ready.
// During a reload this is also when the old generation is retired.
func (m *master) checkReady() {
	if m.readySent && m.reloadGen == 0 {
		return
	}
	kind, want := kindWorker, m.target
	if m.o.Prefork == 0 {
		kind, want = kindSpare, m.o.Spares
	}
	n := 0
	for _, k := range m.kids {
		if k.kind == kind && k.gen == m.gen && k.ready {
			n++
		}
	}
	if n < want {
		return
	}
	if m.reloadGen != 0 {
		for _, k := range m.kids {
			if k.gen < m.reloadGen {
				m.retire(k)
			}
		}
		m.log.Infof("waiter: reloaded: generation %d serving", m.gen)
		m.reloadGen = 0
	}
	m.readySent = true
	notifyReady(m.log)
}

// retire asks a kid to finish its client and exit: a spare by closing its
// handoff socket, anyone else by SIGTERM.
func (m *master) retire(k *kid) {
	if !k.termAt.IsZero() {
		return
	}
	k.termAt = time.Now()
	if k.kind == kindSpare && !k.client {
		for i, sp := range m.spares {
			if sp == k {
				m.spares = append(m.spares[:i], m.spares[i+1:]...)
				break
			}
		}
		if k.handoff >= 0 {
			unix.Close(k.handoff)
			k.handoff = -1
		}
		return
	}
	// A worker that has not reported ready may not have its SIGTERM handler
	// yet, and would die of the signal: it is told when it reports ready.
	if k.pid > 0 && k.ready {
		syscall.Kill(k.pid, syscall.SIGTERM)
	}
}

func (m *master) signal(sig syscall.Signal) {
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT:
		m.stop(sig)
	case syscall.SIGHUP:
		m.s.signalHook(sig)
		m.reload()
	case syscall.SIGUSR1, syscall.SIGUSR2:
		m.s.signalHook(sig)
		if m.o.PropSigusr {
			m.s.PropagateSignal(sig)
		}
	case syscall.SIGTTIN, syscall.SIGTTOU:
		m.resize(sig)
	}
}

// stop begins a graceful stop: no more accepting, every worker finishes its
// client and exits; after graceful_timeout the rest are killed.
func (m *master) stop(sig syscall.Signal) {
	if m.stopping {
		return
	}
	m.stopping = true
	m.deadline = time.Now().Add(m.o.GracefulTimeout.D())
	notifyStopping(m.log)
	busy, all := m.sb.Counts()
	m.log.Infof("waiter: %s: stopping; %d of %d workers busy, waiting up to %s", unix.SignalName(sig), busy, all, m.o.GracefulTimeout)
	if m.acc != nil {
		m.acceptStop.Store(true)
		m.acc.wake()
	}
	for _, k := range m.kids {
		m.retire(k)
	}
}

func (m *master) reload() {
	if m.stopping {
		return
	}
	notify(m.log, fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonic()/1000))
	o := m.o
	if m.s.Reload != nil {
		n, err := m.s.Reload()
		if err == nil {
			for _, note := range n.Normalize() {
				m.log.Warn(note)
			}
			err = n.Validate()
		}
		if err == nil && n.Maxfork*2+n.Spares+2 > m.sb.Slots() {
			err = fmt.Errorf("maxfork %d needs a restart to grow beyond %d", n.Maxfork, m.o.Maxfork)
		}
		if err == nil && (n.Nofork != o.Nofork || (n.Prefork == 0) != (o.Prefork == 0)) {
			err = fmt.Errorf("changing the mode (%s to %s) needs a restart", o.Mode(), n.Mode())
		}
		if err != nil {
			m.log.Errorf("waiter: reload refused, keeping the running options: %v", err)
			notifyReady(m.log)
			return
		}
		if n.Listen != o.Listen || n.Port != o.Port {
			m.log.Warn("waiter: reload: a new listen address or port takes a restart; still serving the old one")
		}
		o = n
	}
	old := m.s.Options
	m.s.Options = o
	if err := m.s.loadTLS(); err != nil {
		m.s.Options = old
		m.log.Errorf("waiter: reload refused, keeping the running options: %v", err)
		notifyReady(m.log)
		return
	}
	if err := m.setOptions(o); err != nil {
		m.log.Errorf("waiter: reload: %v", err)
		return
	}
	m.gen++
	m.reloadGen = m.gen
	m.failStreak = 0
	m.nextSpawn = time.Time{}
	m.log.Infof("waiter: SIGHUP: reloading: starting generation %d", m.gen)
	m.maintain()
	m.checkReady()
}

// resize is gunicorn's TTIN/TTOU: one worker more or fewer (prefork), one
// spare more or fewer (forking).
func (m *master) resize(sig syscall.Signal) {
	if m.stopping {
		return
	}
	if m.o.Prefork == 0 {
		if sig == syscall.SIGTTIN && m.o.Spares < 256 {
			m.o.Spares++
		} else if sig == syscall.SIGTTOU && m.o.Spares > 0 {
			m.o.Spares--
			if len(m.spares) > 0 {
				m.retire(m.spares[len(m.spares)-1])
			}
		}
		m.log.Infof("waiter: %s: %d spares", unix.SignalName(sig), m.o.Spares)
		m.maintain()
		return
	}
	if sig == syscall.SIGTTIN && m.target < m.o.Maxfork {
		m.target++
	} else if sig == syscall.SIGTTOU && m.target > 1 {
		m.target--
		if m.live(kindWorker) > m.target {
			m.retireOne()
		}
	}
	m.sb.setTarget(m.target)
	m.log.Infof("waiter: %s: pool of %d workers", unix.SignalName(sig), m.target)
	m.maintain()
}

// retireOne retires an idle worker of the current generation, or any.
func (m *master) retireOne() {
	var pick *kid
	for _, k := range m.kids {
		if k.kind != kindWorker || k.gen != m.gen || !k.termAt.IsZero() {
			continue
		}
		if pick == nil || m.sb.Slot(k.slot).State() == stateIdle {
			pick = k
		}
	}
	if pick != nil {
		m.retire(pick)
	}
}

func (m *master) tick() {
	now := time.Now()
	have := 0
	for _, k := range m.kids {
		if k.kind == kindWorker && k.termAt.IsZero() {
			have++
		}
	}
	m.sb.setFull(have >= m.o.Maxfork)
	// A worker's request to grow can be lost only if the pipe was full;
	// the flag stays set and is seen here.
	if m.sb.takeWant() || (m.o.Prefork > 0 && m.sb.idleCount() <= 0 && m.pending == 0 && have < m.o.Maxfork && !m.stopping) {
		m.grow()
	}
	m.maintain()
	if rt := m.o.RequestTimeout.D(); rt > 0 {
		m.checkStuck(rt, now)
	}
	if m.stopping && now.After(m.deadline) {
		for _, k := range m.kids {
			if k.pid > 0 {
				m.log.Warnf("waiter: graceful_timeout (%s) passed: killing %s pid %d", m.o.GracefulTimeout, k.kind, k.pid)
				syscall.Kill(k.pid, syscall.SIGKILL)
			}
		}
		m.deadline = now.Add(time.Hour) // once
	}
	m.status(now)
	m.ping(now)
	if m.stopping && now.Sub(m.extendAt) >= time.Second {
		// Draining may outlast TimeoutStopSec: ask for the time it needs.
		left := time.Until(m.deadline) + 5*time.Second
		if left > 0 && left < time.Hour {
			notify(m.log, fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", left.Microseconds()))
		}
		m.extendAt = now
	}
	m.lastTick = now
}

// ping sends WATCHDOG=1 from the supervisor loop itself, and only when the
// loop is healthy: this tick came on time (the loop is not wedged: a wedged
// loop sends nothing at all) and the pool can be kept alive (workers or
// spares start). When spawns keep failing the pings stop and systemd
// restarts the service.
func (m *master) ping(now time.Time) {
	if m.watchdog <= 0 || now.Sub(m.pingAt) < m.watchdog {
		return
	}
	if late := now.Sub(m.lastTick); late > 2*m.watchdog {
		m.log.Warnf("waiter: the supervisor loop was stalled for %s", late)
	}
	if !m.healthy() {
		if m.pingAt.IsZero() || now.Sub(m.pingAt) < 2*m.watchdog {
			m.log.Errorf("waiter: workers keep failing to start: not pinging the watchdog")
		}
		return
	}
	notify(m.log, "WATCHDOG=1")
	m.pingAt = now
}

// healthy is false when workers cannot be started: several spawns in a row
// failed or died young, and no worker of the current generation is ready.
func (m *master) healthy() bool {
	if m.failStreak < 5 {
		return true
	}
	if m.o.Prefork == 0 && m.o.Spares == 0 {
		return false // nothing is ready by design; the failures speak
	}
	for _, k := range m.kids {
		if k.ready && k.gen == m.gen {
			return true
		}
	}
	return false
}

// checkStuck finds workers busy with one client for longer than
// request_timeout: SIGQUIT makes the Go runtime write every goroutine's stack
// to stderr (the journal) and exit; SIGKILL follows if it did not.
func (m *master) checkStuck(rt time.Duration, now time.Time) {
	for _, k := range m.kids {
		if k.pid <= 0 {
			continue
		}
		if !k.quitAt.IsZero() {
			if now.Sub(k.quitAt) > 2*time.Second {
				syscall.Kill(k.pid, syscall.SIGKILL)
			}
			continue
		}
		sl := m.sb.Slot(k.slot)
		if b := sl.BusySince(); sl.State() == stateBusy && b > 0 && sinceMono(b) > rt {
			m.log.WithField("WORKER_PID", k.pid).Errorf("waiter: %s pid %d busy with one client for over %s (request_timeout): writing its stacks and killing it", k.kind, k.pid, rt)
			k.quitAt = now
			syscall.Kill(k.pid, syscall.SIGQUIT)
		}
	}
}

// status keeps systemd's STATUS= current, at most once a second.
func (m *master) status(now time.Time) {
	if now.Sub(m.statusAt) < time.Second {
		return
	}
	busy, all := m.sb.Counts()
	served, failed := m.served, m.failed
	for _, k := range m.kids {
		sl := m.sb.Slot(k.slot)
		served += sl.Served()
		failed += sl.Failed()
	}
	st := fmt.Sprintf("%s: %d workers, %d busy, %d served, %d failed", m.o.Mode(), all, busy, served, failed)
	if m.stopping {
		st = "stopping: " + st
	}
	if st != m.lastStatus {
		notify(m.log, "STATUS="+st)
		m.lastStatus = st
	}
	m.statusAt = now
}

// startAcceptor runs forking mode's accept loop on its own locked thread;
// every client and every timeout goes to the supervisor loop, which alone
// runs hooks.
func (m *master) startAcceptor() error {
	acc, err := newAcceptor(m.s.listenFds())
	if err != nil {
		return err
	}
	m.acc = acc
	m.acceptDone = make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(m.accepts)
		defer close(m.acceptDone)
		for !m.acceptStop.Load() {
			fd, _, err := acc.accept(m.o.Timeout.D())
			switch {
			case err == nil:
				m.accepts <- acceptEv{fd: fd}
			case err == errTimeout:
				m.accepts <- acceptEv{fd: -1, timeout: true}
			case err == errWoken:
			default:
				m.accepts <- acceptEv{fd: -1, err: err}
			}
		}
		acc.close()
	}()
	return nil
}

// accepted hands a forking-mode client to a spare, or to a new worker, or
// refuses it at maxfork (on_maxforked, on_close).
func (m *master) accepted(a acceptEv) {
	switch {
	case a.timeout:
		m.s.hk.ForkingIdle()
		return
	case a.err != nil:
		m.s.acceptFailed(a.err)
		return
	}
	fd := a.fd
	var c net.Conn
	if m.s.hk.HasAcceptOK() {
		c = m.viewConn(fd)
		if c != nil {
			m.s.accepted(c)
		}
	}
	if m.oneshots >= m.o.Maxfork && m.busyOneshots() >= m.o.Maxfork {
		m.log.Warnf("waiter: maxfork (%d) workers busy: refusing a client", m.o.Maxfork)
		if c == nil && m.s.hk.HasMaxforked() {
			c = m.viewConn(fd)
		}
		if c != nil {
			m.s.hk.Maxforked(c)
			m.s.closeClient(c)
		}
		unix.Close(fd)
		return
	}
	if c != nil {
		c.Close() // the master's view only; the worker has its own fd
	}
	for len(m.spares) > 0 {
		k := m.spares[0]
		m.spares = m.spares[1:]
		err := sendFD(k.handoff, fd)
		unix.Close(k.handoff)
		k.handoff = -1
		if err != nil {
			m.log.Warnf("waiter: handing a client to spare pid %d: %v", k.pid, err)
			continue
		}
		k.client = true
		m.oneshots++
		unix.Close(fd)
		// The replacement starts when this one is reaped (reaped calls
		// maintain), not now: a process's start takes both CPUs of a small
		// machine for a few ms, and now is when this client is being
		// served. Only when no spare is left does one start at once.
		if len(m.spares) == 0 {
			m.maintain()
		}
		return
	}
	m.spawn(kindOneshot, fd)
	m.maintain()
}

// busyOneshots counts the forking workers with a client that have not yet
// finished it: one that has (its slot says exiting) serves no one while it
// exits, and must not make the master refuse a client.
func (m *master) busyOneshots() int {
	n := 0
	for _, k := range m.kids {
		if k.client && m.sb.Slot(k.slot).State() != stateExiting {
			n++
		}
	}
	return n
}

// viewConn is a net.Conn on a duplicate of fd, for hooks that run in the
// master; fd itself stays the worker's.
func (m *master) viewConn(fd int) net.Conn {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	c, err := fdConn(d)
	if err != nil {
		return nil
	}
	return c
}
