package waiter

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/waiter-go/waiter/activation"
	"github.com/waiter-go/waiter/config"
	"github.com/waiter-go/waiter/pool"
)

// App is a whole daemon: waiter's options and the program's own settings S
// (read together from one YAML file and the command line), and its hooks.
// Main is its main function:
//
//	type settings struct {
//		Greeting string `yaml:"greeting"`
//	}
//
//	func main() {
//		app := &waiter.App[settings]{
//			Defaults: settings{Greeting: "hello"},
//			Hooks: waiter.Hooks{OnProcess: func(ctx context.Context, c net.Conn) error {
//				_, err := fmt.Fprintln(c, waiter.Settings[settings](ctx).Greeting)
//				return err
//			}},
//		}
//		app.Main()
//	}
//
// The master alone reads the configuration: at start, and again on each
// reload (SIGHUP), where options and settings are taken together or not at
// all. Every worker gets a private copy of its generation's settings, and
// never reads the file (which may have broken since). -check reads and
// checks the configuration, binds nothing, and exits 0 or 1 naming the file,
// line, key and value that is wrong.
type App[S any] struct {
	// Name names the program in usage and logs; the binary's name if empty.
	Name string
	// Options are the defaults of waiter's options (DefaultOptions() if
	// the zero value); the file and then the flags go over them. Start
	// from DefaultOptions() and change fields: a literal with a few fields
	// set leaves the others at zero, not at waiter's defaults.
	Options Options
	// Defaults are the defaults of the program's own settings: exported
	// fields with yaml tags, which are keys of the same file as waiter's
	// options and flags (a "state_dir" key is -state-dir).
	Defaults S
	// ConfigFile is read when -config is not given; empty: none.
	ConfigFile string
	// Check validates the settings after they are read; return a
	// *config.FieldError to have the file and line named.
	Check func(*S) error
	// Hooks are the server's hooks; OnProcess is required.
	Hooks Hooks
	// TLSConfig, when set, serves TLS with it instead of the ssl_* files
	// (see Server.TLSConfig): main builds it in every process.
	TLSConfig *tls.Config
	// Logger, when nil, is NewLogger's: text on stderr, or journald's
	// native entries under systemd.
	Logger *logrus.Logger

	srv *Server
}

// Main parses the command line, then checks (-check) or serves, and exits
// with Net::Waiter's status: 0, 1 for a bad configuration, 100 when the
// listen socket cannot be created.
func (a *App[S]) Main() {
	os.Exit(a.Run(os.Args[1:], os.Stdout, os.Stderr))
}

// Run is Main without the exit: it returns the exit status.
func (a *App[S]) Run(args []string, stdout, stderr io.Writer) int {
	name := a.Name
	if name == "" {
		name = filepath.Base(os.Args[0])
	}
	log := a.Logger
	if log == nil {
		log = NewLogger(false)
		if log.Out == os.Stderr {
			log.Out = stderr
		}
	}
	if pool.IsWorker() {
		// A worker's options and settings come from its master; the file
		// and the flags were the master's to read.
		srv := a.server(log, nil)
		return pool.ExitCode(srv.Run()) // never returns in a worker
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", a.ConfigFile, "YAML file of options and settings (keys as the flags, with _ for -)")
	check := fs.Bool("check", false, "read and check the configuration, then exit: 0 if good, 1 naming what is wrong")
	opts := a.defaults()
	settings := a.Defaults
	flags := config.NewFlags(fs, &opts, &settings)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return ExitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", name, fs.Arg(0))
		return ExitConfig
	}
	load := func() (Options, S, error) { return a.load(*cfgPath, flags) }
	if *check {
		o, _, err := load()
		if err == nil && o.SSL && a.TLSConfig == nil {
			// The certificates too, as the master will read them: a check
			// that passes a broken rotation would let systemctl reload
			// succeed and the master refuse it. A permission error is not
			// conclusive here (ExecReload='s process may not see the
			// service's LoadCredential= copies): the master decides.
			if _, _, terr := activation.TLSConfig(o); terr != nil && !errors.Is(terr, iofs.ErrPermission) {
				err = terr
			}
		}
		if err != nil {
			if pool.StderrIsJournal() {
				// ExecReload='s check: the reason at PRIORITY=3, where the
				// master's own refusal would be.
				log.Errorf("%s: configuration refused: %v", name, err)
			} else {
				fmt.Fprintf(stderr, "%s: %v\n", name, err)
			}
			paceFailedStart()
			return ExitConfig
		}
		where := "flags and defaults"
		if *cfgPath != "" {
			where = *cfgPath
		}
		fmt.Fprintf(stdout, "%s: configuration ok (%s)\n", name, where)
		return 0
	}
	srv := a.server(log, load)
	err := srv.Run()
	if errors.Is(err, ErrConfig) {
		paceFailedStart()
	}
	return pool.ExitCode(err)
}

