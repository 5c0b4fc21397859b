package pool

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The scoreboard is one memfd, mapped shared by the master and every worker:
// a header and one slot per worker, each on its own pair of cache lines. A slot is
// written only by its worker (state, counters, heartbeat) except at its two
// ends: the master claims it before the spawn and frees it after the reap.
// Every access is an atomic load or store: there is no lock and no signal on
// the accept/serve path, so any process reads a current BusyKidsCount.
const (
	sbMagic       = 0x57414954 // "WAIT"
	sbVersion     = 3
	cacheLine     = 64
	slotSize      = 5 * cacheLine
	slotPID       = 0   // int32
	slotState     = 4   // uint32
	slotGen       = 8   // uint32
	slotServed    = 16  // uint64
	slotFailed    = 24  // uint64
	slotBeat      = 32  // int64, monotonic ns
	slotStarted   = 40  // int64, monotonic ns
	slotBusy      = 48  // int64, monotonic ns when the current client began
	slotWasted    = 56  // uint64: wake-ups that found no client (herd measure)
	slotIdleSince = 64  // int64, monotonic ns when the worker last became idle
	slotPeerHi    = 72  // uint64: the current client's address, bytes 0-7 (IPv4 as ::ffff:a.b.c.d)
	slotPeerLo    = 80  // uint64: bytes 8-15
	slotPeerPort  = 88  // uint32: port+1 (0: no peer)
	slotRSS       = 96  // uint64: bytes, sampled by the master
	slotCPU       = 104 // uint64: ns of CPU, sampled by the master
	slotListener  = 112 // uint32: the current client's listener (index into the header's)
	slotStacks    = 116 // uint32: what the master asked of a SIGPWR (stacksLog, stacksReply)
	slotExit      = 120 // uint32: why the worker ended itself (exitWhy*)
	slotHist      = 128 // uint64 x (len(clientDurationBuckets)+1): clients by duration
	slotHistSum   = 248 // uint64: ns, the sum of those durations
	slotEpoch     = 256 // uint32: which claim of the slot this is (the master's), in every event its worker sends
	slotRetire    = 260 // uint32: 1: the master asks the worker to end after its client (max_worker_rss)
	hdrMagic      = 0
	hdrVersion    = 4
	hdrSlots      = 8
	hdrIdle       = 16 // int32: workers waiting for a client (prefork)
	hdrWant       = 20 // uint32: 1 while a worker has asked the master to grow
	hdrFull       = 24 // uint32: 1 while the pool is at maxfork (do not ask)
	hdrStartFail  = 28 // uint32: 1 once a worker logged an on_child_start failure
	hdrWarnAt     = 32 // int64 x 2: when a worker last logged a client warning of kind 0, 1
	hdrWarnHeld   = 48 // uint64 x 2: client warnings of kind 0, 1 held back since
	hdrListeners  = 64 // uint32: how many listener lines follow the header's first two
	hdrWarnAt2    = 72 // int64, uint64 pairs: the warnings of kinds 2 (PROXY) and 3 (max_per_source)
	hdrFirstLine  = 2 * cacheLine
	lnServed      = 0 // per listener line: uint64 clients served
	lnFailed      = 8 // uint64 of which failed
)

// What a SIGPWR asks of a worker (slotStacks, set by the master first).
const (
	stacksLog   = 1 // slow_request, max_worker_rss_hard: log them with the peer
	stacksReply = 2 // waiterctl stacks: send them to the master's stacks socket
)

// Why a worker ended itself (slotExit), for the exit counts.
const (
	exitWhyNone        = iota
	exitWhyMaxRequests // max_requests served
	exitWhyClient      // forking: done with its one client
	exitWhyHook        // on_process or a hook asked (ErrStopWorker, Fatal, a panic)
	exitWhyAsked       // the master asked (askRetire)
)

// Slot states.
const (
	stateFree uint32 = iota
	stateStarting
	stateIdle
	stateBusy
	stateExiting
)

var stateNames = [...]string{"free", "starting", "idle", "busy", "exiting"}

