package activation

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// listenFdsStart is SD_LISTEN_FDS_START.
const listenFdsStart = 3

// maxListenFds bounds LISTEN_FDS to what a process can hold; systemd itself
// never passes more than a few hundred.
const maxListenFds = 4096

// EnvError names the variable that was wrong.
type EnvError struct {
	Var   string
	Value string
	Err   error
}

func (e *EnvError) Error() string {
	return fmt.Sprintf("activation: %s=%q: %v", e.Var, e.Value, e.Err)
}

func (e *EnvError) Unwrap() error { return e.Err }

// Env is what ParseEnv reads: the three variables of sd_listen_fds(3).
type Env struct {
	PID, FDs, FDNames string
	// PIDSet is false when LISTEN_PID is absent.
	PIDSet, FDsSet bool
}

// ReadEnv reads the variables from the process environment.
func ReadEnv() Env {
	var e Env
	e.PID, e.PIDSet = os.LookupEnv("LISTEN_PID")
	e.FDs, e.FDsSet = os.LookupEnv("LISTEN_FDS")
	e.FDNames = os.Getenv("LISTEN_FDNAMES")
	return e
}

// Count applies sd_listen_fds(3) to the variables: 0 when they are absent or
// meant for another process (LISTEN_PID is not pid), the number of fds and
// their names otherwise, and an *EnvError naming the variable when one is
// malformed. Names missing from LISTEN_FDNAMES are "unknown" (DefaultName),
// as in systemd, and so are empty ones ("a::b"), which systemd would pass on
// as empty strings: waiter never gives a socket an empty name.
func (e Env) Count(pid int) (n int, names []string, err error) {
	if !e.FDsSet && !e.PIDSet {
		return 0, nil, nil
	}
	if !e.PIDSet {
		// systemd-socket-activate and systemd always set both; a lone
		// LISTEN_FDS is not for us (sd_listen_fds returns 0 likewise).
		return 0, nil, nil
	}
	p, perr := strconv.Atoi(strings.TrimSpace(e.PID))
	if perr != nil || p <= 0 {
		return 0, nil, &EnvError{Var: "LISTEN_PID", Value: e.PID, Err: fmt.Errorf("not a process id")}
	}
	if p != pid {
		return 0, nil, nil
	}
	if !e.FDsSet {
		return 0, nil, &EnvError{Var: "LISTEN_FDS", Value: "", Err: fmt.Errorf("missing while LISTEN_PID names this process")}
	}
	n, perr = strconv.Atoi(strings.TrimSpace(e.FDs))
	if perr != nil {
		return 0, nil, &EnvError{Var: "LISTEN_FDS", Value: e.FDs, Err: fmt.Errorf("not a number")}
	}
	if n < 0 || n > maxListenFds {
		return 0, nil, &EnvError{Var: "LISTEN_FDS", Value: e.FDs, Err: fmt.Errorf("want 0 to %d", maxListenFds)}
	}
	if e.FDNames != "" {
		names = strings.Split(e.FDNames, ":")
		if len(names) != n {
			return 0, nil, &EnvError{Var: "LISTEN_FDNAMES", Value: e.FDNames, Err: fmt.Errorf("%d names for LISTEN_FDS=%d", len(names), n)}
		}
	} else {
		names = make([]string, n)
	}
	for i := range names {
		if names[i] == "" {
			names[i] = DefaultName
		}
	}
	return n, names, nil
}

// FromEnv returns the sockets systemd passed, or nil when it passed none.
// It unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES, marks the fds
// close-on-exec and non-blocking, and refuses an fd that is not open, not a
// socket, or not a stream socket, naming it.
func FromEnv() ([]*Socket, error) {
	e := ReadEnv()
	n, names, err := e.Count(os.Getpid())
	// Unset whatever the outcome: the variables are never a child's.
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	if err != nil || n == 0 {
		return nil, err
	}
	var out []*Socket
	for i := 0; i < n; i++ {
		fd := listenFdsStart + i
		s, err := inspect(fd, names[i])
		if err != nil {
			return nil, &EnvError{Var: "LISTEN_FDS", Value: e.FDs, Err: err}
		}
		unix.CloseOnExec(fd)
		if err := unix.SetNonblock(fd, true); err != nil {
			return nil, &EnvError{Var: "LISTEN_FDS", Value: e.FDs, Err: fmt.Errorf("fd %d: set non-blocking: %w", fd, err)}
		}
		s.Inherited = true
		out = append(out, s)
	}
	return out, nil
}
