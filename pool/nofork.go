package pool

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/activation"
)

// runNofork serves clients one at a time in this process, in the seed's
// order: accept, on_accept_ok, on_process, on_close; TERM or INT ends it
// after the current client, then on_server_close.
func (s *Server) runNofork() int {
	runtime.LockOSThread() // the acceptor waits in epoll_wait on this thread
	defer runtime.UnlockOSThread()
	acc, err := newAcceptor(s.listenFds())
	if err != nil {
		s.log.Errorf("waiter: %v", err)
		return ExitListen
	}
	defer acc.close()
	acc.raw = true // this thread does nothing else while it waits (see acceptor.wait)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case sig := <-sigs:
				s.masterSignal(sig.(syscall.Signal), acc.wake)
			}
		}
	}()
	s.onBreak(acc.wake)
	notifyReady(s.log)
	for !s.broken.Load() {
		fd, _, err := acc.accept(s.Options.Timeout.D())
		switch {
		case err == nil:
		case errors.Is(err, errTimeout), errors.Is(err, errWoken):
			continue
		default:
			s.acceptFailed(err)
			continue
		}
		c, err := fdConn(fd)
		if err != nil {
			s.acceptFailed(fmt.Errorf("accepted socket: %w", err))
			continue
		}
		_, failed := s.serve(c, true)
		s.served.Add(1)
		if failed {
			s.failed.Add(1)
		}
	}
	notifyStopping(s.log)
	s.log.Infof("waiter: stopped: %d clients served, %d failed", s.served.Load(), s.failed.Load())
	return ExitOK
}

// acceptFailed logs an accept error and runs on_accept_error: the one call
// site, for every process that accepts.
func (s *Server) acceptFailed(err error) {
	s.log.Warnf("waiter: %v", err)
	s.hk.AcceptError(err)
}

// masterSignal handles a signal in a process that serves by itself (nofork,
// Accept=yes): TERM and INT stop after the current client; USR1, USR2 and HUP
// run their hooks.
func (s *Server) masterSignal(sig syscall.Signal, wake func()) {
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT:
		s.log.Infof("waiter: %s: stopping after the current client", unix.SignalName(sig))
		s.broken.Store(true)
		wake()
	case syscall.SIGHUP:
		s.signalHook(sig)
		// Re-read the certificates: the next client sees a rotated one.
		if err := s.loadTLS(); err != nil {
			s.log.Errorf("waiter: reload: keeping the running certificates: %v", err)
		} else {
			s.log.Info("waiter: SIGHUP: reloaded")
		}
	default:
		s.signalHook(sig)
	}
}

// runConnected serves the one client systemd passed (Accept=yes, inetd
// style) and returns: systemd starts one instance per connection.
func (s *Server) runConnected(sk *activation.Socket) int {
	fd, err := syscall.Dup(sk.Fd)
	if err != nil {
		s.log.Errorf("waiter: connected socket: %v", err)
		return ExitListen
	}
	syscall.CloseOnExec(fd)
	c, err := fdConn(fd)
	if err != nil {
		s.log.Errorf("waiter: connected socket %s: %v", sk, err)
		return ExitListen
	}
	notifyReady(s.log)
	s.serve(c, true)
	return ExitOK
}
