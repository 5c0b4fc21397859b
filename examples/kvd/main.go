// Command kvd is a key-value daemon with a line protocol, built on
// waiter.App: a pool of worker processes (prefork 4, up to 16) that share
// one state directory.
//
//	GET key        VALUE v | NOTFOUND
//	SET key value  OK          (value: the rest of the line, spaces included)
//	DEL key        OK | NOTFOUND
//	QUIT           OK, then the server closes
//
// Anything else, or a failure, is answered ERR and a reason, and the
// session goes on. Keys are 1 to 128 of A-Z a-z 0-9 _ - . : @, not starting
// with a dot. Its settings, in the same YAML file as waiter's options (or
// as flags: -state-dir, -max-value-bytes, -readonly), are re-read on
// SIGHUP and apply to clients that connect after it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/waiter-go/waiter"
	"github.com/waiter-go/waiter/config"
)

// settings are kvd's own keys.
type settings struct {
	// StateDir holds one file per key. Under systemd it is the unit's
	// StateDirectory=kvd, /var/lib/kvd.
	StateDir string `yaml:"state_dir"`
	// MaxValueBytes is the longest value a SET takes.
	MaxValueBytes int `yaml:"max_value_bytes"`
	// Readonly refuses SET and DEL.
	Readonly bool `yaml:"readonly"`
}

func main() {
	opts := waiter.DefaultOptions()
	opts.Port, opts.Prefork, opts.Maxfork = 7070, 4, 16
	app := &waiter.App[settings]{
		Options:  opts,
		Defaults: settings{StateDir: "/var/lib/kvd", MaxValueBytes: 4096},
		Check:    check,
		Hooks: waiter.Hooks{
			OnChildStart: openState,
			OnProcess:    session,
		},
	}
	app.Main()
}

// maxValueLimit bounds max_value_bytes: a session's line buffer is that big.
const maxValueLimit = 1 << 20

// check refuses settings kvd cannot serve with, naming the key (and so,
// through App, the file and line). It runs in the master, at start, on each
// reload and for -check; it has no side effect.
func check(s *settings) error {
	if s.MaxValueBytes < 1 || s.MaxValueBytes > maxValueLimit {
		return &config.FieldError{Key: "max_value_bytes", Value: strconv.Itoa(s.MaxValueBytes),
			Reason: fmt.Sprintf("want 1 to %d", maxValueLimit)}
	}
	if !filepath.IsAbs(s.StateDir) {
		return &config.FieldError{Key: "state_dir", Value: s.StateDir, Reason: "want an absolute path"}
	}
	// A missing directory is fine (each worker creates it); one that is
	// something else is not.
	fi, err := os.Stat(s.StateDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return &config.FieldError{Key: "state_dir", Value: s.StateDir, Reason: err.Error()}
	case !fi.IsDir():
		return &config.FieldError{Key: "state_dir", Value: s.StateDir, Reason: "not a directory"}
	}
	return nil
}

// The state: one file per key in state_dir, replaced by rename(2).
//
// Why not one file under flock: every SET would be a read-modify-write of
// the whole store under an exclusive lock, serialising the pool's workers
// on one another, and a worker killed in the middle (graceful_timeout ends
// in SIGKILL) would leave a half-written store for the next to repair.
// With a file per key no lock is ever held: a SET writes a temporary file
// in the same directory, fsyncs it and renames it over the key's name.
// rename is atomic, so a GET in any worker reads the old value or the new
// one, never a mix; SETs of different keys never touch each other, and
// concurrent SETs of one key are last writer wins, each whole. The fsync
// of the directory after the rename makes OK mean "on disk". A killed
// worker leaves at worst a temporary file, which the next worker start
// removes once it is stale. The price: an inode per key, and keys limited
// to characters that are safe in a file name.

// tmpPrefix starts the temporary files' names; no key starts with a dot.
const tmpPrefix = ".tmp-"

var validKey = regexp.MustCompile(`^[A-Za-z0-9_@:-][A-Za-z0-9_.@:-]{0,127}$`)

