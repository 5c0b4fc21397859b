package activation

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// tcpListen is TCP_LISTEN of include/net/tcp_states.h, which x/sys/unix
// names only as BPF_TCP_LISTEN (the kernel keeps the two equal).
const tcpListen = 10

// Queue reports a listening TCP socket's accept queue: length is the number
// of connections that completed their handshake and wait for accept(2),
// max the backlog (the kernel admits max+1 before it drops handshakes and
// counts ListenOverflows). For a unix socket, a connected one, or anything
// else that is not a listening TCP socket it returns -1, -1, nil: those
// have no TCP_INFO to ask.
//
// Queue only reads (getsockopt), so it is safe on a socket shared with
// systemd and the workers: it leaves the socket non-blocking and listening.
func (s *Socket) Queue() (length, max int64, err error) {
	if s == nil || s.Fd < 0 {
		return -1, -1, fmt.Errorf("activation: accept queue of a closed socket: %w", unix.EBADF)
	}
	domain, err := unix.GetsockoptInt(s.Fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return -1, -1, fmt.Errorf("activation: %v: SO_DOMAIN: %w", s, err)
	}
	if domain != unix.AF_INET && domain != unix.AF_INET6 {
		return -1, -1, nil
	}
	proto, err := unix.GetsockoptInt(s.Fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		return -1, -1, fmt.Errorf("activation: %v: SO_PROTOCOL: %w", s, err)
	}
	// Go's net.Listen("tcp") makes an MPTCP socket where the kernel has
	// MPTCP (go1.24 and later); its TCP_INFO is that of the listening TCP
	// subflow, which holds the accept queue. SCTP would answer TCP_INFO
	// with an error.
	if proto != unix.IPPROTO_TCP && proto != unix.IPPROTO_MPTCP {
		return -1, -1, nil
	}
	info, err := unix.GetsockoptTCPInfo(s.Fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return -1, -1, fmt.Errorf("activation: %v: TCP_INFO: %w", s, err)
	}
	// Only in TCP_LISTEN do these two fields mean the accept queue
	// (tcp_get_info); on a connection they count segments.
	if info.State != tcpListen {
		return -1, -1, nil
	}
	return int64(info.Unacked), int64(info.Sacked), nil
}
