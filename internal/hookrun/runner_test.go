package hookrun

import (
	"bytes"
	"context"
	"errors"
	"github.com/waiter-go/waiter/hooks"
	"net"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestRunnerRecoversPanics(t *testing.T) {
	var buf bytes.Buffer
	l := logrus.New()
	l.Out = &buf
	r := NewRunner(hooks.Set{
		OnProcess:  func(context.Context, net.Conn) error { panic("boom") },
		OnListenOK: func() { panic("early") },
	}, l)
	err := r.Process(context.Background(), nil)
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Hook != "on_process" || pe.Value != "boom" || len(pe.Stack) == 0 {
		t.Fatalf("want a PanicError from on_process, have %#v", err)
	}
	if err := r.ListenOK(); !errors.As(err, &pe) || pe.Hook != "on_listen_ok" {
		t.Fatalf("want a PanicError from on_listen_ok, have %v", err)
	}
	log := buf.String()
	if strings.Count(log, "panicked") != 2 || !strings.Contains(log, "HOOK=on_process") || !strings.Contains(log, "runner_test.go") {
		t.Fatalf("want each panic logged once with its hook and stack:\n%s", log)
	}
}

func TestRunnerUnsetHooks(t *testing.T) {
	r := NewRunner(hooks.Set{}, logrus.New())
	if err := r.Process(context.Background(), nil); !errors.Is(err, hooks.ErrNoProcess) {
		t.Fatalf("an unset on_process: want hooks.ErrNoProcess, have %v", err)
	}
	for name, f := range map[string]func() error{
		"ListenOK": r.ListenOK, "ChildStart": r.ChildStart, "ServerClose": r.ServerClose,
		"SigUSR1": r.SigUSR1, "AcceptOK": func() error { return r.AcceptOK(nil) },
		"SigChild": func() error { return r.SigChild(1, 0) },
	} {
		if err := f(); err != nil {
			t.Errorf("unset %s: want nothing, have %v", name, err)
		}
	}
}

func TestProcessErrorPassesThrough(t *testing.T) {
	want := errors.New("mine")
	r := NewRunner(hooks.Set{OnProcess: func(context.Context, net.Conn) error { return want }}, logrus.New())
	if err := r.Process(context.Background(), nil); err != want {
		t.Fatalf("have %v", err)
	}
}
