package pool_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/activation"
	"github.com/waiter-go/waiter/config"
)

// fdNotify is a NOTIFY_SOCKET that keeps the fds sent with FDSTORE=1, as
// systemd's fd store does.
type fdNotify struct {
	path string
	mu   sync.Mutex
	msgs []string
	fds  []int
}

func newFDNotify(t *testing.T) *fdNotify {
	t.Helper()
	n := &fdNotify{path: filepath.Join(t.TempDir(), "notify")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		n.mu.Lock()
		for _, fd := range n.fds {
			unix.Close(fd)
		}
		n.mu.Unlock()
	})
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*8))
		for {
			k, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			var fds []int
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range msgs {
					if f, err := unix.ParseUnixRights(&m); err == nil {
						fds = append(fds, f...)
					}
				}
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.fds = append(n.fds, fds...)
			n.mu.Unlock()
		}
	}()
	return n
}

func (n *fdNotify) stored() (msg string, fds []int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.msgs {
		if strings.Contains(m, "FDSTORE=1") {
			msg = m
		}
	}
	return msg, append([]int(nil), n.fds...)
}

// A self-bound socket survives a restart in the fd store: the next master
// takes it from LISTEN_FDS, and clients that came meanwhile wait in its
// backlog; none is refused.
func TestFDStoreKeepsTheSelfBoundSocketAcrossARestart(t *testing.T) {
	addr := freeAddr(t)
	ns := newFDNotify(t)
	o := prefork(2, 4, func(o *config.Options) { o.Listen = addr })
	p1 := startWith(t, o, nil, "NOTIFY_SOCKET="+ns.path, "FDSTORE=4")
	talkRetry(t, addr, "hello")
	var msg string
	var fds []int
	eventually(t, 5*time.Second, "FDSTORE=1 with the listener", func() bool {
		msg, fds = ns.stored()
		return msg != "" && len(fds) == 1
	})
	if !strings.Contains(msg, "FDNAME=waiter-bound") {
		t.Fatalf("the store message: %q", msg)
	}
	if sa, err := unix.Getsockname(fds[0]); err != nil || sa.(*unix.SockaddrInet4).Port != addrPortOf(t, addr) {
		t.Fatalf("the stored fd is not the listener on %s: %v %v", addr, sa, err)
	}
	// Steady load through two restarts.
	var served, refused, other atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				s, err := talkWithin(addr, "hello", 20*time.Second)
				switch {
				case err == nil && s == "hello world\n":
					served.Add(1)
				case errors.Is(err, syscall.ECONNREFUSED):
					refused.Add(1)
				default:
					other.Add(1)
				}
			}
		}()
	}
	prev := p1
	for round := 0; round < 2; round++ {
		time.Sleep(300 * time.Millisecond)
		prev.signal(syscall.SIGTERM)
		if code := prev.wait(20 * time.Second); code != 0 {
			t.Fatalf("round %d: exit %d", round, code)
		}
		time.Sleep(300 * time.Millisecond) // no master: clients queue in the stored socket
		prev = restartFromStore(t, o, ns, fds[0])
		eventually(t, 10*time.Second, "the next master serving the stored socket", func() bool {
			return strings.Contains(prev.stderr.String(), "from systemd's fd store")
		})
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("two restarts under load: %d served, %d refused, %d other failures", served.Load(), refused.Load(), other.Load())
	if refused.Load() != 0 || other.Load() != 0 || served.Load() == 0 {
		t.Fatalf("want every client served across the restarts: %d served, %d refused, %d failed", served.Load(), refused.Load(), other.Load())
	}
	if strings.Contains(prev.stderr.String(), "FDSTORE") || strings.Contains(prev.stderr.String(), "kept in systemd's fd store") {
		t.Fatalf("the restarted master stored again:\n%s", prev.stderr.String())
	}
}

// restartFromStore starts a master as systemd would after a restart: the
// stored fd as fd 3, named waiter-bound, with LISTEN_PID its own pid (a
// shell that sets it and execs).
func restartFromStore(t *testing.T, o config.Options, ns *fdNotify, fds ...int) *proc {
	t.Helper()
	var files []*os.File
	var names []string
	for _, fd := range fds {
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(d), "stored")
		defer f.Close()
		files = append(files, f)
		names = append(names, "waiter-bound")
	}
	p := newProc(t)
	p.cmd = exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" -test.run='^$'`, os.Args[0])
	p.cmd.Env = append(os.Environ(), p.scenarioEnv(o)...)
	p.cmd.Env = append(p.cmd.Env, "NOTIFY_SOCKET="+ns.path, "FDSTORE=4",
		fmt.Sprintf("LISTEN_FDS=%d", len(fds)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	p.cmd.ExtraFiles = files
	p.launch()
	return p
}

// heldListener is a listener on 127.0.0.1 that the test keeps a copy of,
// to hand to a master as a stored socket and to look at after: its
// address and the copy's fd, both closed at the test's end.
func heldListener(t *testing.T) (string, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lf.Close() })
	return ln.Addr().String(), int(lf.Fd())
}

