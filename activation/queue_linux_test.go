package activation

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// protocols are the two kinds of socket net.Listen("tcp") makes: MPTCP
// where the kernel has it (Go's default since go1.24) and plain TCP
// (GODEBUG=multipathtcp=0, or a kernel without MPTCP).
var protocols = []struct {
	name  string
	proto int
}{
	{"tcp", unix.IPPROTO_TCP},
	{"mptcp", unix.IPPROTO_MPTCP},
}

// bindTCP binds 127.0.0.1:0 with backlog as a socket of protocol proto, or
// skips the test when the kernel cannot make one.
func bindTCP(t *testing.T, proto, backlog int) (*Socket, Backlog) {
	t.Helper()
	if proto == unix.IPPROTO_TCP {
		// net reads GODEBUG again at each Listen, and t.Setenv restores it.
		godebug := "multipathtcp=0"
		if old := os.Getenv("GODEBUG"); old != "" {
			godebug = old + "," + godebug
		}
		t.Setenv("GODEBUG", godebug)
	}
	s, b, err := BindBacklog("127.0.0.1:0", 0, backlog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	have, err := unix.GetsockoptInt(s.Fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	if have != proto {
		if proto == unix.IPPROTO_MPTCP {
			t.Skipf("net.Listen made protocol %d, not MPTCP: the kernel has no MPTCP", have)
		}
		t.Fatalf("want protocol %d, have %d", proto, have)
	}
	return s, b
}

// waitQueue polls s's accept queue until its length is want or a second
// has passed, and returns the last length and the largest seen.
func waitQueue(t *testing.T, s *Socket, want int64) (last, most int64) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		n, _, err := s.Queue()
		if err != nil {
			t.Fatal(err)
		}
		most = max(most, n)
		if n == want || time.Now().After(deadline) {
			return n, most
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// acceptN accepts n connections from the non-blocking listener fd, waiting
// at most two seconds, and returns their fds, closed when the test ends.
func acceptN(t *testing.T, fd, n int) []int {
	t.Helper()
	var fds []int
	t.Cleanup(func() {
		for _, c := range fds {
			unix.Close(c)
		}
	})
	deadline := time.Now().Add(2 * time.Second)
	for len(fds) < n && time.Now().Before(deadline) {
		c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
			fds = append(fds, c)
		case errors.Is(err, unix.EAGAIN):
			unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 100)
		case errors.Is(err, unix.EINTR):
		default:
			t.Fatalf("accept %d: %v", len(fds)+1, err)
		}
	}
	if len(fds) != n {
		t.Fatalf("want %d connections accepted, have %d", n, len(fds))
	}
	return fds
}

// Queue's max is the backlog BindBacklog set, not the somaxconn net.Listen
// asked for (16 shows the second listen(2) took), and one too large is cut
// to somaxconn and said to be.
func TestQueueMax(t *testing.T) {
	somax := Somaxconn()
	for _, p := range protocols {
		for _, tc := range []struct {
			name  string
			asked int
			used  int
		}{
			{"zero", 0, somax},
			{"16", 16, 16},
			// The kernel would cut it without a word.
			{"too large", somax + 1000, somax},
		} {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				s, b := bindTCP(t, p.proto, tc.asked)
				want := Backlog{Asked: tc.asked, Somaxconn: somax, Used: tc.used}
				if b != want {
					t.Errorf("want %+v, have %+v", want, b)
				}
				n, m, err := s.Queue()
				if err != nil {
					t.Fatal(err)
				}
				if n != 0 || m != int64(tc.used) {
					t.Errorf("want queue 0 of %d, have %d of %d", tc.used, n, m)
				}
				checkNonblock(t, s.Fd, "after Queue")
			})
		}
	}
}

