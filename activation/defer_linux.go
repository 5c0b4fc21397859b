package activation

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// DeferAccept sets TCP_DEFER_ACCEPT on a listening TCP socket: the kernel
// hands a connection to accept(2) only once its first bytes have arrived,
// or after d (rounded up to whole seconds; the kernel counts it in SYN-ACK
// retransmissions, so it may be a little longer). 0 turns it off. It is for
// protocols where the client speaks first, as a PROXY protocol balancer
// always does: the process that accepts finds the header already there
// instead of sleeping until it comes, and a client that connects and says
// nothing costs no process until d has passed. It does nothing, and
// returns nil, for a unix socket or a connected one.
//
// The option belongs to the socket, so on one inherited from systemd it
// stays after this process: a socket unit's DeferAcceptSec= sets the same.
func (s *Socket) DeferAccept(d time.Duration) error {
	if s == nil || s.Fd < 0 {
		return fmt.Errorf("activation: TCP_DEFER_ACCEPT on a closed socket: %w", unix.EBADF)
	}
	if !s.Listening {
		return nil
	}
	domain, err := unix.GetsockoptInt(s.Fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return fmt.Errorf("activation: %v: SO_DOMAIN: %w", s, err)
	}
	if domain != unix.AF_INET && domain != unix.AF_INET6 {
		return nil
	}
	secs := int((d + time.Second - 1) / time.Second)
	if err := unix.SetsockoptInt(s.Fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs); err != nil {
		return fmt.Errorf("activation: %v: TCP_DEFER_ACCEPT %ds: %w", s, secs, err)
	}
	return nil
}
