package pool

// Micro-benchmarks of the hot paths: the scoreboard updates a worker makes
// per client, the master's scan of it, the way from a connection waiting in
// the listen queue to a served client (prefork, and forking's hand-off to a
// spare), and one spawn. Run them with
//
//	go test -run '^$' -bench . -benchmem ./pool
//
// They measure and print; they assert nothing about time.

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/activation"
	"github.com/waiter-go/waiter/config"
	"github.com/waiter-go/waiter/hooks"
)

// benchSlots is the scoreboard of a prefork 8..32 pool: two generations of
// maxfork, the spares and two more (as master.setup sizes it).
const benchSlots = 2*32 + 2 + 2

func newBenchScoreboard(b *testing.B, slots int) *scoreboard {
	b.Helper()
	sb, err := newScoreboard(slots)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sb.Close() })
	return sb
}

// BenchmarkScoreboardClient is what a prefork worker writes per client:
// Busy when it has one, Done when served, Idle when waiting again.
func BenchmarkScoreboardClient(b *testing.B) {
	sb := newBenchScoreboard(b, benchSlots)
	s := sb.Slot(3)
	s.claim(0, 1)
	s.Idle()
	s.Idle() // a second idle worker, so that Busy never asks to grow
	for b.Loop() {
		s.Busy()
		s.Done(false)
		s.Idle()
	}
}

// BenchmarkScoreboardClientParallel is the same from several goroutines,
// each with its own slot, as workers on several CPUs: the slots are on
// separate cache lines, but the header's idle counter is shared.
func BenchmarkScoreboardClientParallel(b *testing.B) {
	sb := newBenchScoreboard(b, benchSlots)
	var next atomic.Int32
	sb.i32(hdrIdle).Add(1) // one idle worker more than the goroutines: no grow requests
	b.RunParallel(func(pb *testing.PB) {
		s := sb.Slot(int(next.Add(1)) % benchSlots)
		s.claim(0, 1)
		s.Idle()
		for pb.Next() {
			s.Busy()
			s.Done(false)
			s.Idle()
		}
	})
}

// BenchmarkScoreboardCounts is BusyKidsCount: a scan of every slot. The
// master runs it once a second (STATUS=) and a worker on px_idle; hooks may
// call it per client. 2052 slots is the scoreboard of the default maxfork.
func BenchmarkScoreboardCounts(b *testing.B) {
	for _, slots := range []int{benchSlots, 2*config.DefaultMaxfork + config.DefaultSpares + 2} {
		b.Run(itoa(slots)+"slots", func(b *testing.B) {
			sb := newBenchScoreboard(b, slots)
			for i := 0; i < 8; i++ {
				sb.Slot(i).claim(0, 1)
				sb.Slot(i).Idle()
			}
			for b.Loop() {
				sb.Counts()
			}
		})
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// benchServer is a Server as a worker has it, serving waiterd's greeting.
func benchServer(b *testing.B) *Server {
	b.Helper()
	l := logrus.New()
	l.Out = io.Discard
	s := &Server{
		Options: config.Default(),
		Hooks: hooks.Set{OnProcess: func(_ context.Context, c net.Conn) error {
			_, err := io.WriteString(c, "hello world\n")
			return err
		}},
		Logger: l,
	}
	s.Options.Normalize()
	s.setupLog(false)
	return s
}

// benchWorker is the serving side of benchServer on slot 0 of sb.
func benchWorker(b *testing.B, sb *scoreboard) *worker {
	s := benchServer(b)
	s.sb = sb
	return newWorker(s, s.Options, nil, s.log, sb, sb.Slot(0), nil)
}

// benchListener binds a loopback listener the way the master does (a raw,
// non-blocking fd outside the netpoller) and returns its fd and address.
func benchListener(b *testing.B) (int, unix.Sockaddr) {
	b.Helper()
	sk, err := activation.Bind("127.0.0.1:0", 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sk.Close() })
	sa, err := unix.Getsockname(sk.Fd)
	if err != nil {
		b.Fatal(err)
	}
	return sk.Fd, sa
}

// dialRaw connects to sa with blocking syscalls and leaves the connection
// in the listen queue: on loopback the handshake completes inside connect.
func dialRaw(b *testing.B, sa unix.Sockaddr) int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := unix.Connect(fd, sa); err != nil {
		b.Fatal(err)
	}
	return fd
}

