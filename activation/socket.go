package activation

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Socket is one socket a server was given or bound.
type Socket struct {
	// Fd is the raw descriptor: non-blocking and close-on-exec.
	Fd int
	// Name is the LISTEN_FDNAMES name (systemd's FileDescriptorName=),
	// DefaultName for an fd that systemd or FromFd was given no name for,
	// or "listen" for a socket waiter bound itself: FromEnv, FromFd and
	// Bind never leave it empty nor put ':' in it, and CheckNames refuses a
	// Socket built otherwise that has. Several sockets may share a name,
	// as the fds of one systemd socket unit do.
	Name string
	// Addr is the local address.
	Addr net.Addr
	// Listening is false for a connected socket (systemd's Accept=yes): that
	// one client is served and the process exits.
	Listening bool
	// Inherited is true for a socket from systemd, which also holds it.
	Inherited bool
	// path is a unix socket file this process created and must remove.
	path string
}

// Close closes the descriptor. It never calls shutdown(2): an inherited socket
// is shared with PID 1 and shutdown would stop it for systemd too.
func (s *Socket) Close() error {
	if s == nil || s.Fd < 0 {
		return nil
	}
	err := unix.Close(s.Fd)
	s.Fd = -1
	if s.path != "" {
		os.Remove(s.path)
	}
	return err
}

func (s *Socket) String() string {
	a := "?"
	if s.Addr != nil {
		a = s.Addr.String()
	}
	return fmt.Sprintf("%s(%s fd %d)", s.Name, a, s.Fd)
}

// DefaultName is the name of a socket given none, as systemd names an fd
// that LISTEN_FDNAMES does not (sd_listen_fds_with_names(3)).
const DefaultName = "unknown"

// NameError is a socket CheckNames refuses, or a name FromFd refuses.
type NameError struct {
	Index  int // in the list given to CheckNames; -1 from FromFd
	Fd     int
	Name   string
	Reason string
}

func (e *NameError) Error() string {
	if e.Index < 0 {
		return fmt.Sprintf("activation: fd %d: name %q: %s", e.Fd, e.Name, e.Reason)
	}
	return fmt.Sprintf("activation: socket %d (fd %d, name %q): %s", e.Index, e.Fd, e.Name, e.Reason)
}

// nameProblem says what is wrong with a socket name, or "" if nothing is.
// The rules are systemd's for FileDescriptorName= where they matter to
// waiter: ':' separates names in LISTEN_FDNAMES (and in what a pool passes
// its workers), and a control character (NUL above all, which no environment
// variable can hold) would break that variable or a log line. Unlike
// systemd, waiter refuses the empty name: an empty entry vanishes when such a
// list is split, and with it the socket.
func nameProblem(name string) string {
	if name == "" {
		return "empty name: give the socket a name (FromFd and FromEnv name an unnamed one " + strconv.Quote(DefaultName) + ")"
	}
	for _, r := range name {
		if r == ':' {
			return "a name must not contain ':', the separator of LISTEN_FDNAMES (systemd refuses it in FileDescriptorName= too)"
		}
		if r < ' ' || r == 0x7f {
			return fmt.Sprintf("a name must not contain control characters (%q)", r)
		}
	}
	return ""
}

// CheckNames refuses, naming the socket by its index, fd and name, a list of
// sockets a server could not pass on to its workers intact: a nil or closed
// socket, an empty name, a name with ':' or a control character, or one fd
// listed twice. Sockets may share a name: systemd gives every fd of one
// socket unit the same FileDescriptorName= (by default the unit's name), and
// Pick returns them all.
func CheckNames(socks []*Socket) error {
	seen := make(map[int]int, len(socks))
	for i, s := range socks {
		if s == nil {
			return &NameError{Index: i, Fd: -1, Reason: "nil socket"}
		}
		if s.Fd < 0 {
			return &NameError{Index: i, Fd: s.Fd, Name: s.Name, Reason: "closed socket"}
		}
		if p := nameProblem(s.Name); p != "" {
			return &NameError{Index: i, Fd: s.Fd, Name: s.Name, Reason: p}
		}
		if j, dup := seen[s.Fd]; dup {
			return &NameError{Index: i, Fd: s.Fd, Name: s.Name, Reason: fmt.Sprintf("the same fd as socket %d (%s)", j, socks[j].Name)}
		}
		seen[s.Fd] = i
	}
	return nil
}