// openState is OnChildStart: it makes sure this worker can use the state
// directory before it takes a client. An error ends the worker; waiter
// logs it once and retries with a back-off until the directory is usable.
func openState() error {
	s := waiter.Settings[settings](nil)
	dir := s.StateDir
	if s.Readonly {
		f, err := os.Open(dir)
		if err != nil {
			return fmt.Errorf("state_dir: %w", err)
		}
		defer f.Close()
		if _, err := f.Readdirnames(1); err != nil && err != io.EOF {
			return fmt.Errorf("state_dir %s: %w", dir, err)
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	probe, err := os.CreateTemp(dir, tmpPrefix+"probe-*")
	if err != nil {
		return fmt.Errorf("state_dir %s is not writable: %w", dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	removeStale(dir)
	return nil
}

// removeStale removes temporary files left by killed workers: those older
// than any SET takes.
func removeStale(dir string) {
	tmps, _ := filepath.Glob(filepath.Join(dir, tmpPrefix+"*"))
	for _, p := range tmps {
		if fi, err := os.Lstat(p); err == nil && time.Since(fi.ModTime()) > 10*time.Minute {
			os.Remove(p)
		}
	}
}

func get(dir, key string) ([]byte, error) { return os.ReadFile(filepath.Join(dir, key)) }

func set(dir, key string, val []byte) error {
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return err
	}
	_, err = f.Write(val)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, key))
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	return syncDir(dir)
}

func del(dir, key string) error {
	if err := os.Remove(filepath.Join(dir, key)); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// session is OnProcess: one client's commands, one line each, until QUIT,
// EOF, or the worker is told to stop (a stop, a reload), when an idle
// session is told BYE.
func session(ctx context.Context, c net.Conn) error {
	s := waiter.Settings[settings](ctx)
	// A read blocked on an idle client ends when the stop comes.
	defer context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })()
	// The longest line a SET may send: the line buffer, so that a client
	// cannot make a worker hold more.
	r := bufio.NewReaderSize(c, len("SET ")+128+1+s.MaxValueBytes+len("\r\n"))
	w := bufio.NewWriter(c)
	for {
		line, tooLong, err := readLine(r)
		if err != nil {
			if ctx.Err() != nil {
				_, err := io.WriteString(c, "BYE server stopping\n")
				return err
			}
			if err == io.EOF {
				return nil
			}
			return err
		}
		reply, quit := "ERR line too long (max_value_bytes "+strconv.Itoa(s.MaxValueBytes)+")", false
		if !tooLong {
			reply, quit = command(ctx, s, line)
		}
		w.WriteString(reply)
		w.WriteByte('\n')
		if err := w.Flush(); err != nil || quit {
			return err
		}
	}
}

// readLine returns the next line without its end (\n or \r\n). A line
// longer than r's buffer is read to its end and dropped (tooLong). The line
// is valid until the next read.
func readLine(r *bufio.Reader) (line []byte, tooLong bool, err error) {
	line, err = r.ReadSlice('\n')
	for err == bufio.ErrBufferFull {
		tooLong = true
		_, err = r.ReadSlice('\n')
	}
	if err == io.EOF && len(line) > 0 && !tooLong {
		err = nil // a last line without its newline
	}
	if err != nil {
		return nil, false, err
	}
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	return line, tooLong, nil
}

// command runs one command line and returns its reply, and whether the
// session ends.
func command(ctx context.Context, s *settings, line []byte) (reply string, quit bool) {
	verb, rest, _ := bytes.Cut(line, []byte(" "))
	cmd := strings.ToUpper(string(verb))
	var key string
	var val []byte
	switch cmd {
	case "QUIT":
		return "OK", true
	case "GET", "DEL":
		key = string(rest)
	case "SET":
		k, v, ok := bytes.Cut(rest, []byte(" "))
		if !ok || len(v) == 0 {
			return "ERR usage: SET key value", false
		}
		key, val = string(k), v
	case "":
		return "ERR empty line", false
	default:
		return fmt.Sprintf("ERR unknown command %q (GET, SET, DEL, QUIT)", verb), false
	}
	if !validKey.MatchString(key) {
		return fmt.Sprintf("ERR bad key %q: 1 to 128 of A-Z a-z 0-9 _ - . : @, not starting with a dot", key), false
	}
	if s.Readonly && cmd != "GET" {
		return "ERR readonly", false
	}
	var err error
	switch cmd {
	case "GET":
		if val, err = get(s.StateDir, key); err == nil {
			return "VALUE " + string(val), false
		}
	case "SET":
		if len(val) > s.MaxValueBytes {
			return fmt.Sprintf("ERR value too long: %d bytes, max_value_bytes %d", len(val), s.MaxValueBytes), false
		}
		err = set(s.StateDir, key, val)
	case "DEL":
		err = del(s.StateDir, key)
	}
	switch {
	case err == nil:
		return "OK", false
	case errors.Is(err, fs.ErrNotExist):
		return "NOTFOUND", false
	}
	waiter.ServerFrom(ctx).Log().WithField("KEY", key).Warnf("kvd: %s: %v", cmd, err)
	return "ERR storage: " + err.Error(), false
}
