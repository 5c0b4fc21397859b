// Command waiterd is waiter's demo daemon: it answers each client with
// "hello world\n" and closes, or with -echo greets and then echoes each line
// back until the client closes its side.
//
// Every option of waiter is a flag (-prefork 8) and a key of the -config
// YAML file (prefork: 8); flags override the file. With no socket from
// systemd and no -listen it binds 127.0.0.1:9123.
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/waiter-go/waiter"
)

// version is set by the build (-ldflags -X main.version=...).
var version = "dev"

// demo holds waiterd's own settings, read from the same file as waiter's.
type demo struct {
	// Echo greets, then echoes lines until the client closes its side.
	Echo bool `yaml:"echo"`
	// FaultWedgeOnUSR2 makes SIGUSR2 wedge the master's supervisor loop
	// forever, so that the end-to-end tests can watch systemd's watchdog
	// kill and restart it. Off unless a config file turns it on.
	FaultWedgeOnUSR2 bool `yaml:"fault_wedge_on_usr2"`
}

var app = &waiter.App[demo]{
	Name: "waiterd",
	Hooks: waiter.Hooks{
		OnProcess: func(ctx context.Context, c net.Conn) error {
			return greet(ctx, c, waiter.Settings[demo](ctx).Echo)
		},
		// A client turned away hears why: forking mode's pool full for
		// maxfork_wait, or its address at max_per_source.
		OnMaxforked:     busy,
		OnSourceLimited: busy,
		OnSigUSR2: func() {
			if waiter.Settings[demo](nil).FaultWedgeOnUSR2 {
				fmt.Fprintln(os.Stderr, "waiterd: fault_wedge_on_usr2: wedging the master's loop forever")
				select {}
			}
		},
	},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// busy tells a client it was turned away; a second at most, it is not
// being served.
func busy(c net.Conn) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	io.WriteString(c, "busy: try again later\n")
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "units" {
		return unitsMain(args[1:], stdout, stderr)
	}
	if len(args) == 1 && (args[0] == "-version" || args[0] == "--version") {
		fmt.Fprintln(stdout, "waiterd", version)
		return 0
	}
	return app.Run(args, stdout, stderr)
}

// greet is waiterd's on_process: a greeting, then with echo each line back
// until the client closes its side. When the worker is told to stop (ctx),
// an echo session says goodbye and ends instead of holding the stop up.
func greet(ctx context.Context, c net.Conn, echo bool) error {
	if _, err := io.WriteString(c, "hello world\n"); err != nil {
		return err
	}
	if !echo {
		return nil
	}
	// A read blocked on an idle client ends when the stop comes.
	defer context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if len(line) > 0 {
			if _, werr := io.WriteString(c, line); werr != nil {
				return werr
			}
		}
		if ctx.Err() != nil {
			_, err := io.WriteString(c, "goodbye: this worker is ending (a stop or a reload)\n")
			return err
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
