// Package activation finds the sockets a waiter server serves: those systemd
// passes (socket activation, sd_listen_fds(3)) or, when there are none, one
// it binds itself.
//
// Sockets are kept as raw, non-blocking, close-on-exec file descriptors and
// are never wrapped in a net.Listener in the process that owns them: a
// net.Listener registers the socket in Go's netpoller, which would wake the
// master on every connection that its workers accept, and handing a child
// (*net.TCPListener).File() flips the shared socket to blocking mode.
//
// The environment is parsed here rather than with go-systemd's activation
// package because that one drops per-fd errors, cannot say which variable was
// wrong, and wraps every fd in an *os.File (which registers it in the
// netpoller). The rules are those of sd_listen_fds(3): LISTEN_PID must be
// this process, fds start at 3, LISTEN_FDNAMES has one name per fd, and the
// variables are removed once read so that no child mistakes them for its own.
//
// Inherited sockets are shared with PID 1: they are closed, never shutdown().
package activation
