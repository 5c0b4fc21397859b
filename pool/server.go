package pool

import (
	"crypto/tls"
	"errors"
	"time"

	"fmt"
	"golang.org/x/sys/unix"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/waiter-go/waiter/activation"
	"github.com/waiter-go/waiter/config"
	"github.com/waiter-go/waiter/hooks"
	"github.com/waiter-go/waiter/internal/hookrun"
)

// Exit codes, as in Net::Waiter (0 and 100) plus one for bad options: what
// ExitCode makes of Run's error.
const (
	ExitOK     = 0
	ExitConfig = 1   // invalid options, no on_process, a bad environment
	ExitListen = 100 // the listen socket cannot be created
)

// Run's errors wrap one of these (errors.Is), and the cause (errors.As
// finds a *config.FieldError, an *activation.EnvError, ...).
var (
	// ErrConfig: bad options, hooks, certificates or environment; nothing
	// was started.
	ErrConfig = errors.New("waiter: not starting")
	// ErrListen: the listen socket could not be created.
	ErrListen = errors.New("waiter: cannot create the listen socket")
	// ErrStuck: the in-process worker (nofork) did not return after
	// request_timeout closed its client; the server stopped so that its
	// service manager restarts it.
	ErrStuck = errors.New("waiter: the in-process worker is stuck")
)

// ExitCode maps Run's error to Net::Waiter's exit codes: 0 for nil, 100
// for ErrListen, 1 for anything else.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrListen):
		return ExitListen
	}
	return ExitConfig
}

// Server is a waiter server: options, hooks, and the methods of Net::Waiter
// that hooks call. Build it with New (or a struct literal), then call Run.
//
// The same program runs as the master and, re-executed, as every worker:
// everything in main before Run runs in each of them, and Run in a worker
// never returns (the worker exits inside it after on_child_exit).
type Server struct {
	// Options; Run normalizes and validates them.
	Options config.Options
	// Hooks; OnProcess is required.
	Hooks hooks.Set
	// Logger, when nil, is built from Options.Debug and the environment:
	// text on stderr, or native journald entries under systemd.
	Logger *logrus.Logger
	// Sockets, when set, are served instead of systemd's or a bound one.
	Sockets []*activation.Socket
	// SocketNames picks systemd sockets by their FileDescriptorName=; empty
	// serves them all.
	SocketNames []string
	// Reload is called by the master on SIGHUP to read the options anew
	// (waiterd re-reads its file and flags). When nil a reload restarts the
	// workers with the same options.
	Reload func() (config.Options, error)
	// Carry, when set, is a pointer to the program's own settings (any
	// JSON-encodable value). The master passes its value to every worker it
	// starts, which decodes it over the pointer before any hook runs: workers
	// see the master's settings as of the last reload, whatever their own
	// main read from a file that may have changed since.
	Carry any
	// TLSConfig, when set, serves TLS on every listener with this config
	// instead of the ssl_* files: a GetCertificate of the program's own, a
	// certificate manager, client CAs from anywhere. Every process builds
	// it (main runs again in each worker), so set it before Run in all of
	// them; rotation is then the config's business (GetCertificate is
	// asked at each handshake), not a reload's. Setting it with
	// ssl_cert_file is refused.
	TLSConfig *tls.Config
	// Load, when set, reads the options and the program's own settings
	// together (any JSON-encodable value), in the master only: at start,
	// where it replaces Options, and on each reload, where its error
	// refuses the reload whole. Workers never call it: each gets a private
	// copy of its generation's settings through Decode.
	Load func() (config.Options, any, error)
	// Decode makes a worker's copy of the settings from their JSON (what
	// Load returned, as the master encoded it). Required with Load.
	Decode func([]byte) (any, error)

	hk       *hookrun.Runner
	log      *logrus.Entry
	child    bool
	sockets  []*activation.Socket
	bound    []*activation.Socket // the sockets Run bound itself
	deferred bool                 // TCP_DEFER_ACCEPT may be ours to clear (deferAccept in serve.go; the supervisor's)
	logSetUp bool
	sb       *scoreboard
	master   int
	current  atomic.Pointer[config.Options]
	settings atomic.Pointer[settingsBox]
	ssl      atomic.Bool
	client   atomic.Pointer[connBox] // the client being served by this process
	broken   atomic.Bool
	stopMu   sync.Mutex
	stopFns  []func()
}