// scoreboard is the shared region. It is the pool's private contract between
// its own processes (one binary, one layout version): unexported, so that
// no program depends on its layout; SlotInfo is its public snapshot.
type scoreboard struct {
	fd        int
	mem       []byte
	n         int
	listeners int
	header    int // bytes before the first slot
}

// The header is two cache lines and one per listener (clients served and
// failed there: written by every worker, one line each so that listeners
// do not share one).
func sbHeaderSize(listeners int) int { return hdrFirstLine + listeners*cacheLine }

func sbSize(slots, listeners int) int { return sbHeaderSize(listeners) + slots*slotSize }

// newScoreboard creates a scoreboard for slots workers and the given number
// of listeners (master side).
func newScoreboard(slots int, listeners ...int) (*scoreboard, error) {
	nl := 1
	if len(listeners) > 0 && listeners[0] > 0 {
		nl = listeners[0]
	}
	fd, err := unix.MemfdCreate("waiter-scoreboard", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("pool: scoreboard memfd: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(sbSize(slots, nl))); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pool: scoreboard size: %w", err)
	}
	// Sealed against resizing: a hook (or a program it runs) that truncates
	// fd 3 would otherwise make every process that touches the mapping die
	// of SIGBUS, the master first. Writes stay allowed: that is the point.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pool: scoreboard seals: %w", err)
	}
	sb, err := mapScoreboard(fd, slots, nl)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	sb.u32(hdrListeners).Store(uint32(nl))
	sb.u32(hdrMagic).Store(sbMagic)
	sb.u32(hdrVersion).Store(sbVersion)
	sb.u32(hdrSlots).Store(uint32(slots))
	return sb, nil
}

// openScoreboard maps a scoreboard inherited as fd (worker side) and checks
// that it is one of ours, of this layout.
func openScoreboard(fd int) (*scoreboard, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("pool: scoreboard fd %d: %w", fd, err)
	}
	if st.Size < hdrFirstLine {
		return nil, fmt.Errorf("pool: scoreboard fd %d: too small (%d bytes)", fd, st.Size)
	}
	head, err := unix.Mmap(fd, 0, hdrFirstLine, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("pool: scoreboard mmap: %w", err)
	}
	nl := int(binary.NativeEndian.Uint32(head[hdrListeners:]))
	unix.Munmap(head)
	if nl < 1 || int64(sbHeaderSize(nl)) > st.Size {
		return nil, fmt.Errorf("pool: scoreboard fd %d: not a waiter scoreboard of layout %d", fd, sbVersion)
	}
	slots := int((st.Size - int64(sbHeaderSize(nl))) / slotSize)
	sb, err := mapScoreboard(fd, slots, nl)
	if err != nil {
		return nil, err
	}
	if sb.u32(hdrMagic).Load() != sbMagic || sb.u32(hdrVersion).Load() != sbVersion || int(sb.u32(hdrSlots).Load()) != slots {
		sb.Close()
		return nil, fmt.Errorf("pool: scoreboard fd %d: not a waiter scoreboard of layout %d", fd, sbVersion)
	}
	return sb, nil
}

func mapScoreboard(fd, slots, listeners int) (*scoreboard, error) {
	mem, err := unix.Mmap(fd, 0, sbSize(slots, listeners), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("pool: scoreboard mmap: %w", err)
	}
	return &scoreboard{fd: fd, mem: mem, n: slots, listeners: listeners, header: sbHeaderSize(listeners)}, nil
}

// Close unmaps the region and closes the memfd.
func (sb *scoreboard) Close() error {
	if sb == nil || sb.mem == nil {
		return nil
	}
	err := unix.Munmap(sb.mem)
	sb.mem = nil
	unix.Close(sb.fd)
	return err
}

// Fd is the memfd, for passing to workers.
func (sb *scoreboard) Fd() int { return sb.fd }

// Slots is the number of slots.
func (sb *scoreboard) Slots() int { return sb.n }

