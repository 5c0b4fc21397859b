package pool

import (
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"

	"github.com/waiter-go/waiter/hooks"
)

// NewLogger is the logger a server uses when it is given none, for a
// program to log through before Run (a start-up error then reaches the
// journal at PRIORITY=3, as Run's own do): text on stderr, or native
// journald entries when stderr is the journal (JOURNAL_STREAM), and the
// Log/LogDebug hooks of set instead of either when they are set.
func NewLogger(debug bool, set hooks.Set) *logrus.Logger { return newLogger(debug, set) }

// newLogger builds the logger a server uses when the user gave none: text on
// stderr, or native journald entries when stderr is the journal (systemd sets
// JOURNAL_STREAM to its device:inode), and the user's Log/LogDebug hooks
// instead of either when they are set.
func newLogger(debug bool, set hooks.Set) *logrus.Logger {
	l := logrus.New()
	l.Out = os.Stderr
	l.Formatter = &logrus.TextFormatter{FullTimestamp: true, DisableColors: true}
	l.Level = logrus.InfoLevel
	if debug {
		l.Level = logrus.DebugLevel
	}
	switch {
	case set.Log != nil || set.LogDebug != nil:
		l.Out = io.Discard
		l.AddHook(&userLogHook{log: set.Log, debug: set.LogDebug})
	case stderrIsJournal() && journal.Enabled():
		l.Out = io.Discard
		l.AddHook(journalHook{})
	}
	return l
}

// StderrIsJournal reports whether stderr is systemd's journal stream, where
// a line should be a native entry with its PRIORITY rather than text.
func StderrIsJournal() bool { return stderrIsJournal() }

// stderrIsJournal follows systemd.exec(5): JOURNAL_STREAM names the device
// and inode of the stream stderr must still be connected to.
func stderrIsJournal() bool {
	v := os.Getenv("JOURNAL_STREAM")
	if v == "" {
		return false
	}
	var dev, ino uint64
	if _, err := fmt.Sscanf(v, "%d:%d", &dev, &ino); err != nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && st.Ino == ino
}

// journalHook sends each entry as a native journal entry: PRIORITY follows
// the logrus level, and the entry's fields become journal fields (HOOK, PEER,
// WORKER_PID, ...).
type journalHook struct{}

func (journalHook) Levels() []logrus.Level { return logrus.AllLevels }

func (journalHook) Fire(e *logrus.Entry) error {
	vars := make(map[string]string, len(e.Data)+1)
	for k, v := range e.Data {
		vars[journalKey(k)] = fmt.Sprint(v)
	}
	vars["SYSLOG_IDENTIFIER"] = syslogIdentifier()
	// A full disk or a stopped journald must not stop serving: drop the line.
	journal.Send(e.Message, levelPriority(e.Level), vars)
	return nil
}

func levelPriority(l logrus.Level) journal.Priority {
	switch l {
	case logrus.PanicLevel:
		return journal.PriEmerg
	case logrus.FatalLevel:
		return journal.PriCrit
	case logrus.ErrorLevel:
		return journal.PriErr
	case logrus.WarnLevel:
		return journal.PriWarning
	case logrus.InfoLevel:
		return journal.PriInfo
	}
	return journal.PriDebug
}

// journalKey makes a logrus field name a valid journal field name: upper
// case letters, digits and underscores, not starting with an underscore.
func journalKey(k string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(k) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), "_")
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		s = "F_" + s
	}
	return s
}

func syslogIdentifier() string {
	name := os.Args[0]
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	return name
}

// userLogHook is where the Log and LogDebug hooks are called: the only place.
type userLogHook struct {
	log   func(logrus.Level, string, logrus.Fields)
	debug func(string, logrus.Fields)
}

func (userLogHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *userLogHook) Fire(e *logrus.Entry) (err error) {
	defer func() {
		if v := recover(); v != nil {
			fmt.Fprintf(os.Stderr, "waiter: log hook panicked: %v (line was: %s)\n", v, e.Message)
		}
	}()
	if e.Level >= logrus.DebugLevel {
		if h.debug != nil {
			h.debug(e.Message, e.Data)
		}
		return nil
	}
	if h.log != nil {
		h.log(e.Level, e.Message, e.Data)
	}
	return nil
}