// New returns a server with the given options and hooks.
func New(opts config.Options, h hooks.Set) *Server {
	return &Server{Options: opts, Hooks: h}
}

// IsWorker reports whether this process is a worker started by a waiter
// master. A main can use it to skip set-up that only the master needs, since
// everything before Run runs in every worker too.
//
// It is read once, when the program starts: Run removes waiter's variables
// from a worker's environment (so that programs its hooks start do not
// think they are workers), and the answer must not change after that.
func IsWorker() bool { return startRole != roleMaster }

var startRole = os.Getenv(envRole)

// BreakMainLoop asks the main loop to end after the current client, as
// Net::Waiter's break_main_loop does: in the master a graceful stop follows;
// in a worker, the worker exits after its client.
func (s *Server) BreakMainLoop() {
	s.broken.Store(true)
	s.stopMu.Lock()
	fns := s.stopFns
	s.stopMu.Unlock()
	for _, f := range fns {
		f()
	}
}

func (s *Server) onBreak(f func()) {
	s.stopMu.Lock()
	s.stopFns = append(s.stopFns, f)
	s.stopMu.Unlock()
}

// SSLInUse reports whether clients are served over TLS.
func (s *Server) SSLInUse() bool { return s.TLSConfig != nil || s.ssl.Load() }

// IsChild reports whether this process is a worker (Net::Waiter's
// is_child): the same answer as IsWorker, in every hook. nofork has no
// worker process: both are false there.
func (s *Server) IsChild() bool { return IsWorker() }

// Listeners returns the sockets being served (get_server_socket). In a
// worker they are its inherited copies.
func (s *Server) Listeners() []*activation.Socket { return s.sockets }

// Client returns the client connection this process is serving
// (get_client_socket), or nil between clients and in the master of a pool.
func (s *Server) Client() net.Conn {
	if b := s.client.Load(); b != nil {
		return b.c
	}
	return nil
}

type settingsBox struct{ v any }

// running is the server whose Run is under way in this process, for
// helpers that hooks call without a handle (waiter.Settings).
var running atomic.Pointer[Server]

// Running returns the server whose Run is under way in this process, or nil.
func Running() *Server { return running.Load() }

// CurrentSettings returns the program's settings in force in this process
// (see Load): in a worker its generation's private copy, in the master the
// last loaded. OnProcess should prefer SettingsFrom(ctx), which is its own
// worker's even in nofork while a reload starts the next one.
func (s *Server) CurrentSettings() any {
	if b := s.settings.Load(); b != nil {
		return b.v
	}
	return nil
}

// connBox holds a net.Conn of any concrete type (atomic.Value would panic
// when a *tls.Conn follows a *net.TCPConn).
type connBox struct{ c net.Conn }

// PeerCertificateSubject returns the subject of the client's TLS
// certificate, or "" when there is none.
func (s *Server) PeerCertificateSubject() string {
	if tc, ok := s.Client().(*tls.Conn); ok {
		st := tc.ConnectionState()
		if len(st.PeerCertificates) > 0 {
			return st.PeerCertificates[0].Subject.String()
		}
	}
	return ""
}

// BusyKidsCount returns how many workers are busy with a client and how many
// there are, read from the shared scoreboard: the same current figures in
// the master and in every worker. In nofork mode it is (1, 1) while a client
// is served, else (0, 1).
func (s *Server) BusyKidsCount() (busy, all int) {
	if s.sb == nil {
		return 0, 0
	}
	return s.sb.Counts()
}

// Scoreboard returns a snapshot of every worker's slot (pid, state, clients
// served, ...), in the master and in workers alike; in nofork mode the one
// in-process worker's.
func (s *Server) Scoreboard() []SlotInfo {
	if s.sb == nil {
		return nil
	}
	return s.sb.Snapshot()
}

// KidsCount returns how many workers there are (get_kids_count).
func (s *Server) KidsCount() int { _, all := s.BusyKidsCount(); return all }

// KidPIDs returns the pids of the workers, from the scoreboard.
func (s *Server) KidPIDs() []int {
	if s.sb == nil {
		return nil
	}
	return s.sb.PIDs()
}

// ParentPID returns the master's pid (get_parent_pid): the process's own pid
// in the master.
func (s *Server) ParentPID() int {
	if s.child {
		return s.master
	}
	return os.Getpid()
}

// PropagateSignal sends sig to every worker and returns how many it reached.
func (s *Server) PropagateSignal(sig syscall.Signal) int {
	n := 0
	for _, pid := range s.KidPIDs() {
		if pid != os.Getpid() && syscall.Kill(pid, sig) == nil {
			n++
		}
	}
	return n
}