func (sb *scoreboard) u32(off int) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&sb.mem[off]))
}
func (sb *scoreboard) i32(off int) *atomic.Int32 {
	return (*atomic.Int32)(unsafe.Pointer(&sb.mem[off]))
}
func (sb *scoreboard) u64(off int) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&sb.mem[off]))
}
func (sb *scoreboard) i64(off int) *atomic.Int64 {
	return (*atomic.Int64)(unsafe.Pointer(&sb.mem[off]))
}

// sbSlot is one worker's line of the scoreboard.
type sbSlot struct {
	sb  *scoreboard
	off int
	idx int
}

// Slot returns slot i.
func (sb *scoreboard) Slot(i int) sbSlot { return sbSlot{sb: sb, off: sb.header + i*slotSize, idx: i} }

// Listeners is the number of listener lines.
func (sb *scoreboard) Listeners() int { return sb.listeners }

// ListenerCounts returns the clients served and failed on listener i, by
// every worker that ever ran (the lines are never reset).
func (sb *scoreboard) ListenerCounts(i int) (served, failed uint64) {
	if i < 0 || i >= sb.listeners {
		return 0, 0
	}
	off := hdrFirstLine + i*cacheLine
	return sb.u64(off + lnServed).Load(), sb.u64(off + lnFailed).Load()
}

// Index is the slot's number.
func (s sbSlot) Index() int { return s.idx }

func (s sbSlot) PID() int          { return int(s.sb.i32(s.off + slotPID).Load()) }
func (s sbSlot) State() uint32     { return s.sb.u32(s.off + slotState).Load() }
func (s sbSlot) Gen() int          { return int(s.sb.u32(s.off + slotGen).Load()) }
func (s sbSlot) Served() uint64    { return s.sb.u64(s.off + slotServed).Load() }
func (s sbSlot) Failed() uint64    { return s.sb.u64(s.off + slotFailed).Load() }
func (s sbSlot) Heartbeat() int64  { return s.sb.i64(s.off + slotBeat).Load() }
func (s sbSlot) IdleSince() int64  { return s.sb.i64(s.off + slotIdleSince).Load() }
func (s sbSlot) Started() int64    { return s.sb.i64(s.off + slotStarted).Load() }
func (s sbSlot) BusySince() int64  { return s.sb.i64(s.off + slotBusy).Load() }
func (s sbSlot) SetPID(pid int)    { s.sb.i32(s.off + slotPID).Store(int32(pid)) }
func (s sbSlot) AddFailed()        { s.sb.u64(s.off + slotFailed).Add(1) }
func (s sbSlot) setState(v uint32) { s.sb.u32(s.off + slotState).Store(v) }

// claim is the master's: it readies a free slot for a worker it is about to
// start. The pid is filled in once known.
func (s sbSlot) claim(gen int, epoch uint32) {
	s.sb.i32(s.off + slotPID).Store(0)
	s.sb.u32(s.off + slotEpoch).Store(epoch)
	s.sb.u32(s.off + slotRetire).Store(0)
	s.sb.u32(s.off + slotGen).Store(uint32(gen))
	s.sb.u64(s.off + slotServed).Store(0)
	s.sb.u64(s.off + slotFailed).Store(0)
	s.sb.u64(s.off + slotWasted).Store(0)
	s.sb.i64(s.off + slotBusy).Store(0)
	s.sb.u32(s.off + slotPeerPort).Store(0)
	s.sb.u64(s.off + slotRSS).Store(0)
	s.sb.u64(s.off + slotCPU).Store(0)
	s.sb.u32(s.off + slotListener).Store(0)
	s.sb.u32(s.off + slotStacks).Store(0)
	s.sb.u32(s.off + slotExit).Store(exitWhyNone)
	for i := 0; i <= len(clientDurationBuckets); i++ {
		s.sb.u64(s.off + slotHist + 8*i).Store(0)
	}
	s.sb.u64(s.off + slotHistSum).Store(0)
	now := monotonic()
	s.sb.i64(s.off + slotIdleSince).Store(now)
	s.sb.i64(s.off + slotStarted).Store(now)
	s.sb.i64(s.off + slotBeat).Store(now)
	s.setState(stateStarting)
}

