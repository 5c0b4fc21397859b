package activation

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// DeferAccept sets and clears TCP_DEFER_ACCEPT on both kinds of TCP
// listener, leaves the socket non-blocking, and does nothing to a unix
// socket or a connected one.
func TestDeferAccept(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			l, _ := bindTCP(t, p.proto, 8)
			get := func() int {
				t.Helper()
				v, err := unix.GetsockoptInt(l.Fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			if v := get(); v != 0 {
				t.Fatalf("a new socket: TCP_DEFER_ACCEPT %d, want 0", v)
			}
			if err := l.DeferAccept(time.Second); err != nil {
				t.Fatal(err)
			}
			// The kernel keeps it as SYN-ACK retransmissions and gives
			// back the seconds they take: at least the one asked for.
			if v := get(); v < 1 {
				t.Fatalf("after DeferAccept(1s): TCP_DEFER_ACCEPT %d", v)
			}
			checkNonblock(t, l.Fd, "after DeferAccept")
			if err := l.DeferAccept(0); err != nil {
				t.Fatal(err)
			}
			if v := get(); v != 0 {
				t.Fatalf("after DeferAccept(0): TCP_DEFER_ACCEPT %d", v)
			}
		})
	}
	u, _, err := BindBacklog(t.TempDir()+"/d.sock", 0, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if err := u.DeferAccept(time.Second); err != nil {
		t.Errorf("unix: %v", err)
	}
	checkNonblock(t, u.Fd, "unix after DeferAccept")
	if err := (&Socket{Fd: -1, Listening: true}).DeferAccept(time.Second); !errors.Is(err, unix.EBADF) {
		t.Errorf("closed: want EBADF, have %v", err)
	}
}
