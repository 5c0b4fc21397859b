package activation

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// checkNonblock fails the test if fd's file description has lost O_NONBLOCK:
// the description is shared with systemd and the workers, and one blocking
// accept would stall them all.
func checkNonblock(t *testing.T, fd int, when string) {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatalf("%s: F_GETFL: %v", when, err)
	}
	if fl&unix.O_NONBLOCK == 0 {
		t.Fatalf("%s: fd %d is blocking (flags %#x)", when, fd, fl)
	}
}

// fillUnix connects to a unix socket without blocking until the kernel
// refuses, at most limit times, and returns the client fds it holds open.
func fillUnix(t *testing.T, path string, limit int) []int {
	t.Helper()
	var fds []int
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	for range limit {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if errors.Is(err, unix.EAGAIN) {
			// The accept queue is full: a blocking client would wait here.
			unix.Close(fd)
			break
		}
		if err != nil {
			unix.Close(fd)
			t.Fatalf("connect %d: %v", len(fds)+1, err)
		}
		fds = append(fds, fd)
	}
	return fds
}

// A unix socket's backlog is what BindBacklog set, not the somaxconn that
// net.Listen asked for: the kernel refuses the connect after backlog+1 wait
// (unix_recvq_full is "more than", not "as many as").
func TestBindBacklogUnix(t *testing.T) {
	for _, backlog := range []int{1, 4, 16} {
		path := t.TempDir() + "/b.sock"
		s, b, err := BindBacklog(path, 0, backlog)
		if err != nil {
			t.Fatal(err)
		}
		if b.Asked != backlog || b.Used != backlog || b.Somaxconn != Somaxconn() {
			t.Errorf("backlog %d: have %+v", backlog, b)
		}
		checkNonblock(t, s.Fd, "after BindBacklog")
		fds := fillUnix(t, path, 100)
		if want := backlog + 1; len(fds) != want {
			t.Errorf("backlog %d: want %d connects admitted, have %d", backlog, want, len(fds))
		}
		s.Close()
	}
}