// release is the master's, after the reap. A worker that died while idle
// still counts in the header's idle counter: take it out.
func (s sbSlot) release() {
	if s.State() == stateIdle {
		s.sb.i32(hdrIdle).Add(-1)
	}
	s.setState(stateFree)
	s.sb.i32(s.off + slotPID).Store(0)
}

// Idle is the worker's: it waits for a client.
func (s sbSlot) Idle() {
	now := monotonic()
	s.sb.i64(s.off + slotBeat).Store(now)
	s.sb.i64(s.off + slotIdleSince).Store(now)
	s.setState(stateIdle)
	s.sb.i32(hdrIdle).Add(1)
}

// Busy is the worker's: it has a client. It returns true when this worker
// was the last idle one and should ask the master for more.
func (s sbSlot) Busy() (askGrow bool) {
	now := monotonic()
	s.sb.i64(s.off + slotBusy).Store(now)
	s.sb.i64(s.off + slotBeat).Store(now)
	wasIdle := s.State() == stateIdle // only this worker writes its state
	s.setState(stateBusy)
	if !wasIdle {
		return false
	}
	left := s.sb.i32(hdrIdle).Add(-1)
	if left > 0 || s.sb.u32(hdrFull).Load() == 1 {
		return false
	}
	// Ask once: the master clears the flag when it has acted.
	return s.sb.u32(hdrWant).CompareAndSwap(0, 1)
}

// Done is the worker's: the client is served. It counts the client in the
// slot, in its listener's line and in the slot's duration histogram: a
// clock read (the vDSO) and a few atomic adds, no system call.
func (s sbSlot) Done(failed bool) {
	if b := s.sb.i64(s.off + slotBusy).Load(); b > 0 {
		d := monotonic() - b
		i := 0
		for i < len(histBoundsNs) && d > histBoundsNs[i] {
			i++
		}
		s.sb.u64(s.off + slotHist + 8*i).Add(1)
		s.sb.u64(s.off + slotHistSum).Add(uint64(max(d, 0)))
	}
	if l := int(s.sb.u32(s.off + slotListener).Load()); l < s.sb.listeners {
		off := hdrFirstLine + l*cacheLine
		s.sb.u64(off + lnServed).Add(1)
		if failed {
			s.sb.u64(off + lnFailed).Add(1)
		}
	}
	s.sb.u64(s.off + slotServed).Add(1)
	if failed {
		s.sb.u64(s.off + slotFailed).Add(1)
	}
	s.sb.i64(s.off + slotBusy).Store(0)
	s.sb.u32(s.off + slotPeerPort).Store(0)
}

// histBoundsNs are clientDurationBuckets in ns, for Done's comparisons.
var histBoundsNs = func() []int64 {
	out := make([]int64, len(clientDurationBuckets))
	for i, b := range clientDurationBuckets {
		out[i] = int64(b * float64(time.Second))
	}
	return out
}()

// setListener records which listener the current client came from.
func (s sbSlot) setListener(i int) { s.sb.u32(s.off + slotListener).Store(uint32(i)) }

// addHist adds the slot's duration histogram into b (len(clientDurationBuckets)+1)
// and returns its sum in ns.
func (s sbSlot) addHist(b []uint64) uint64 {
	for i := range b {
		b[i] += s.sb.u64(s.off + slotHist + 8*i).Load()
	}
	return s.sb.u64(s.off + slotHistSum).Load()
}

// RSS and CPU are the master's samples; setUsage is the master's.
func (s sbSlot) RSS() uint64        { return s.sb.u64(s.off + slotRSS).Load() }
func (s sbSlot) CPU() time.Duration { return time.Duration(s.sb.u64(s.off + slotCPU).Load()) }
func (s sbSlot) setUsage(rss uint64, cpu time.Duration) {
	s.sb.u64(s.off + slotRSS).Store(rss)
	s.sb.u64(s.off + slotCPU).Store(uint64(cpu))
}

