package pool_test

// Real-process tests: the test binary re-executes itself as a waiter server
// (and the server re-executes it again as its workers), as tableflip's
// tests do. TestMain sees WAITERTEST_SCENARIO and becomes the server.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/activation"
	"github.com/waiter-go/waiter/config"
	"github.com/waiter-go/waiter/hooks"
	"github.com/waiter-go/waiter/pool"
)

const (
	envScenario = "WAITERTEST_SCENARIO" // "1": be the server
	envOpts     = "WAITERTEST_OPTS"     // options, JSON
	envEvents   = "WAITERTEST_EVENTS"   // file to append hook events to
	envFd       = "WAITERTEST_FD"       // a listener passed as this fd
	envReload   = "WAITERTEST_RELOAD"   // Server.Reload reads the options (JSON) from this file
)

func TestMain(m *testing.M) {
	if os.Getenv("WAITERTEST_WORKER_FAILS") != "" && pool.IsWorker() {
		os.Exit(5) // a worker that cannot start
	}
	if f := os.Getenv("WAITERTEST_WORKER_FAILS_IF"); f != "" && pool.IsWorker() {
		if _, err := os.Stat(f); err == nil {
			os.Exit(5) // workers started while the file exists cannot start
		}
	}
	if path := os.Getenv("WAITERTEST_CTLCLIENT"); path != "" {
		ctlClientMain(path)
	}
	if os.Getenv(envScenario) != "" {
		code := pool.ExitCode(scenarioServer().Run())
		// Run returns only in the master: a worker ends inside it
		// (Net::Waiter let a die in on_process return into the user's code
		// in the child).
		record("run_returned", pool.IsWorker())
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// record appends one line "hook pid args" to the events file. O_APPEND
// writes of one short line are atomic, so workers can share the file.
// The file is opened once per process, so that recording works when the
// process has no fd to spare (the EMFILE test).
func record(hook string, args ...any) {
	eventsOnce.Do(func() {
		if path := os.Getenv(envEvents); path != "" {
			eventsFile, _ = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		}
	})
	f := eventsFile
	if f == nil {
		return
	}
	line := fmt.Sprintf("%s %d", hook, os.Getpid())
	for _, a := range args {
		line += " " + fmt.Sprint(a)
	}
	f.WriteString(line + "\n")
}

var (
	eventsOnce sync.Once
	eventsFile *os.File
)

// scenarioServer is the server the tests run. Each client first sends one
// command line; on_process acts on it:
//
//	hello   "hello world\n"
//	pid     the serving process's pid
//	busy    "busy=B all=A" from BusyKidsCount, as seen by the server
//	hold    "held\n", then waits until the client closes its side
//	panic   panics in on_process
//	exit    os.Exit(3) inside on_process
//	block   blocks forever
//	closeit closes the connection itself and returns
//	stop    "stopping\n" and returns ErrStopWorker
//	reset   waits for the client to reset, then writes twice
//	echo    "hello world\n", then echoes lines until EOF, returning any
//	        read or write error as a naive on_process would
//	opts    "gen=G client_timeout=C graceful_timeout=T request_timeout=R"
//	        (the serving slot's generation, CurrentOptions)
//	gens    "N g:state g:state ...", every slot in use, as this process sees them
//	truncate tries ftruncate(2) on fd 3 (a worker's scoreboard memfd):
//	        "ftruncate=ERR size=BYTES"
func scenarioServer() *pool.Server {
	var opts config.Options
	if err := json.Unmarshal([]byte(os.Getenv(envOpts)), &opts); err != nil {
		fmt.Fprintln(os.Stderr, "scenario options:", err)
		os.Exit(90)
	}
	var srv *pool.Server
	h := hooks.Set{
		OnServerBegin: func() { record("on_server_begin") },
		OnListenOK: func() {
			record("on_listen_ok")
			if os.Getenv("WAITERTEST_EMFILE") != "" {
				// Once the acceptor is set up, leave no fd for a client.
				go func() {
					time.Sleep(200 * time.Millisecond)
					ents, _ := os.ReadDir("/proc/self/fd")
					lim := uint64(len(ents) - 1) // the listing's own fd is closed by now
					record("emfile_set", lim)
					syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: lim, Max: lim})
				}()
			}
		},
		OnAcceptError: func(err error) { record("on_accept_error", strings.ReplaceAll(err.Error(), " ", "_")) },
		OnAcceptOK:    func(c net.Conn) { record("on_accept_ok", c.RemoteAddr()) },
		OnSourceLimited: func(c net.Conn) {
			record("on_source_limited", c.RemoteAddr())
			io.WriteString(c, "too many from you\n")
		},
		OnForkOK:           func(pid int) { record("on_fork_ok", pid) },
		OnPreforkChildIdle: func() { record("on_prefork_child_idle") },
		OnForkingIdle:      func() { record("on_forking_idle") },
		OnMaxforked: func(c net.Conn) {
			record("on_maxforked")
			// Read the command first: closing with unread data would reset
			// the connection and the client might lose the reply.
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			bufio.NewReader(c).ReadString('\n')
			io.WriteString(c, "busy, try later\n")
		},
		OnChildStart: func() error {
			record("on_child_start")
			if os.Getenv("WAITERTEST_CHILD_START_FAILS") != "" {
				return fmt.Errorf("scenario: the database is down")
			}
			return nil
		},
		OnChildExit:   func() { record("on_child_exit") },
		OnClose:       func(c net.Conn) { record("on_close") },
		OnServerClose: func() { record("on_server_close") },
		OnSSLError:    func(err error) { record("on_ssl_error") },
		OnSigChild:    func(pid int, ws syscall.WaitStatus) { record("on_sig_child", pid, int(ws)) },
		OnSigUSR1:     func() { record("on_sig_usr1", runtime.NumGoroutine()) }, // the master's goroutines, for leak checks
		OnSigUSR2: func() {
			record("on_sig_usr2")
			if os.Getenv("WAITERTEST_WEDGE") != "" {
				select {} // wedge the supervisor loop
			}
		},
		OnSigHUP:       func() { record("on_sig_hup") },
		OnChildSigUSR1: func() { record("on_child_sig_usr1") },
		OnChildSigUSR2: func() { record("on_child_sig_usr2") },
		OnChildSigHUP:  func() { record("on_child_sig_hup") },
	}
	h.OnProcess = func(ctx context.Context, c net.Conn) error {
		record("on_process")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(c)
		cmd, _ := r.ReadString('\n')
		c.SetReadDeadline(time.Time{})
		cmd = strings.TrimSpace(cmd)
		if n, ok := strings.CutPrefix(cmd, "alloc "); ok {
			// Grows this worker's resident memory by n MiB (touched, and
			// kept), then holds until the client closes.
			mb, _ := strconv.Atoi(n)
			// mmap'd, not Go's heap: the race detector keeps no shadow
			// of it, so the RSS grows by n MiB in race builds too.
			b, err := syscall.Mmap(-1, 0, mb<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
			if err != nil {
				return err
			}
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			ballast = append(ballast, b)
			io.WriteString(c, "allocated\n")
			io.Copy(io.Discard, r)
			return nil
		}
		if ms, ok := strings.CutPrefix(cmd, "sleep "); ok {
			d, _ := strconv.Atoi(ms)
			time.Sleep(time.Duration(d) * time.Millisecond)
			_, err := io.WriteString(c, "slept\n")
			return err
		}
		switch cmd {
		case "hello":
			_, err := io.WriteString(c, "hello world\n")
			return err
		case "peer":
			fmt.Fprintf(c, "%s\n", c.RemoteAddr())
		case "fail":
			fmt.Fprintf(c, "failing\n")
			return fmt.Errorf("scenario: a failure for %s", c.RemoteAddr())
		case "pid":
			fmt.Fprintf(c, "%d\n", os.Getpid())
		case "isworker":
			fmt.Fprintf(c, "IsWorker=%v IsChild=%v\n", pool.IsWorker(), srv.IsChild())
		case "waitstop":
			// Holds until the worker is told to stop, then says so.
			io.WriteString(c, "waiting\n")
			select {
			case <-ctx.Done():
				dl, _ := ctx.Deadline()
				fmt.Fprintf(c, "stopping, killed in %s\n", time.Until(dl).Round(time.Second))
			case <-time.After(30 * time.Second):
				io.WriteString(c, "no stop\n")
			}
		case "busy":
			b, a := srv.BusyKidsCount()
			fmt.Fprintf(c, "busy=%d all=%d child=%v\n", b, a, srv.IsChild())
		case "stats":
			var wasted, served uint64
			sl := srv.Scoreboard()
			for _, x := range sl {
				wasted += x.Wasted
				served += x.Served
			}
			fmt.Fprintf(c, "workers=%d wasted=%d served=%d\n", len(sl), wasted, served)
		case "listeners":
			// How many listening sockets this process holds.
			n := 0
			for fd := 0; fd < 1024; fd++ {
				if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err == nil && v == 1 {
					n++
				}
			}
			fmt.Fprintf(c, "%d\n", n)
		case "subject":
			fmt.Fprintf(c, "tls=%v subject=%q\n", srv.SSLInUse(), srv.PeerCertificateSubject())
		case "env":
			fmt.Fprintln(c, strings.Join(os.Environ(), " "))
		case "hold":
			io.WriteString(c, "held\n")
			io.Copy(io.Discard, r)
		case "panic":
			panic("scenario panic")
		case "exit":
			os.Exit(3)
		case "block":
			io.WriteString(c, "blocking\n")
			scenarioBlock()
		case "echo":
			if _, err := io.WriteString(c, "hello world\n"); err != nil {
				return err
			}
			for {
				line, err := r.ReadString('\n')
				if line != "" {
					if _, err := io.WriteString(c, line); err != nil {
						return err
					}
				}
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
			}
		case "opts":
			o := srv.CurrentOptions()
			gen := -1
			for _, x := range srv.Scoreboard() {
				if x.PID == os.Getpid() && x.State == "busy" {
					gen = x.Gen
				}
			}
			fmt.Fprintf(c, "gen=%d client_timeout=%s graceful_timeout=%s request_timeout=%s\n",
				gen, o.ClientTimeout, o.GracefulTimeout, o.RequestTimeout)
		case "gens":
			sl := srv.Scoreboard()
			out := []string{strconv.Itoa(len(sl))}
			for _, x := range sl {
				out = append(out, fmt.Sprintf("%d:%s", x.Gen, x.State))
			}
			fmt.Fprintln(c, strings.Join(out, " "))
		case "truncate":
			err := unix.Ftruncate(3, 0)
			var st unix.Stat_t
			unix.Fstat(3, &st)
			record("truncate", err == nil, st.Size)
			fmt.Fprintf(c, "ftruncate=%v size=%d\n", err, st.Size)
		case "closeit":
			c.Close()
		case "stop":
			io.WriteString(c, "stopping\n")
			return hooks.ErrStopWorker
		case "reset":
			io.WriteString(c, "ready\n")
			io.Copy(io.Discard, r) // until the reset
			time.Sleep(50 * time.Millisecond)
			io.WriteString(c, "one\n")
			_, err := io.WriteString(c, "two\n")
			record("reset_survived")
			return err
		default:
			fmt.Fprintf(c, "unknown command %q\n", cmd)
		}
		return nil
	}
	srv = pool.New(opts, h)
	if files := os.Getenv("WAITERTEST_GETCERT"); files != "" {
		// A program's own TLS: a certificate read at each handshake, so a
		// rotation needs no reload.
		cert, key, _ := strings.Cut(files, ":")
		srv.TLSConfig = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(cert, key)
			return &c, err
		}}
	}
	if path := os.Getenv(envReload); path != "" {
		srv.Reload = func() (config.Options, error) {
			var o config.Options
			b, err := os.ReadFile(path)
			if err != nil {
				return o, err
			}
			err = json.Unmarshal(b, &o)
			return o, err
		}
	}
	if os.Getenv("WAITERTEST_SLOW_RELOAD") != "" {
		// A reload that takes 50 ms in the supervisor loop (as parsing a
		// large file or an RSA-4096 key does): HUPs queue up behind it.
		srv.Reload = func() (config.Options, error) {
			time.Sleep(50 * time.Millisecond)
			return opts, nil
		}
	}
	if pick := os.Getenv("WAITERTEST_PICK"); pick != "" {
		srv.SocketNames = strings.Split(pick, ",")
	}
	if fd := os.Getenv(envFd); fd != "" && !pool.IsWorker() {
		var n int
		fmt.Sscan(fd, &n)
		sk, err := activation.FromFd(n, "test")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(91)
		}
		srv.Sockets = []*activation.Socket{sk}
	}
	return srv
}

// scenarioBlock is the "block" command: it never returns (the stacks that
// request_timeout logs name it).
func scenarioBlock() {
	select {}
}

var _ = testing.Short

// ballast keeps what "alloc" allocated.
var ballast [][]byte
