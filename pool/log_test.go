package pool

import (
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"

	"github.com/waiter-go/waiter/hooks"
)

func TestJournalPriorityFollowsLevel(t *testing.T) {
	for lvl, want := range map[logrus.Level]journal.Priority{
		logrus.ErrorLevel: journal.PriErr, logrus.WarnLevel: journal.PriWarning,
		logrus.InfoLevel: journal.PriInfo, logrus.DebugLevel: journal.PriDebug,
		logrus.TraceLevel: journal.PriDebug, logrus.FatalLevel: journal.PriCrit,
	} {
		if have := levelPriority(lvl); have != want {
			t.Errorf("%s: want priority %d, have %d", lvl, want, have)
		}
	}
}

func TestJournalKey(t *testing.T) {
	for in, want := range map[string]string{
		"WORKER_PID": "WORKER_PID", "peer": "PEER", "mode": "MODE", "a-b.c": "A_B_C", "_x": "X", "1st": "F_1ST",
	} {
		if have := journalKey(in); have != want {
			t.Errorf("%q: want %q, have %q", in, want, have)
		}
	}
}

// The user's Log and LogDebug hooks replace logrus's output.
func TestUserLogHooks(t *testing.T) {
	var got []string
	l := newLogger(true, hooksWithLog(&got))
	l.Warn("w")
	l.Debug("d")
	l.Info("i")
	if len(got) != 3 || got[0] != "warning:w" || got[1] != "debug:d" || got[2] != "info:i" {
		t.Fatalf("have %v", got)
	}
}

func hooksWithLog(got *[]string) (s hooks.Set) {
	s.Log = func(l logrus.Level, m string, _ logrus.Fields) { *got = append(*got, l.String()+":"+m) }
	s.LogDebug = func(m string, _ logrus.Fields) { *got = append(*got, "debug:"+m) }
	return s
}
