package pool

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Goroutine stacks of a worker that goes on serving: slow_request's log and
// waiterctl stacks. The master writes what it wants into the worker's slot
// (askStacks) and sends sigStacks; the worker takes the request, and logs
// its stacks or sends them back on the stacks socket, a datagram socket
// pair whose one end every worker process inherits: a datagram is whole,
// so the stacks of two workers never interleave.
//
// SIGQUIT would write them too, but ends the process (that is
// request_timeout's and max_worker_rss_hard's way).

// sigStacks is SIGPWR: unused by the Go runtime and never sent by a
// terminal (SIGWINCH would reach every worker in a terminal's process
// group). Its default action ends a process, so the master sends it only to
// workers that reported ready: they have caught it by then.
const sigStacks = syscall.SIGPWR

// maxStacksMsg bounds one reply datagram (the socket's buffer is set to
// hold it); longer stacks are cut, with a line saying so.
const maxStacksMsg = 192 << 10

// allStacks returns every goroutine's stack, up to limit bytes.
func allStacks(limit int) []byte {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) || len(buf) >= limit {
			b := buf[:n]
			if n >= len(buf) {
				b = append(b, "\n... (cut: longer than the limit)\n"...)
			}
			return b
		}
		buf = make([]byte, min(2*len(buf), limit))
	}
}

// stacksAsked is a worker process's answer to sigStacks.
func (w *worker) stacksAsked() {
	what := w.slot.takeStacks()
	if what == 0 {
		return
	}
	st := allStacks(maxStacksMsg - 64)
	if what&stacksLog != 0 {
		w.logSlow(st)
	}
	if what&stacksReply != 0 {
		msg := make([]byte, 4, 4+len(st))
		binary.LittleEndian.PutUint32(msg, uint32(os.Getpid()))
		msg = append(msg, st...)
		if err := unix.Send(fdStacks, msg, unix.MSG_DONTWAIT); err != nil {
			w.log.Warnf("waiter: sending my stacks to the master: %v", err)
		}
	}
}

// logSlow logs the stacks of a worker busy past slow_request, with its
// client: once per client (the master asks once), and the worker goes on.
func (w *worker) logSlow(st []byte) {
	f := logrus.Fields{"STACK": string(st)}
	peer := "-"
	if p := w.slot.Peer(); p.IsValid() {
		peer = p.String()
		f["PEER"] = peer
	}
	busy := time.Duration(0)
	if b := w.slot.BusySince(); b > 0 {
		busy = sinceMono(b).Round(time.Millisecond)
	}
	w.log.WithFields(f).Warnf("waiter: slow request: busy with %s for %s (slow_request %s): goroutine stacks follow in STACK", peer, busy, w.o.SlowRequest)
}

// stacksBroker passes replies from the stacks socket to the control
// requests waiting for them, by pid. It is its own owner (a mutex): the
// supervisor only sends the signal.
type stacksBroker struct {
	mu    sync.Mutex
	waits map[int][]chan []byte
}

func newStacksBroker() *stacksBroker { return &stacksBroker{waits: map[int][]chan []byte{}} }

// wait registers for pid's next stacks; call cancel when done waiting.
func (b *stacksBroker) wait(pid int) (<-chan []byte, func()) {
	ch := make(chan []byte, 1)
	b.mu.Lock()
	b.waits[pid] = append(b.waits[pid], ch)
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		l := b.waits[pid]
		for i, c := range l {
			if c == ch {
				b.waits[pid] = append(l[:i:i], l[i+1:]...)
				break
			}
		}
		if len(b.waits[pid]) == 0 {
			delete(b.waits, pid)
		}
	}
}

func (b *stacksBroker) deliver(pid int, st []byte) {
	b.mu.Lock()
	l := b.waits[pid]
	delete(b.waits, pid)
	b.mu.Unlock()
	for _, ch := range l {
		ch <- st // cap 1, one delivery each
	}
}

// stacksSocket makes the pair: the master's end (read by readStacks) and
// the workers' end (fdStacks in each worker).
func stacksSocket() (master, workers int, err error) {
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("pool: stacks socket: %w", err)
	}
	// Room for one whole reply (the kernel caps SO_SNDBUF at wmem_max
	// unless root forces it; maxStacksMsg fits the default cap).
	if unix.SetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 2*maxStacksMsg) != nil {
		unix.SetsockoptInt(p[1], unix.SOL_SOCKET, unix.SO_SNDBUF, 2*maxStacksMsg)
	}
	unix.SetsockoptInt(p[0], unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4*maxStacksMsg)
	return p[0], p[1], nil
}

// readStacks delivers every reply until f (the master's end, made
// non-blocking before os.NewFile so that it is in the netpoller) is closed.
func readStacks(f *os.File, b *stacksBroker) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, maxStacksMsg+64)
	for {
		var n int
		var rerr error
		err := rc.Read(func(s uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(s), buf, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil || (rerr != nil && rerr != unix.EINTR) {
			return
		}
		if n >= 4 {
			b.deliver(int(binary.LittleEndian.Uint32(buf)), append([]byte(nil), buf[4:n]...))
		}
	}
}