// askStacks is the master's, before it sends SIGPWR; takeStacks the
// worker's, when the signal comes.
func (s sbSlot) askStacks(what uint32) { s.sb.u32(s.off + slotStacks).Or(what) }
func (s sbSlot) takeStacks() uint32    { return s.sb.u32(s.off + slotStacks).Swap(0) }

// Epoch is the claim the slot's worker belongs to: an event from a worker
// of an earlier claim (it exited before the master read its report) must
// not be taken for the new worker's.
func (s sbSlot) Epoch() uint32 { return s.sb.u32(s.off + slotEpoch).Load() }

// askRetire is the master's: end after the current client (or at the next
// accept timeout when idle), without a stop's cancelled context.
func (s sbSlot) askRetire()        { s.sb.u32(s.off + slotRetire).Store(1) }
func (s sbSlot) retireAsked() bool { return s.sb.u32(s.off+slotRetire).Load() == 1 }

// setExitWhy is the worker's, before it ends itself; ExitWhy the master's.
func (s sbSlot) setExitWhy(why uint32) { s.sb.u32(s.off + slotExit).Store(why) }
func (s sbSlot) ExitWhy() uint32       { return s.sb.u32(s.off + slotExit).Load() }

// setPeer records the current client's address. Three atomic stores, not
// one: a reader may see a torn address for an instant, which the status
// page tolerates; the port is written last and cleared first, so a reader
// that sees a port sees an address at least as new.
func (s sbSlot) setPeer(a netip.AddrPort) {
	if !a.IsValid() {
		s.sb.u32(s.off + slotPeerPort).Store(0)
		return
	}
	b := a.Addr().As16()
	s.sb.u64(s.off + slotPeerHi).Store(binary.BigEndian.Uint64(b[:8]))
	s.sb.u64(s.off + slotPeerLo).Store(binary.BigEndian.Uint64(b[8:]))
	s.sb.u32(s.off + slotPeerPort).Store(uint32(a.Port()) + 1)
}

// Peer returns the current client's address, or an invalid one.
func (s sbSlot) Peer() netip.AddrPort {
	p := s.sb.u32(s.off + slotPeerPort).Load()
	if p == 0 {
		return netip.AddrPort{}
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], s.sb.u64(s.off+slotPeerHi).Load())
	binary.BigEndian.PutUint64(b[8:], s.sb.u64(s.off+slotPeerLo).Load())
	return netip.AddrPortFrom(netip.AddrFrom16(b).Unmap(), uint16(p-1))
}

// Exiting is the worker's: it will serve no more.
func (s sbSlot) Exiting() {
	if s.State() == stateIdle {
		s.sb.i32(hdrIdle).Add(-1)
	}
	s.setState(stateExiting)
}

// Wasted counts a wake-up that found no client to accept.
func (s sbSlot) Wasted()             { s.sb.u64(s.off + slotWasted).Add(1) }
func (s sbSlot) WastedCount() uint64 { return s.sb.u64(s.off + slotWasted).Load() }

// Beat is the worker's heartbeat while it waits.
func (s sbSlot) Beat() { s.sb.i64(s.off + slotBeat).Store(monotonic()) }

// Counts returns how many slots are busy and how many are in use.
func (sb *scoreboard) Counts() (busy, all int) {
	for i := 0; i < sb.n; i++ {
		switch sb.u32(sb.header + i*slotSize + slotState).Load() {
		case stateFree:
		case stateBusy:
			busy++
			all++
		default:
			all++
		}
	}
	return busy, all
}

// PIDs returns the pids of the workers in use.
func (sb *scoreboard) PIDs() []int {
	var out []int
	for i := 0; i < sb.n; i++ {
		s := sb.Slot(i)
		if s.State() != stateFree {
			if p := s.PID(); p > 0 {
				out = append(out, p)
			}
		}
	}
	return out
}

func (sb *scoreboard) idleCount() int { return int(sb.i32(hdrIdle).Load()) }