// FromFd wraps a socket fd the program already holds (for example one passed
// by a supervisor other than systemd). It must be a stream socket; it is made
// close-on-exec and non-blocking, and the Socket owns it from now on. An
// empty name becomes DefaultName; a name CheckNames would refuse is refused
// with a *NameError, and the fd stays the caller's.
func FromFd(fd int, name string) (*Socket, error) {
	if name == "" {
		name = DefaultName
	}
	if p := nameProblem(name); p != "" {
		return nil, &NameError{Index: -1, Fd: fd, Name: name, Reason: p}
	}
	s, err := inspect(fd, name)
	if err != nil {
		return nil, fmt.Errorf("activation: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("activation: fd %d: set non-blocking: %w", fd, err)
	}
	return s, nil
}

// ErrAddrInUse is wrapped when the address to bind is taken.
var ErrAddrInUse = errors.New("activation: address already in use")

// inspect fills Addr and Listening for an fd and checks that it is a stream
// socket.
func inspect(fd int, name string) (*Socket, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fd %d is not open: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("fd %d (%s) is not a socket", fd, name)
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("fd %d (%s): SO_TYPE: %w", fd, name, err)
	}
	if typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("fd %d (%s) is not a stream socket (SO_TYPE %d): waiter serves ListenStream= sockets only", fd, name, typ)
	}
	acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return nil, fmt.Errorf("fd %d (%s): SO_ACCEPTCONN: %w", fd, name, err)
	}
	s := &Socket{Fd: fd, Name: name, Listening: acc == 1}
	if sa, err := unix.Getsockname(fd); err == nil {
		s.Addr = SockaddrToAddr(sa)
	}
	return s, nil
}

// SockaddrToAddr converts a raw socket address (from accept(2) or
// getsockname(2)); nil for a family waiter does not serve.
func SockaddrToAddr(sa unix.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]).To16(), Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	case *unix.SockaddrUnix:
		return &net.UnixAddr{Name: a.Name, Net: "unix"}
	}
	return nil
}

// Bind opens a listening socket on listen ("host:port", "[v6]:port", or a unix
// socket path starting with / or @) or, when listen is empty, on
// 127.0.0.1:port. A stale unix socket file (no one listening) is replaced.
// Its backlog is net.core.somaxconn, as BindBacklog's with backlog 0.
func Bind(listen string, port int) (*Socket, error) {
	s, _, err := BindBacklog(listen, port, 0)
	return s, err
}

// BindBacklog is Bind with the length of the accept queue: backlog
// connections that completed their handshake may wait there for accept(2)
// (the kernel admits one more). A backlog of 0 or less asks for the most,
// net.core.somaxconn; a larger one is cut to it, which the kernel does
// without a word, so the Backlog returned says what was asked and what is
// used, for the caller to warn. The Backlog is filled in on error too.
func BindBacklog(listen string, port, backlog int) (*Socket, Backlog, error) {
	b := newBacklog(backlog, Somaxconn())
	network, addr := "tcp", listen
	if listen == "" {
		addr = net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	} else if strings.HasPrefix(listen, "/") || strings.HasPrefix(listen, "@") {
		network = "unix"
		if strings.HasPrefix(listen, "/") {
			removeStale(listen)
		}
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, b, fmt.Errorf("%w: %s", ErrAddrInUse, addr)
		}
		return nil, b, fmt.Errorf("activation: listen on %s: %w", addr, err)
	}
	if ul, ok := l.(*net.UnixListener); ok {
		// We remove the file ourselves in Close, from the master only.
		ul.SetUnlinkOnClose(false)
	}
	// Take a raw copy and close the net.Listener, which takes the socket out
	// of this process's netpoller (see the package doc).
	fd, err := dupRaw(l.(syscall.Conn))
	l.Close()
	if err != nil {
		return nil, b, fmt.Errorf("activation: listen on %s: %w", addr, err)
	}
	s, err := inspect(fd, "listen")
	if err != nil {
		unix.Close(fd)
		return nil, b, err
	}
	if network == "unix" && strings.HasPrefix(listen, "/") {
		s.path = listen
	}
	// net.Listen takes no backlog: it asks for somaxconn. listen(2) on a
	// socket that already listens only sets its backlog (inet_listen,
	// unix_listen and MPTCP's, which Go uses for "tcp" where the kernel has
	// it; the tests check all three). A client that connects before this
	// line is kept, even past the smaller backlog.
	if err := unix.Listen(fd, b.Used); err != nil {
		s.Close()
		return nil, b, fmt.Errorf("activation: listen on %s: set backlog %d: %w", addr, b.Used, err)
	}
	return s, b, nil
}

// dupRaw returns a close-on-exec, non-blocking duplicate of c's descriptor,
// without calling Fd() (which would make the shared description blocking).
func dupRaw(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 3)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	return nfd, nil
}

func removeStale(path string) {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close() // someone listens: let Listen fail with "in use"
		return
	}
	os.Remove(path)
}

// Pick returns the sockets whose names are in names, in that order, each
// once; an empty names returns all. A name that matches nothing is an error,
// and so is an empty name: no socket has one (an unnamed socket is
// DefaultName), and "" is what an empty list split on ':' or ',' leaves.
func Pick(all []*Socket, names ...string) ([]*Socket, error) {
	if len(names) == 0 {
		return all, nil
	}
	var out []*Socket
	for i, n := range names {
		if n == "" {
			return nil, fmt.Errorf("activation: socket name %d of %d is empty: name a socket by its FileDescriptorName= (an unnamed one is %q), or give no names to serve all", i+1, len(names), DefaultName)
		}
		found := false
		for _, s := range all {
			if s.Name == n {
				found = true
				if !slices.Contains(out, s) {
					out = append(out, s)
				}
			}
		}
		if !found {
			var have []string
			for _, s := range all {
				have = append(have, s.Name)
			}
			return nil, fmt.Errorf("activation: no socket named %q (have %s)", n, strings.Join(have, ", "))
		}
	}
	return out, nil
}