// Two sockets under waiter's name in the store (the matching one second):
// the one the options ask for is served, with the options' backlog, the
// other dropped, and the kept one stored again after the FDSTOREREMOVE
// (which takes every fd of the name).
func TestFDStoreKeepsTheMatchingOneOfTwo(t *testing.T) {
	var addrs []string
	var fds []int
	for i := 0; i < 2; i++ {
		a, fd := heldListener(t)
		addrs, fds = append(addrs, a), append(fds, fd)
	}
	addr := addrs[1]
	ns := newFDNotify(t)
	o := prefork(1, 1, func(o *config.Options) { o.Listen, o.Backlog = addr, 16 })
	p := restartFromStore(t, o, ns, fds...)
	talkRetry(t, addr, "hello")
	eventually(t, 5*time.Second, "FDSTOREREMOVE=1, then FDSTORE=1 with the kept socket", func() bool {
		ns.mu.Lock()
		defer ns.mu.Unlock()
		removed := false
		for _, m := range ns.msgs {
			if strings.Contains(m, "FDSTOREREMOVE=1") {
				removed = true
			}
			if removed && strings.Contains(m, "FDSTORE=1") && len(ns.fds) == 1 {
				return true
			}
		}
		return false
	})
	ns.mu.Lock()
	sa, err := unix.Getsockname(ns.fds[0])
	ns.mu.Unlock()
	if err != nil || sa.(*unix.SockaddrInet4).Port != addrPortOf(t, addr) {
		t.Fatalf("stored again: %v %v, want the listener on %s", sa, err, addr)
	}
	_, max, err := (&activation.Socket{Fd: fds[1], Listening: true}).Queue()
	if err != nil || max != 16 {
		t.Fatalf("the kept socket's backlog: %d %v, want the options' 16", max, err)
	}
	if !strings.Contains(p.stderr.String(), "listen backlog 16") {
		t.Fatalf("the backlog is not logged:\n%s", p.stderr.String())
	}
}

func addrPortOf(t *testing.T, addr string) int {
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return a.Port
}

// A stored socket for another address is dropped (FDSTOREREMOVE=1) and the
// configured one bound.
func TestFDStoreDropsAStaleSocket(t *testing.T) {
	old := freeAddr(t)
	ln, err := net.Listen("tcp", old)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lf, _ := ln.(*net.TCPListener).File()
	defer lf.Close()
	ns := newFDNotify(t)
	addr := freeAddr(t)
	o := prefork(1, 1, func(o *config.Options) { o.Listen = addr })
	p := restartFromStore(t, o, ns, int(lf.Fd()))
	talkRetry(t, addr, "hello")
	eventually(t, 5*time.Second, "FDSTOREREMOVE=1 for the old socket", func() bool {
		ns.mu.Lock()
		defer ns.mu.Unlock()
		for _, m := range ns.msgs {
			if strings.Contains(m, "FDSTOREREMOVE=1") && strings.Contains(m, "FDNAME=waiter-bound") {
				return true
			}
		}
		return false
	})
	if !strings.Contains(p.stderr.String(), "not serving") {
		t.Fatalf("the drop is not logged:\n%s", p.stderr.String())
	}
}

// defer_accept and proxy_protocol set TCP_DEFER_ACCEPT on the listener
// (here one the test holds a copy of, passed as a stored socket); with both
// off it is left alone.
func TestDeferAcceptOnTheListener(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*config.Options)
		on   bool
	}{
		{"defer_accept", func(o *config.Options) { o.DeferAccept = true }, true},
		{"proxy_protocol", func(o *config.Options) { o.ProxyProtocol = true }, true},
		{"neither", func(o *config.Options) {}, false},
		// The last master set it (proxy_protocol was on), the options now
		// ask for neither: a stored socket is ours, and it is cleared.
		{"neither, set before", func(o *config.Options) {}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, fd := heldListener(t)
			if strings.HasSuffix(tc.name, "set before") {
				if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 1); err != nil {
					t.Fatal(err)
				}
			}
			o := prefork(1, 1, func(o *config.Options) { o.Listen = addr; tc.mut(o) })
			p := restartFromStore(t, o, newFDNotify(t), fd)
			eventually(t, 10*time.Second, "serving", func() bool {
				return strings.Contains(p.stderr.String(), "from systemd's fd store")
			})
			if tc.name != "proxy_protocol" {
				talkRetry(t, addr, "hello") // a client that speaks first is served
			}
			get := func() int {
				v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			if tc.on {
				eventually(t, 5*time.Second, "TCP_DEFER_ACCEPT set", func() bool { return get() > 0 })
			} else {
				eventually(t, 5*time.Second, "TCP_DEFER_ACCEPT off", func() bool { return get() == 0 })
			}
		})
	}
}