// Log returns the server's logger, with WORKER_PID set in workers.
func (s *Server) Log() logrus.FieldLogger {
	if s.log == nil {
		return logrus.StandardLogger()
	}
	return s.log
}

// Run serves until stopped. It returns nil after a normal stop, or an
// error wrapping ErrConfig, ErrListen or ErrStuck, which it has logged (at
// error: PRIORITY=3 in the journal); ExitCode turns it into an exit status.
// In a worker it does not return.
//
// Every mode runs the same supervisor (see supervisor.go): prefork, the
// fixed pool and forking mode with worker processes, nofork and Accept=yes
// with one in-process worker.
func (s *Server) Run() error {
	running.CompareAndSwap(nil, s)
	defer running.CompareAndSwap(s, nil)
	if IsWorker() {
		s.runWorker() // never returns
	}
	// The master's signals are caught from the start, not from when the
	// supervisor begins: a HUP or USR1 that comes while the sockets open
	// would otherwise kill it (their default action), and a TERM would
	// not be graceful. They wait in the channel for the supervisor.
	ev := newEvents()
	catchSignals(ev)
	defer releaseSignals(ev)
	s.setupLog(s.Options.Debug)
	var settings any
	if s.Load != nil {
		// What Load returns replaces Options: the defaults are not checked
		// on their own (ssl: true may wait for the file's certificates).
		if s.Decode == nil {
			return s.fail(ErrConfig, errors.New("pool: Server.Load is set without Server.Decode"))
		}
		o, set, err := s.Load()
		if err != nil {
			return s.fail(ErrConfig, err)
		}
		s.Options, settings = o, set
		s.setupLog(o.Debug)
	}
	for _, n := range s.Options.Normalize() {
		s.log.Warn(n)
	}
	if err := s.Options.Validate(); err != nil {
		return s.fail(ErrConfig, err)
	}
	if s.Hooks.OnProcess == nil {
		return s.fail(ErrConfig, hooks.ErrNoProcess)
	}
	if s.TLSConfig != nil && (s.Options.SSLCertFile != "" || s.Options.SSLKeyFile != "") {
		return s.fail(ErrConfig, errors.New("pool: Server.TLSConfig is set, and so are ssl_cert_file or ssl_key_file: choose one"))
	}
	snap, warns, err := s.snapshot(s.Options, settings)
	if err != nil {
		return s.fail(ErrConfig, err)
	}
	for _, w := range warns {
		s.log.Warnf("waiter: %s", w)
	}
	s.setCurrent(s.Options, settings)
	s.hk.ServerBegin()
	kind, err := s.openSockets()
	if err != nil {
		return s.fail(kind, err)
	}
	defer s.closeSockets()
	s.hk.ListenOK()
	for _, sk := range s.sockets {
		s.log.WithField("mode", s.Options.Mode()).Infof("waiter: serving %s", sk)
	}
	err = s.supervise(&generation{n: 1, opts: snap}, ev)
	s.hk.ServerClose() // the last hook, before the deferred close of the sockets
	return err
}

// fail logs why Run ends and returns it wrapped in kind.
func (s *Server) fail(kind, err error) error {
	err = fmt.Errorf("%w: %w", kind, err)
	s.log.Error(err.Error())
	return err
}

