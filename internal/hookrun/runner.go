// Package hookrun calls a program's hooks (a hooks.Set): one method per
// hook, each the one call site of its hook, each recovering a panic into a
// *PanicError. Only package pool uses it.
package hookrun

import (
	"context"
	"fmt"
	"github.com/waiter-go/waiter/hooks"
	"net"
	"runtime/debug"
	"syscall"

	"github.com/sirupsen/logrus"
)

// PanicError is returned by a Runner method whose hook panicked.
type PanicError struct {
	Hook  string
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("hook %s panicked: %v", e.Hook, e.Value) }

// Runner calls the hooks of a Set. Each method recovers a panic in its hook,
// logs it once with the stack and the HOOK field, and returns it as a
// *PanicError, so that one bad hook costs at most one client.
type Runner struct {
	set hooks.Set
	log logrus.FieldLogger
}

// NewRunner wraps a Set; log receives panics.
func NewRunner(s hooks.Set, log logrus.FieldLogger) *Runner { return &Runner{set: s, log: log} }

// guard is deferred by every method: it turns a panic into a *PanicError.
func (r *Runner) guard(hook string, err *error) {
	v := recover()
	if v == nil {
		return
	}
	pe := &PanicError{Hook: hook, Value: v, Stack: debug.Stack()}
	r.log.WithFields(logrus.Fields{"HOOK": hook, "STACK": string(pe.Stack)}).Errorf("hook %s panicked: %v", hook, v)
	if err != nil {
		*err = pe
	}
}

func (r *Runner) call(hook string, f func()) (err error) {
	if f == nil {
		return nil
	}
	defer r.guard(hook, &err)
	f()
	return nil
}

func (r *Runner) ServerBegin() error { return r.call("on_server_begin", r.set.OnServerBegin) }
func (r *Runner) ListenOK() error    { return r.call("on_listen_ok", r.set.OnListenOK) }
func (r *Runner) PreforkIdle() error {
	return r.call("on_prefork_child_idle", r.set.OnPreforkChildIdle)
}
func (r *Runner) ForkingIdle() error  { return r.call("on_forking_idle", r.set.OnForkingIdle) }
func (r *Runner) ChildExit() error    { return r.call("on_child_exit", r.set.OnChildExit) }
func (r *Runner) ServerClose() error  { return r.call("on_server_close", r.set.OnServerClose) }
func (r *Runner) SigUSR1() error      { return r.call("on_sig_usr1", r.set.OnSigUSR1) }
func (r *Runner) SigUSR2() error      { return r.call("on_sig_usr2", r.set.OnSigUSR2) }
func (r *Runner) SigHUP() error       { return r.call("on_sig_hup", r.set.OnSigHUP) }
func (r *Runner) ChildSigUSR1() error { return r.call("on_child_sig_usr1", r.set.OnChildSigUSR1) }
func (r *Runner) ChildSigUSR2() error { return r.call("on_child_sig_usr2", r.set.OnChildSigUSR2) }
func (r *Runner) ChildSigHUP() error  { return r.call("on_child_sig_hup", r.set.OnChildSigHUP) }

func (r *Runner) AcceptError(e error) (err error) {
	if r.set.OnAcceptError == nil {
		return nil
	}
	defer r.guard("on_accept_error", &err)
	r.set.OnAcceptError(e)
	return nil
}

func (r *Runner) AcceptOK(c net.Conn) (err error) {
	if r.set.OnAcceptOK == nil {
		return nil
	}
	defer r.guard("on_accept_ok", &err)
	r.set.OnAcceptOK(c)
	return nil
}

func (r *Runner) ForkOK(pid int) (err error) {
	if r.set.OnForkOK == nil {
		return nil
	}
	defer r.guard("on_fork_ok", &err)
	r.set.OnForkOK(pid)
	return nil
}

// Process runs on_process; its own error is returned as it is.
func (r *Runner) Process(ctx context.Context, c net.Conn) (err error) {
	if r.set.OnProcess == nil {
		return hooks.ErrNoProcess
	}
	defer r.guard("on_process", &err)
	return r.set.OnProcess(ctx, c)
}

// ChildStart runs on_child_start; its own error is returned as it is.
func (r *Runner) ChildStart() (err error) {
	if r.set.OnChildStart == nil {
		return nil
	}
	defer r.guard("on_child_start", &err)
	return r.set.OnChildStart()
}

func (r *Runner) Maxforked(c net.Conn) (err error) {
	if r.set.OnMaxforked == nil {
		return nil
	}
	defer r.guard("on_maxforked", &err)
	r.set.OnMaxforked(c)
	return nil
}

func (r *Runner) SourceLimited(c net.Conn) (err error) {
	if r.set.OnSourceLimited == nil {
		return nil
	}
	defer r.guard("on_source_limited", &err)
	r.set.OnSourceLimited(c)
	return nil
}

func (r *Runner) Close(c net.Conn) (err error) {
	if r.set.OnClose == nil {
		return nil
	}
	defer r.guard("on_close", &err)
	r.set.OnClose(c)
	return nil
}

func (r *Runner) SSLError(e error) (err error) {
	if r.set.OnSSLError == nil {
		return nil
	}
	defer r.guard("on_ssl_error", &err)
	r.set.OnSSLError(e)
	return nil
}

func (r *Runner) SigChild(pid int, st syscall.WaitStatus) (err error) {
	if r.set.OnSigChild == nil {
		return nil
	}
	defer r.guard("on_sig_child", &err)
	r.set.OnSigChild(pid, st)
	return nil
}

// HasAcceptOK and HasMaxforked let the forking master skip building a
// net.Conn for a client it only passes on.
func (r *Runner) HasAcceptOK() bool  { return r.set.OnAcceptOK != nil }
func (r *Runner) HasMaxforked() bool { return r.set.OnMaxforked != nil || r.set.OnClose != nil }