// paceFailedStart makes a start that fails on its configuration take a
// second when systemd runs it (INVOCATION_ID is set for a unit's
// processes). A client queued on the socket while the file is broken makes
// systemd start the service again at once, over and over: at full speed
// that hits the socket's trigger limit (20 in 2 s) and fails the socket
// until reset-failed; paced, the starts go on (the units set
// StartLimitIntervalSec=0) and the first one after the file is fixed
// serves the client.
func paceFailedStart() {
	if os.Getenv("INVOCATION_ID") != "" {
		time.Sleep(time.Second)
	}
}

func (a *App[S]) defaults() Options {
	if reflect.ValueOf(a.Options).IsZero() {
		return DefaultOptions()
	}
	return a.Options
}

// load reads the file over the defaults and the flags over the file, and
// checks the result whole: waiter's options and the program's settings.
func (a *App[S]) load(path string, flags *config.Flags) (Options, S, error) {
	o, s := a.defaults(), a.Defaults
	var lines config.Lines
	if path != "" {
		var err error
		if lines, err = config.LoadFile(path, &o, &s); err != nil {
			return o, s, err
		}
	}
	if err := flags.Apply(&o, &s); err != nil {
		return o, s, err
	}
	probe := o
	probe.Normalize()
	err := probe.Validate()
	if err == nil && a.Check != nil {
		err = a.Check(&s)
	}
	var fe *config.FieldError
	if errors.As(err, &fe) && flags.Has(fe.Key) {
		// The value came from the command line, not from the file's line.
		err = fmt.Errorf("flag -%s: %w", strings.ReplaceAll(fe.Key, "_", "-"), err)
	} else if err != nil && path != "" {
		err = config.Locate(err, path, lines)
	}
	return o, s, err
}

// server builds the pool's server; load is nil in a worker.
func (a *App[S]) server(log *logrus.Logger, load func() (Options, S, error)) *Server {
	srv := pool.New(a.defaults(), a.Hooks)
	srv.Logger = log
	srv.TLSConfig = a.TLSConfig
	srv.Decode = func(b []byte) (any, error) {
		var s S
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, err
		}
		return &s, nil
	}
	if load != nil {
		srv.Load = func() (config.Options, any, error) {
			o, s, err := load()
			return o, &s, err
		}
	}
	a.srv = srv
	return srv
}

// Settings returns the program's settings (an App's S) for a hook: with
// OnProcess's context, those of the worker serving it (its own generation's,
// even in nofork while a reload starts the next one); with nil or any other
// context, this process's current ones (a worker's, or the master's last
// loaded); before Run, nil. Treat them as read-only: the hooks of one worker
// share them.
func Settings[S any](ctx context.Context) *S {
	if ctx != nil {
		if s, ok := pool.SettingsFrom(ctx).(*S); ok {
			return s
		}
	}
	if srv := pool.Running(); srv != nil {
		if s, ok := srv.CurrentSettings().(*S); ok {
			return s
		}
	}
	return nil
}

// Server returns the running server (for BusyKidsCount, Log, ...), nil
// before Main.
func (a *App[S]) Server() *Server { return a.srv }