// allowWarn is the pool-wide rate limit of client warnings (kind 0: TLS
// handshakes, 1: on_process errors): one line a second across every
// process, so that forking mode, a process per client, does not log one
// line per junk client. It returns whether to log and how many were held.
func (sb *scoreboard) allowWarn(kind int, now int64) (bool, uint64) {
	atOff, heldOff := hdrWarnAt+8*kind, hdrWarnHeld+8*kind
	if kind >= 2 {
		atOff = hdrWarnAt2 + 16*(kind-2)
		heldOff = atOff + 8
	}
	at := sb.i64(atOff)
	last := at.Load()
	if now-last >= int64(time.Second) && at.CompareAndSwap(last, now) {
		return true, sb.u64(heldOff).Swap(0)
	}
	sb.u64(heldOff).Add(1)
	return false, 0
}

// fromSource counts the workers busy with a client from addr, this one
// included: max_per_source's check, a scan of the slots with no lock. Each
// worker publishes its peer before it counts, so two that race both see
// each other: at worst both refuse, never both serve past the limit.
func (sb *scoreboard) fromSource(addr netip.Addr) int {
	n := 0
	for i := 0; i < sb.n; i++ {
		s := sb.Slot(i)
		if s.State() == stateBusy {
			if p := s.Peer(); p.IsValid() && p.Addr() == addr {
				n++
			}
		}
	}
	return n
}

// claimStartFailure is true for the first worker of a run of failures.
func (sb *scoreboard) claimStartFailure() bool { return sb.u32(hdrStartFail).CompareAndSwap(0, 1) }
func (sb *scoreboard) clearStartFailure()      { sb.u32(hdrStartFail).Store(0) }

func (sb *scoreboard) takeWant() bool { return sb.u32(hdrWant).CompareAndSwap(1, 0) }
func (sb *scoreboard) setFull(full bool) {
	v := uint32(0)
	if full {
		v = 1
	}
	sb.u32(hdrFull).Store(v)
}

// monotonic is CLOCK_MONOTONIC in ns: the same clock in every process,
// unlike Go's time.Now monotonic reading, whose origin is private to the
// process. It is read through Go's clock (the vDSO, no system call: Busy and
// Idle run it per client), offset once by a real clock_gettime(2); Go's
// monotonic clock is CLOCK_MONOTONIC too, so the two agree to within the
// microsecond of that first reading, in every process.
func monotonic() int64 { return monoBase + int64(time.Since(monoRef)) }

var monoRef, monoBase = monoStart()

func monoStart() (time.Time, int64) {
	ref := time.Now()
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ref, ts.Nano()
}

func sinceMono(t int64) time.Duration { return time.Duration(monotonic() - t) }

// SlotInfo is a snapshot of one worker's slot, for status pages and tests.
type SlotInfo struct {
	Slot   int
	PID    int
	State  string
	Gen    int
	Served uint64
	Failed uint64
	// Wasted counts wake-ups that found no client (the thundering herd).
	Wasted uint64
	// Age is how long ago the worker started; Busy how long it has been
	// with its current client (0 when idle).
	Age, Busy time.Duration
	// Peer is the current client's address, when busy.
	Peer netip.AddrPort
}

// Snapshot returns the slots in use.
func (sb *scoreboard) Snapshot() []SlotInfo {
	var out []SlotInfo
	for i := 0; i < sb.n; i++ {
		s := sb.Slot(i)
		st := s.State()
		if st == stateFree {
			continue
		}
		in := SlotInfo{Slot: i, PID: s.PID(), State: stateNames[min(int(st), len(stateNames)-1)], Gen: s.Gen(),
			Served: s.Served(), Failed: s.Failed(), Wasted: s.WastedCount(), Age: sinceMono(s.Started())}
		if b := s.BusySince(); st == stateBusy && b > 0 {
			in.Busy = sinceMono(b)
			in.Peer = s.Peer()
		}
		out = append(out, in)
	}
	return out
}
