package pool

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/activation"
)

// systemd's file descriptor store keeps a socket the master bound itself
// open across a restart (sd_notify(3) FDSTORE=1): clients that connect
// while the service restarts wait in its backlog instead of being refused,
// and the next master takes it back from LISTEN_FDS instead of binding
// again. A socket from a .socket unit needs none of this.

// storedName is the FDNAME= of such a socket.
const storedName = "waiter-bound"

// fdstoreMax is how many fds systemd keeps for the service:
// FileDescriptorStoreMax=, which systemd 254 and later pass as $FDSTORE
// and waiter's generated units set as Environment=FDSTORE= for 252. 0:
// there is no store (a socket sent there would be dropped).
func fdstoreMax() int {
	n, _ := strconv.Atoi(os.Getenv("FDSTORE"))
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return 0
	}
	return max(n, 0)
}

var errNoNotify = errors.New("no NOTIFY_SOCKET")

// sdNotifyFDs is sd_pid_notify_with_fds(3): state with fds attached, which
// go-systemd's SdNotify cannot send.
func sdNotifyFDs(state string, fds []int) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return errNoNotify
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer unix.Close(s)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(s, []byte(state), oob, &unix.SockaddrUnix{Name: addr}, 0); err != nil {
		return fmt.Errorf("sd_notify %q: %w", strings.ReplaceAll(state, "\n", " "), err)
	}
	return nil
}

// splitStored takes the sockets the fd store gave back out of systemd's.
func splitStored(all []*activation.Socket) (stored, rest []*activation.Socket) {
	for _, sk := range all {
		if sk.Name == storedName {
			stored = append(stored, sk)
		} else {
			rest = append(rest, sk)
		}
	}
	return stored, rest
}

// dropStored closes sockets the store gave back that are not wanted (the
// listen address changed, or a .socket unit now passes the sockets) and
// has systemd forget them.
func (s *Server) dropStored(stored []*activation.Socket, why string) {
	if len(stored) == 0 {
		return
	}
	for _, sk := range stored {
		s.log.Infof("waiter: not serving %s from the fd store: %s", sk, why)
		sk.Close()
	}
	if err := sdNotifyFDs("FDSTOREREMOVE=1\nFDNAME="+storedName, nil); err != nil {
		s.log.Warnf("waiter: %v", err)
	}
}

// storedMatches says whether a socket from the store is the one the
// options ask to bind.
func storedMatches(sk *activation.Socket, listen string, port int) bool {
	if sk.Addr == nil || !sk.Listening {
		return false
	}
	if strings.HasPrefix(listen, "/") || strings.HasPrefix(listen, "@") {
		a, ok := sk.Addr.(*net.UnixAddr)
		return ok && (a.Name == listen || "@"+strings.TrimPrefix(a.Name, "@") == listen)
	}
	if listen == "" {
		listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	want, err := net.ResolveTCPAddr("tcp", listen)
	have, ok := sk.Addr.(*net.TCPAddr)
	if err != nil || !ok {
		return false
	}
	return (want.Port == 0 || want.Port == have.Port) && (want.IP == nil && have.IP.IsUnspecified() || want.IP.Equal(have.IP))
}

// store hands the sockets this master bound to systemd's fd store, when
// there is one.
func (s *Server) store(socks []*activation.Socket) bool {
	if fdstoreMax() < len(socks) || len(socks) == 0 {
		return false
	}
	for _, sk := range socks {
		if _, ok := sk.Addr.(*net.TCPAddr); !ok {
			// A unix socket's file is removed at the stop: the stored
			// socket would outlive its name. Not stored.
			return false
		}
	}
	fds := make([]int, len(socks))
	for i, sk := range socks {
		fds[i] = sk.Fd
	}
	if err := sdNotifyFDs("FDSTORE=1\nFDNAME="+storedName, fds); err != nil {
		s.log.Warnf("waiter: keeping the listener in systemd's fd store: %v", err)
		return false
	}
	s.log.Infof("waiter: %s kept in systemd's fd store: a restart refuses no client", socks[0])
	return true
}