// readGreeting reads to EOF on the client side, checks and closes.
func readGreeting(b *testing.B, fd int) {
	var buf [64]byte
	n := 0
	for {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			b.Fatal(err)
		}
		if m == 0 {
			break
		}
		n += m
	}
	unix.Close(fd)
	if string(buf[:n]) != "hello world\n" {
		b.Fatalf("read %q", buf[:n])
	}
}

// BenchmarkAcceptServe times one client from the listen queue to served,
// including the client's own connect and read (the same in every case), so
// that the cases compare:
//   - netListener: net.Listener.Accept, write, close: the plain Go way, the
//     floor (without the goroutine a server would start per connection);
//   - prefork: a prefork worker's path: the acceptor's epoll_wait and
//     accept4, the scoreboard, fdConn (dup into the netpoller) and serve
//     with its hooks;
//   - spare-handoff: forking mode with a spare: the master's accept and
//     SCM_RIGHTS send, the spare's receive, fdConn and serve (both sides in
//     this one goroutine).
func BenchmarkAcceptServe(b *testing.B) {
	b.Run("netListener", func(b *testing.B) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		ap := l.Addr().(*net.TCPAddr).AddrPort()
		sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
		for b.Loop() {
			cfd := dialRaw(b, sa)
			c, err := l.Accept()
			if err != nil {
				b.Fatal(err)
			}
			io.WriteString(c, "hello world\n")
			c.Close()
			readGreeting(b, cfd)
		}
	})
	b.Run("prefork", func(b *testing.B) {
		lfd, sa := benchListener(b)
		acc, err := newAcceptor([]int{lfd})
		if err != nil {
			b.Fatal(err)
		}
		defer acc.close()
		sb := newBenchScoreboard(b, benchSlots)
		w := benchWorker(b, sb)
		w.slot.claim(0, 1)
		sb.Slot(1).claim(0, 1)
		sb.Slot(1).Idle() // another idle worker: no grow requests
		w.slot.Idle()
		for b.Loop() {
			cfd := dialRaw(b, sa)
			fd, peer, err := acc.accept(time.Second)
			if err != nil {
				b.Fatal(err)
			}
			w.slot.Busy()
			_, failed := w.serveFd(fd, peer, true)
			w.slot.Done(failed)
			w.slot.Idle()
			readGreeting(b, cfd)
		}
	})
	b.Run("spare-handoff", func(b *testing.B) {
		lfd, sa := benchListener(b)
		acc, err := newAcceptor([]int{lfd})
		if err != nil {
			b.Fatal(err)
		}
		defer acc.close()
		w := benchWorker(b, newBenchScoreboard(b, benchSlots))
		for b.Loop() {
			sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			cfd := dialRaw(b, sa)
			fd, _, err := acc.accept(time.Second)
			if err != nil {
				b.Fatal(err)
			}
			if err := sendFD(sp[0], fd); err != nil {
				b.Fatal(err)
			}
			unix.Close(fd)
			unix.Close(sp[0])
			got, err := recvFD(sp[1])
			if err != nil {
				b.Fatal(err)
			}
			unix.Close(sp[1])
			w.serveFd(got, nil, false)
			readGreeting(b, cfd)
		}
	})
}

// BenchmarkSpawn is one spawn through the master's spawner (its locked
// thread, ForkExec with a pidfd and Pdeathsig) and the reap through the
// pidfd, of /bin/true rather than a worker: a worker is the test binary
// re-executed, and this package's TestMain (main_test.go) is not ours to
// give a benchmark role. The worker's own start (Go runtime, inits) comes
// on top; waiter-bench's "spawn" rows measure that with the real binary.
func BenchmarkSpawn(b *testing.B) {
	done := make(chan spawnRes, 1)
	sp := newSpawner(done)
	defer close(sp.reqs)
	// Set before the first request: the spawner reads them only then.
	sp.exe, sp.argv = "/bin/true", []string{"true"}
	for b.Loop() {
		sp.reqs <- spawnReq{env: []string{}}
		r := <-done
		if r.err != nil {
			b.Fatal(r.err)
		}
		if ws := r.wait(); !ws.Exited() || ws.ExitStatus() != 0 {
			b.Fatalf("/bin/true: %s", describeStatus(ws))
		}
	}
}
