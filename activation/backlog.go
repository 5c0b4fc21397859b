package activation

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Backlog is the length of a listening socket's accept queue: what was
// asked, and what the kernel lets it have.
type Backlog struct {
	// Asked is the backlog the caller asked for; 0 or less asks for the
	// most the kernel grants.
	Asked int
	// Somaxconn is net.core.somaxconn when the socket was bound (see
	// Somaxconn).
	Somaxconn int
	// Used is the backlog given to listen(2): Asked when 0 < Asked <=
	// Somaxconn, else Somaxconn. Used < Asked means the kernel would have cut
	// Asked down without telling anyone: a caller should warn.
	Used int
}

func newBacklog(asked, somaxconn int) Backlog {
	b := Backlog{Asked: asked, Somaxconn: somaxconn, Used: somaxconn}
	if asked > 0 && asked <= somaxconn {
		b.Used = asked
	}
	return b
}

// somaxconnPath is net.core.somaxconn. Like all of /proc/sys/net it is that
// of the network namespace of the process that reads it, which is where
// Bind creates its sockets.
const somaxconnPath = "/proc/sys/net/core/somaxconn"

// defaultSomaxconn is what Somaxconn says when it cannot read the sysctl:
// the kernel's default since Linux 5.4 (it was 128 before).
const defaultSomaxconn = 4096

// Somaxconn returns net.core.somaxconn, the largest backlog listen(2)
// grants in this process's network namespace (a container may have its
// own), read from /proc/sys/net/core/somaxconn at each call. When that
// cannot be read (no /proc mounted, or not Linux) it returns
// defaultSomaxconn, which may then not be the kernel's real limit: the
// error is not returned because there is nothing better to use in its
// place.
func Somaxconn() int {
	b, err := os.ReadFile(somaxconnPath)
	if err != nil {
		return defaultSomaxconn
	}
	n, err := parseSomaxconn(b)
	if err != nil {
		return defaultSomaxconn
	}
	return n
}

// parseSomaxconn reads the sysctl's text: one non-negative int and a
// newline.
func parseSomaxconn(b []byte) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("activation: %s: %w", somaxconnPath, err)
	}
	if n < 0 {
		return 0, fmt.Errorf("activation: %s: negative value %d", somaxconnPath, n)
	}
	return n, nil
}

// SetBacklog sets the accept queue's length of a socket that listens
// already, as BindBacklog does for the one it binds (listen(2) again only
// sets the backlog): for a socket kept from an earlier start, whose backlog
// the options may have changed since.
func (s *Socket) SetBacklog(backlog int) (Backlog, error) {
	b := newBacklog(backlog, Somaxconn())
	if s == nil || s.Fd < 0 || !s.Listening {
		return b, fmt.Errorf("activation: set backlog %d: not a listening socket", b.Used)
	}
	if err := unix.Listen(s.Fd, b.Used); err != nil {
		return b, fmt.Errorf("activation: %v: set backlog %d: %w", s, b.Used, err)
	}
	return b, nil
}