// supervise sets up the supervisor for the mode and runs it.
func (s *Server) supervise(g *generation, ev *events) error {
	o := g.opts.o
	m := modePrefork
	switch {
	case len(s.sockets) == 1 && !s.sockets[0].Listening:
		m = modeConnected
	case o.Nofork:
		m = modeNofork
	case o.Prefork == 0:
		m = modeForking
	}
	slots := slotsAtStart(o.Maxfork, o.Spares)
	if m == modeNofork || m == modeConnected {
		slots = 2 // one in-process worker; a second slot while a reload waits for it
	}
	sb, err := newScoreboard(slots, len(s.sockets))
	if err != nil {
		return s.fail(ErrConfig, err)
	}
	s.sb = sb
	defer func() { s.sb = nil; sb.Close() }()
	e := env{now: time.Now, mono: monotonic, notify: sdNotify(s.log), watchdog: watchdogInterval()}
	var broker *stacksBroker
	switch m {
	case modeNofork, modeConnected:
		h := &inprocHost{s: s, sb: sb, ev: ev, connected: -1}
		if m == modeConnected {
			h.connected = s.sockets[0].Fd
		}
		e.start, e.signal = h.start, h.signal
	default:
		h, err := newProcHost(s, sb, ev)
		if err != nil {
			return s.fail(ErrConfig, err)
		}
		defer h.close()
		e.start, e.signal = h.start, h.signal
		broker = h.stacks
	}
	if (m == modeNofork || m == modeConnected) && (o.MaxWorkerRSS > 0 || o.MaxWorkerRSSHard > 0) {
		s.log.Warn("waiter: max_worker_rss and max_worker_rss_hard have no effect in one process (nofork, Accept=yes): the worker is the master; use the unit's MemoryMax=")
	}
	sv := newSupervisor(s, m, g, e, sb)
	sv.exits = ev.exits
	sv.shutdown = s.shutdownBound
	if o.MetricsListen != "" {
		sv.m = newMetrics(sv.pubStatus.Load, func() durationSnapshot {
			if d := sv.pubDurations.Load(); d != nil {
				return *d
			}
			return durationSnapshot{Buckets: make([]uint64, len(clientDurationBuckets)+1)}
		})
		addr, err := sv.m.serve(o.MetricsListen, s.log)
		if err != nil {
			return s.fail(ErrListen, fmt.Errorf("metrics_listen %s: %w", o.MetricsListen, err))
		}
		defer sv.m.close()
		s.log.Infof("waiter: metrics on http://%s/metrics", addr)
	}
	// Accept=yes runs one instance a connection, all with the same
	// runtime directory: they have no control socket of their own.
	if path := controlPath(o); path != "" && m != modeConnected {
		cs, err := s.startControl(path, ev, broker)
		if err != nil {
			return s.fail(ErrConfig, fmt.Errorf("control socket %s: %w", path, err))
		}
		defer cs.Close()
	}
	if m == modeForking {
		acc, err := startForkAcceptor(s.listenFds(), o.Timeout.D())
		if err != nil {
			return s.fail(ErrListen, err)
		}
		sv.acc = acc
	}
	return sv.run(ev)
}

// setCurrent records the options and settings in force, for
// CurrentOptions and CurrentSettings.
func (s *Server) setCurrent(o config.Options, settings any) {
	s.current.Store(&o)
	s.ssl.Store(o.SSL)
	if settings != nil {
		s.settings.Store(&settingsBox{settings})
	}
}

// CurrentOptions returns the options in force in this process: in the
// master those of the last reload, in a worker those it was started with.
// Server.Options is what Run was given and is not changed by reloads.
func (s *Server) CurrentOptions() config.Options {
	if o := s.current.Load(); o != nil {
		return *o
	}
	return s.Options
}

// shutdownBound makes the listeners this process bound itself refuse new
// clients at once, in every process that holds a copy (a stop). Sockets
// from systemd or from Server.Sockets are left alone: they are shared with
// whoever passed them (PID 1 queues clients for the next start), so they
// are closed, never shutdown().
func (s *Server) shutdownBound() {
	for _, sk := range s.bound {
		unix.Shutdown(sk.Fd, unix.SHUT_RDWR)
	}
}

// acceptFailed logs an accept error and runs on_accept_error: the one call
// site, for every process that accepts.
func (s *Server) acceptFailed(err error) {
	s.log.Warnf("waiter: %v", err)
	s.hk.AcceptError(err)
}

func (s *Server) setupLog(debug bool) {
	l := s.Logger
	if l == nil {
		l = newLogger(debug, s.Hooks)
		s.Logger = l
	} else if !s.logSetUp {
		// A logger of the program's own still follows debug and feeds the
		// Log/LogDebug hooks: one way to log, whichever way it was set.
		if s.Hooks.Log != nil || s.Hooks.LogDebug != nil {
			l.AddHook(&userLogHook{log: s.Hooks.Log, debug: s.Hooks.LogDebug})
		}
	}
	s.logSetUp = true
	if debug && l.Level < logrus.DebugLevel {
		l.SetLevel(logrus.DebugLevel)
	}
	s.log = logrus.NewEntry(l)
	if s.child {
		s.log = s.log.WithField("WORKER_PID", os.Getpid())
	}
	s.hk = hookrun.NewRunner(s.Hooks, s.log)
}

