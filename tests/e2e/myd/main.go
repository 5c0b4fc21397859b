// Command myd is the end-to-end suite's second daemon: the smallest program
// a user would write on waiter, answering each client with "myd\n". The
// suite packages it with packaging/build-deb.sh (a name, a port, a binary)
// exactly as a user would, installs it beside waiterd and checks that it
// serves on its own port.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/waiter-go/waiter"
	"github.com/waiter-go/waiter/config"
)

func main() {
	cfg := flag.String("config", "", "YAML file of waiter options (optional)")
	flag.Parse()
	opts := waiter.DefaultOptions()
	opts.Prefork, opts.Maxfork = 2, 8
	if *cfg != "" {
		if _, err := config.LoadFile(*cfg, &opts); err != nil {
			fmt.Fprintf(os.Stderr, "myd: %v\n", err)
			os.Exit(waiter.ExitConfig)
		}
	}
	srv := waiter.New(opts, waiter.Hooks{
		OnProcess: func(_ context.Context, c net.Conn) error {
			_, err := io.WriteString(c, "myd\n")
			return err
		},
	})
	os.Exit(waiter.ExitCode(srv.Run()))
}
