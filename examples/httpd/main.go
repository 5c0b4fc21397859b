// Command httpd serves HTTP/1.1 with a net/http Handler in prefork worker
// processes, the way Apache's prefork MPM runs mod_php: each worker serves
// one connection at a time, keep-alive included, and a handler that panics
// costs its request and its worker process, never the others.
//
//	/            hello from pid N
//	/sleep?ms=N  sleeps N ms (at most 60000), then says so
//	/panic       panics: the client gets a 500, the worker is replaced
//
// A keep-alive connection holds its worker until it closes or has been idle
// for idle_timeout (Apache's KeepAliveTimeout), so size maxfork for the
// connections, not the requests. waiter's max_requests is Apache's
// MaxConnectionsPerChild.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/waiter-go/waiter"
	"github.com/waiter-go/waiter/config"
)

// settings are httpd's own keys.
type settings struct {
	// Greeting starts the answer of /.
	Greeting string `yaml:"greeting"`
	// ReadHeaderTimeout bounds how long a client may take to send a
	// request's headers.
	ReadHeaderTimeout config.Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes a keep-alive connection idle that long.
	IdleTimeout config.Duration `yaml:"idle_timeout"`
}

func main() {
	opts := waiter.DefaultOptions()
	opts.Port, opts.Prefork, opts.Maxfork = 8080, 8, 64
	app := &waiter.App[settings]{
		Options: opts,
		Defaults: settings{Greeting: "hello", ReadHeaderTimeout: config.Duration(10 * time.Second),
			IdleTimeout: config.Duration(5 * time.Second)},
		Check: func(s *settings) error {
			if s.ReadHeaderTimeout <= 0 {
				return &config.FieldError{Key: "read_header_timeout", Value: s.ReadHeaderTimeout.String(), Reason: "want more than 0"}
			}
			if s.IdleTimeout <= 0 {
				return &config.FieldError{Key: "idle_timeout", Value: s.IdleTimeout.String(), Reason: "want more than 0"}
			}
			return nil
		},
		Hooks: waiter.Hooks{OnProcess: serveConn},
	}
	app.Main()
}

// handler is the site: any http.Handler. A request's context carries the
// worker's settings (waiter.Settings works on it).
var handler = func() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from pid %d\n", waiter.Settings[settings](r.Context()).Greeting, os.Getpid())
	})
	mux.HandleFunc("GET /sleep", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.FormValue("ms"))
		if err != nil || ms < 0 || ms > 60000 {
			http.Error(w, "want ms=0 to 60000", http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done(): // the client went away
			return
		}
		fmt.Fprintf(w, "slept %d ms in pid %d\n", ms, os.Getpid())
	})
	mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) { panic("a demo panic") })
	return mux
}()

// serveConn is OnProcess: an http.Server for this one connection, over a
// listener that yields it once. Serve returns when the connection closes
// (the client's, idle_timeout, or Connection: close). When the worker is
// told to stop (a stop, a reload), the server is shut down: the request
// being served finishes and gets "Connection: close", an idle keep-alive
// connection is closed at once.
func serveConn(ctx context.Context, c net.Conn) error {
	s := waiter.Settings[settings](ctx)
	var panicked atomic.Pointer[error]
	srv := &http.Server{
		Handler:           recoverer(handler, &panicked),
		ReadHeaderTimeout: s.ReadHeaderTimeout.D(),
		IdleTimeout:       s.IdleTimeout.D(),
		// Requests are not cancelled by the stop (they finish), but
		// carry the worker's settings.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	ln := newOneConnListener(c)
	shutDown := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(shutDown)
		deadline, ok := ctx.Deadline()
		if !ok {
			deadline = time.Now().Add(5 * time.Second)
		}
		sctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close() // the kill time: cut the request
		}
	})
	err := srv.Serve(ln)
	if !stop() {
		<-shutDown // Serve returned at the shutdown's start: wait for its end
	}
	if p := panicked.Load(); p != nil {
		// The panic may have left this process's state half-changed: end
		// the worker (logged at error), as Apache replaces a crashed child.
		return waiter.Fatal(*p)
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// recoverer answers a handler's panic with a 500 and Connection: close (or
// cuts the connection if the response had begun), and records it so that
// serveConn ends the worker.
func recoverer(h http.Handler, panicked *atomic.Pointer[error]) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &trackingWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil || v == http.ErrAbortHandler {
				if v != nil {
					panic(v) // net/http's own: cut the connection quietly
				}
				return
			}
			err := fmt.Errorf("httpd: handler panic on %s %s: %v\n%s", r.Method, r.URL.Path, v, debug.Stack())
			panicked.Store(&err)
			if tw.wrote {
				panic(http.ErrAbortHandler)
			}
			w.Header().Set("Connection", "close")
			http.Error(w, "500 internal server error", http.StatusInternalServerError)
		}()
		h.ServeHTTP(tw, r)
	})
}

// trackingWriter notes whether the response has begun.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (t *trackingWriter) WriteHeader(code int) { t.wrote = true; t.ResponseWriter.WriteHeader(code) }

func (t *trackingWriter) Write(b []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (t *trackingWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// oneConnListener is a net.Listener that accepts one connection, then
// blocks until that connection or the listener is closed.
type oneConnListener struct {
	conn   chan net.Conn
	addr   net.Addr
	closed chan struct{}
	once   sync.Once
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{conn: make(chan net.Conn, 1), addr: c.LocalAddr(), closed: make(chan struct{})}
	l.conn <- &notifyConn{Conn: c, l: l}
	return l
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conn:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.addr }

// notifyConn closes its listener when it is closed: Serve then returns.
type notifyConn struct {
	net.Conn
	l *oneConnListener
}

func (c *notifyConn) Close() error {
	err := c.Conn.Close()
	c.l.Close()
	return err
}