// openSockets takes the user's sockets, systemd's, or binds one, in that
// order. A bind failure is ErrListen, with one clear error.
func (s *Server) openSockets() (error, error) {
	all := s.Sockets
	if all == nil {
		var err error
		all, err = activation.FromEnv()
		if err != nil {
			return ErrConfig, err
		}
	}
	stored, all := splitStored(all)
	if len(all) > 0 {
		s.dropStored(stored, "systemd passes sockets of its own")
	}
	dropped := false
	if len(all) == 0 && len(stored) > 0 {
		keep := -1
		for i, sk := range stored {
			if storedMatches(sk, s.Options.Listen, s.Options.Port) {
				keep = i
				break
			}
		}
		if keep >= 0 {
			// Restarted: the previous master's socket, with whatever
			// clients queued on it meanwhile. Still this process's to
			// hand on, not to shut down at the stop.
			kept := stored[keep]
			kept.Name = "listen"
			s.sockets = []*activation.Socket{kept}
			// Ours, not a socket unit's: a TCP_DEFER_ACCEPT the last
			// master set is cleared if the options no longer ask for it.
			s.deferred = true
			if len(stored) > 1 {
				// FDSTOREREMOVE takes every fd of the name: the kept one
				// goes back in after.
				s.dropStored(append(stored[:keep:keep], stored[keep+1:]...), "one listener is kept")
				s.store(s.sockets)
			}
			// The options' backlog, which may have changed since the
			// socket was bound.
			bl, err := s.sockets[0].SetBacklog(s.Options.Backlog)
			if err != nil {
				return ErrListen, err
			}
			s.logBacklog(bl)
			s.log.Infof("waiter: serving %s from systemd's fd store", s.sockets[0])
			return s.checkSockets()
		}
		s.dropStored(stored, fmt.Sprintf("the options now ask for %q", s.Options.Listen+portNote(s.Options)))
		dropped = true
	}
	if len(all) > 0 {
		picked, err := activation.Pick(all, s.SocketNames...)
		if err != nil {
			return ErrConfig, err
		}
		for _, sk := range all {
			if !contains(picked, sk) {
				sk.Close()
			}
		}
		s.sockets = picked
	} else {
		sk, bl, err := activation.BindBacklog(s.Options.Listen, s.Options.Port, s.Options.Backlog)
		for i := 0; errors.Is(err, activation.ErrAddrInUse) && dropped && i < 20; i++ {
			// systemd closes its copy of a stored socket just dropped
			// when it reads our FDSTOREREMOVE, not before we bind.
			time.Sleep(100 * time.Millisecond)
			sk, bl, err = activation.BindBacklog(s.Options.Listen, s.Options.Port, s.Options.Backlog)
		}
		if err != nil {
			return ErrListen, err
		}
		s.logBacklog(bl)
		s.sockets = []*activation.Socket{sk}
		if !s.store(s.sockets) {
			s.bound = s.sockets // the store keeps no copy: shut it at the stop
		}
	}
	return s.checkSockets()
}

// logBacklog says what the accept queue holds, and warns when the kernel
// cut what was asked for: a full queue drops connections silently.
func (s *Server) logBacklog(bl activation.Backlog) {
	if bl.Asked > bl.Somaxconn {
		s.log.Warnf("waiter: backlog %d asked for, but the kernel allows %d (net.core.somaxconn): using %d", bl.Asked, bl.Somaxconn, bl.Used)
	} else {
		s.log.Infof("waiter: listen backlog %d (net.core.somaxconn %d)", bl.Used, bl.Somaxconn)
	}
}

func portNote(o config.Options) string {
	if o.Listen != "" {
		return ""
	}
	return fmt.Sprintf("port %d", o.Port)
}

// checkSockets refuses what cannot be served.
func (s *Server) checkSockets() (error, error) {
	if err := activation.CheckNames(s.sockets); err != nil {
		return ErrConfig, err
	}
	connected := 0
	for _, sk := range s.sockets {
		if !sk.Listening {
			connected++
		}
	}
	if connected > 0 && len(s.sockets) != 1 {
		return ErrConfig, fmt.Errorf("pool: %d connected sockets among %d: Accept=yes passes exactly one", connected, len(s.sockets))
	}
	return nil, nil
}

func contains(l []*activation.Socket, s *activation.Socket) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func (s *Server) closeSockets() {
	for _, sk := range s.sockets {
		sk.Close()
	}
}

func (s *Server) listenFds() []int {
	fds := make([]int, len(s.sockets))
	for i, sk := range s.sockets {
		fds[i] = sk.Fd
	}
	return fds
}
