package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/waiter-go/waiter/control"
)

// failure is an error with the exit status it gives.
type failure struct {
	code  int
	err   error
	usage bool // run follows it with the short usage
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

func usageError(format string, args ...any) error {
	return &failure{code: exitUsage, err: fmt.Errorf(format, args...), usage: true}
}

func answeredNo(format string, args ...any) error {
	return &failure{code: exitNo, err: fmt.Errorf(format, args...)}
}

// brokeReply is an OK reply that lacks what was asked for: the protocol
// broke, as a transport does.
func brokeReply(path, what string) error {
	return &failure{code: exitSocket, err: fmt.Errorf("control socket %s: %s", path, what)}
}

// dial connects to the control socket; a failure says why in the
// operator's terms.
func dial(path string, timeout time.Duration) (*control.Client, error) {
	c, err := control.Dial(path, timeout)
	if err != nil {
		return nil, &failure{code: exitSocket, err: unreachable(path, err)}
	}
	return c, nil
}

// unreachable names the socket and the cause of a failed connect, with a
// hint at the usual reason for it.
func unreachable(path string, err error) error {
	cause := err.Error()
	var errno syscall.Errno
	if errors.As(err, &errno) {
		cause = errno.Error()
	}
	hint := ""
	switch {
	case errors.Is(err, syscall.ENOENT):
		hint = " (is the master running, with its control socket on? -s or $WAITER_CONTROL names another)"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		hint = " (only the master's user and root may use it)"
	case errors.Is(err, syscall.ECONNREFUSED):
		// Linux refuses a connect to any file that is not a socket: say
		// which it is rather than "connection refused".
		if fi, serr := os.Stat(path); serr == nil && fi.Mode()&os.ModeSocket == 0 {
			cause = "not a socket"
			if fi.Mode().IsRegular() {
				cause = "not a socket but a regular file"
			} else if fi.IsDir() {
				cause = "not a socket but a directory"
			}
		} else {
			hint = " (nobody listens on it: a stale socket of a master that died?)"
		}
	case errors.Is(err, syscall.EAGAIN):
		hint = " (its backlog is full: the master is not accepting)"
	case errors.Is(err, os.ErrDeadlineExceeded):
		cause = "no connection within the timeout"
	}
	return fmt.Errorf("control socket %s: %s%s", path, cause, hint)
}

// call sends one request and sorts its failure: the master's error reply
// gives exitNo, a transport failure exitSocket.
func call(c *control.Client, path string, req control.Request, timeout time.Duration) (control.Reply, error) {
	rep, err := c.Do(req, timeout)
	if err == nil {
		return rep, nil
	}
	// The master's "no" is a *control.ReplyError; anything else is the
	// transport's. The master's words usually name the command already.
	var re *control.ReplyError
	if errors.As(err, &re) {
		if strings.HasPrefix(rep.Error, req.Cmd+": ") || strings.HasPrefix(rep.Error, req.Cmd+" ") {
			return rep, answeredNo("%s", rep.Error)
		}
		return rep, answeredNo("%s: %s", req.Cmd, rep.Error)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("control socket %s: no reply to %s within %v (-timeout)", path, req.Cmd, timeout)
	}
	return rep, &failure{code: exitSocket, err: err}
}

// session is a command's connection: dialled once, closed at its end.
type session struct {
	c       *control.Client
	path    string
	timeout time.Duration
}

func open(o *options, cmd string) (*session, error) {
	t := o.timeoutFor(cmd)
	c, err := dial(o.socket, t)
	if err != nil {
		return nil, err
	}
	return &session{c: c, path: o.socket, timeout: t}, nil
}

func (s *session) do(req control.Request) (control.Reply, error) {
	return call(s.c, s.path, req, s.timeout)
}

func (s *session) Close() error { return s.c.Close() }
