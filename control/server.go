package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// Bounds of the server: what a client may cost the master.
const (
	// MaxRequest is the longest request line; a longer one is answered
	// with an error and the connection closed.
	MaxRequest = 64 << 10
	// MaxConns is how many clients are served at once (a waiterctl top
	// holds one); the next ones are answered "busy" and closed.
	MaxConns = 64
	// maxRejects bounds the goroutines answering "busy"; past it a
	// connection is closed unanswered.
	maxRejects = 64
	// IdleTimeout is how long a connection may wait between requests (or
	// take to send one).
	IdleTimeout = 30 * time.Second
	// WriteTimeout bounds the writing of one reply to a client that does
	// not read.
	WriteTimeout = 10 * time.Second
)

// Handler answers one request. ctx ends when the server closes.
type Handler func(ctx context.Context, r Request) Reply

// Server serves a control socket.
type Server struct {
	Log    logrus.FieldLogger
	Handle Handler
	// Allowed says whether a peer's uid is answered; nil: this process's
	// effective uid and root.
	Allowed func(uid uint32) bool

	l      *net.UnixListener
	path   string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	conns  chan struct{}
	rejs   chan struct{}
	warnAt atomic.Int64
	mu     sync.Mutex
	open   map[net.Conn]struct{}
}

// Listen creates the socket at path, mode 0600. A stale socket left by a
// process that died is replaced; a live one (another master answers on
// it), or any other file there, is an error.
func Listen(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control: %s: another process answers on it", path)
		}
		os.Remove(path)
	}
	// The socket file is 0600 from its creation: Linux gives it the
	// socket's own mode (less the umask) at bind, so an fchmod before the
	// bind leaves no window in which another user could connect
	// (SO_PEERCRED would refuse them, but the mode is the first gate). Not
	// the umask: it is the whole process's, and files other goroutines
	// create meanwhile would be made 0600 too.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("control: socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close() // net.FileListener holds its own copy
	if err := unix.Fchmod(fd, 0o600); err != nil {
		return nil, fmt.Errorf("control: %s: %w", path, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, fmt.Errorf("control: bind %s: %w", path, err)
	}
	if err := unix.Listen(fd, MaxConns); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	nl, err := net.FileListener(f)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("control: %s: %w", path, err)
	}
	l := nl.(*net.UnixListener)
	l.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil { // whatever the umask left
		l.Close()
		os.Remove(path)
		return nil, fmt.Errorf("control: %w", err)
	}
	return l, nil
}

// Start serves l in the background until Close.
func (s *Server) Start(l *net.UnixListener) {
	s.l = l
	s.path = l.Addr().String()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.conns = make(chan struct{}, MaxConns)
	s.rejs = make(chan struct{}, maxRejects)
	s.open = map[net.Conn]struct{}{}
	s.wg.Add(1)
	go s.acceptLoop()
}

// Close stops accepting, ends every connection and waits for their
// goroutines; the socket file is removed.
func (s *Server) Close() error {
	if s.l == nil {
		return nil
	}
	s.cancel()
	err := s.l.Close()
	s.mu.Lock()
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.l.AcceptUnix()
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// EMFILE and the like: back off rather than spin.
			s.warn("control: accept: %v", err)
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		select {
		case s.conns <- struct{}{}:
		default:
			select {
			case s.rejs <- struct{}{}:
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					defer func() { <-s.rejs }()
					s.reject(c, fmt.Sprintf("busy: %d control connections are open, the most served at once", MaxConns))
				}()
			default:
				c.Close()
			}
			continue
		}
		s.track(c, true)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.conns }()
			defer s.track(c, false)
			defer c.Close()
			s.serve(c)
		}()
	}
}

func (s *Server) track(c net.Conn, add bool) {
	s.mu.Lock()
	if add {
		s.open[c] = struct{}{}
		if s.ctx.Err() != nil {
			// Accepted as Close ran, after it closed the open ones: it
			// would be served until its idle timeout, and Close wait.
			c.Close()
		}
	} else {
		delete(s.open, c)
	}
	s.mu.Unlock()
}

// reject answers the first request with why: read first (for a second at
// most), since closing with it unread fails the client's write (EPIPE)
// before it could read the answer.
func (s *Server) reject(c *net.UnixConn, why string) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(time.Second))
	readLine(bufio.NewReaderSize(c, 4096), MaxRequest)
	c.SetWriteDeadline(time.Now().Add(time.Second))
	writeReply(c, Reply{Error: why})
}

func (s *Server) allowed(uid uint32) bool {
	if s.Allowed != nil {
		return s.Allowed(uid)
	}
	return uid == 0 || uid == uint32(os.Geteuid())
}

func (s *Server) serve(c *net.UnixConn) {
	cred, err := peerCred(c)
	if err != nil {
		s.warn("control: %s: reading the peer's credentials: %v", s.path, err)
		return
	}
	r := bufio.NewReaderSize(c, 4096)
	if !s.allowed(cred.Uid) {
		s.warn("control: %s: refused a request from uid %d (pid %d): only uid %d and root are answered", s.path, cred.Uid, cred.Pid, os.Geteuid())
		// The refusal answers the first request, read (but not acted on)
		// for a second at most: closing with it unread would fail the
		// client's write (EPIPE) before it could read why.
		c.SetReadDeadline(time.Now().Add(time.Second))
		readLine(r, MaxRequest)
		c.SetWriteDeadline(time.Now().Add(time.Second))
		writeReply(c, Reply{Error: fmt.Sprintf("permission denied: uid %d may not use this control socket", cred.Uid)})
		return
	}
	for {
		c.SetReadDeadline(time.Now().Add(IdleTimeout))
		line, err := readLine(r, MaxRequest)
		if errors.Is(err, errTooLong) {
			c.SetWriteDeadline(time.Now().Add(WriteTimeout))
			writeReply(c, Reply{Error: fmt.Sprintf("request longer than %d bytes", MaxRequest)})
			return
		}
		if err != nil {
			return // EOF, the idle deadline, or the server closing
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var req Request
		var rep Reply
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			rep = Reply{Error: fmt.Sprintf("malformed request: %v", err)}
		} else if dec.More() {
			rep = Reply{Error: "malformed request: one JSON object a line"}
		} else {
			rep = s.Handle(s.ctx, req)
		}
		c.SetWriteDeadline(time.Now().Add(WriteTimeout))
		if err := writeReply(c, rep); err != nil {
			return
		}
	}
}

var errTooLong = errors.New("line too long")

// readLine reads up to a newline, refusing more than max bytes before it
// without holding them.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > max+1 {
			return nil, errTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case len(line) > 0 && errors.Is(err, io.EOF):
			return line, nil // a last request without its newline
		default:
			return nil, err
		}
	}
}

func writeReply(c net.Conn, rep Reply) error {
	b, err := json.Marshal(rep)
	if err != nil {
		b, _ = json.Marshal(Reply{Error: "encoding the reply: " + err.Error()})
	}
	_, err = c.Write(append(b, '\n'))
	return err
}

// warn logs at most once a second: a client that connects in a loop must
// not fill the journal.
func (s *Server) warn(format string, args ...any) {
	now := time.Now().UnixNano()
	last := s.warnAt.Load()
	if now-last < int64(time.Second) || !s.warnAt.CompareAndSwap(last, now) {
		return
	}
	if s.Log != nil {
		s.Log.Warnf("waiter: "+format, args...)
	}
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}