// Connections nobody accepts are counted in the queue, and leave it when
// accepted.
func TestQueueLength(t *testing.T) {
	const clients = 5
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			s, _ := bindTCP(t, p.proto, 16)
			for i := range clients {
				c, err := net.DialTimeout("tcp", s.Addr.String(), 2*time.Second)
				if err != nil {
					t.Fatalf("client %d: %v", i, err)
				}
				defer c.Close()
			}
			// A client's connect returns on the SYN-ACK; the connection joins
			// the queue when the server takes the last ACK, a moment later.
			if n, _ := waitQueue(t, s, clients); n != clients {
				t.Fatalf("want %d queued, have %d", clients, n)
			}
			acceptN(t, s.Fd, clients)
			n, m, err := s.Queue()
			if err != nil {
				t.Fatal(err)
			}
			if n != 0 || m != 16 {
				t.Fatalf("after accepting all: want queue 0 of 16, have %d of %d", n, m)
			}
			checkNonblock(t, s.Fd, "after Queue and accept")
		})
	}
}

// Only a listening TCP socket has a queue to report; a closed one is an
// error.
func TestQueueOthers(t *testing.T) {
	u, _, err := BindBacklog(t.TempDir()+"/q.sock", 0, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	l, _ := bindTCP(t, unix.IPPROTO_TCP, 8)
	c, err := net.DialTimeout("tcp", l.Addr.String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn := acceptN(t, l.Fd, 1)[0]
	for _, tc := range []struct {
		name string
		s    *Socket
	}{
		{"unix", u},
		// A connection's TCP_INFO counts segments in the same fields.
		{"connected tcp", &Socket{Fd: conn}},
	} {
		n, m, err := tc.s.Queue()
		if n != -1 || m != -1 || err != nil {
			t.Errorf("%s: want -1, -1, nil; have %d, %d, %v", tc.name, n, m, err)
		}
	}
	checkNonblock(t, u.Fd, "unix after Queue")
	closed := &Socket{Fd: -1}
	if _, _, err := closed.Queue(); !errors.Is(err, unix.EBADF) {
		t.Errorf("closed: want EBADF, have %v", err)
	}
}

// Why Backlog is reported: listen(2) with more than somaxconn succeeds and
// quietly grants somaxconn.
func TestKernelCapsBacklog(t *testing.T) {
	s, _ := bindTCP(t, unix.IPPROTO_TCP, 16)
	if err := unix.Listen(s.Fd, Somaxconn()+1000); err != nil {
		t.Fatalf("listen above somaxconn: %v", err)
	}
	if _, m, err := s.Queue(); err != nil || m != int64(Somaxconn()) {
		t.Fatalf("want max %d, have %d, %v", Somaxconn(), m, err)
	}
}

// The second listen(2) is what the kernel enforces, not just what TCP_INFO
// reports: with backlog 4, forty clients that nobody accepts leave at most
// 4+1 in the queue (sk_acceptq_is_full is "more than"), and the rest are
// dropped and counted in ListenOverflows.
func TestBacklogEnforced(t *testing.T) {
	const backlog, clients = 4, 40
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			s, _ := bindTCP(t, p.proto, backlog)
			before, err := ListenOverflows()
			if err != nil {
				t.Fatal(err)
			}
			port := s.Addr.(*net.TCPAddr).Port
			var most int64
			for i := range clients {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer unix.Close(fd)
				err = unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
				if err != nil && !errors.Is(err, unix.EINPROGRESS) {
					t.Fatalf("client %d: %v", i, err)
				}
				n, _, err := s.Queue()
				if err != nil {
					t.Fatal(err)
				}
				most = max(most, n)
			}
			n, m := waitQueue(t, s, backlog+1)
			most = max(most, m)
			if n != backlog+1 || most != backlog+1 {
				t.Errorf("want the queue full at %d, have %d (at most %d)", backlog+1, n, most)
			}
			// The counter is the namespace's: others may add to it, never
			// take from it, so only a rise of at least one is ours to assert.
			var after uint64
			deadline := time.Now().Add(2 * time.Second)
			for {
				if after, err = ListenOverflows(); err != nil {
					t.Fatal(err)
				}
				if after > before || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if after <= before {
				t.Errorf("ListenOverflows did not grow: %d before, %d after", before, after)
			}
			t.Logf("ListenOverflows +%d for %d clients beyond the queue", after-before, clients-backlog-1)
			checkNonblock(t, s.Fd, "after the flood")
		})
	}
}
