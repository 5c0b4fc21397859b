// Package control is the master's control socket: the protocol (one JSON
// request a line, one JSON reply a line), the server loop the master runs
// on a unix socket, and the client waiterctl uses.
//
// The server answers only its own uid and root (SO_PEERCRED), reads at
// most MaxRequest bytes a line, serves at most MaxConns clients at once,
// and gives every request a deadline: a client that misbehaves is answered
// with an error or dropped, and the master's supervisor never waits on it.
package control

import (
	"fmt"
	"strconv"
	"time"
)

// Commands.
const (
	CmdStatus  = "status"  // the pool, its workers and listeners
	CmdReload  = "reload"  // SIGHUP, and wait for its result
	CmdWorkers = "workers" // N > 0: TTIN N times; N < 0: TTOU -N times
	CmdStacks  = "stacks"  // one worker's goroutine stacks, PID
)

// Request is one line from a client.
type Request struct {
	Cmd string `json:"cmd"`
	// N is the change for CmdWorkers.
	N int `json:"n,omitempty"`
	// PID is the worker for CmdStacks.
	PID int `json:"pid,omitempty"`
	// PSS asks CmdStatus for each worker's proportional set size too
	// (/proc/PID/smaps_rollup: costly with many workers, so on request).
	PSS bool `json:"pss,omitempty"`
}

// Reply is one line to a client: OK with what was asked for, or Error.
//
// A reload that is refused (the options do not load or validate) or fails
// (its workers do not start) is an error reply: OK false, Error saying why,
// and Reload set (Result "refused" or "failed") when the master recorded
// it. A reload that is superseded by another waits for the newer one's
// result. A workers change that was partly made is OK, with
// WorkersResult.Refused saying why the rest was not; one refused whole is
// an error reply.
type Reply struct {
	OK      bool           `json:"ok"`
	Error   string         `json:"error,omitempty"`
	Status  *Status        `json:"status,omitempty"`
	Reload  *ReloadResult  `json:"reload,omitempty"`
	Workers *WorkersResult `json:"workers,omitempty"`
	Stacks  string         `json:"stacks,omitempty"`
}

// Status is the master's view, as of the request.
type Status struct {
	// At is when the master took this snapshot.
	At        time.Time `json:"at"`
	PID       int       `json:"pid"`
	Mode      string    `json:"mode"` // prefork, fixed, forking, nofork, connected
	Started   time.Time `json:"started"`
	Stopping  bool      `json:"stopping"`
	Reloading bool      `json:"reloading"`
	// Generation is the newest generation (what new workers get);
	// Serving the last one that became ready.
	Generation int `json:"generation"`
	Serving    int `json:"serving"`
	// The limits: Prefork is the current target (TTIN/TTOU change it).
	Prefork int `json:"prefork"`
	Maxfork int `json:"maxfork"`
	Spares  int `json:"spares"`
	// Served and Failed count every client since the start.
	Served uint64 `json:"served"`
	Failed uint64 `json:"failed"`
	// Maxforked counts the clients forking mode handed to on_maxforked
	// (the pool full for longer than maxfork_wait); Queued is how many
	// accepted clients wait in the master for a worker now.
	Maxforked uint64 `json:"maxforked"`
	Queued    int    `json:"queued"`
	// Reloads by result, and the last one.
	Reloads    map[string]uint64 `json:"reloads"` // ok, refused, failed
	LastReload *ReloadResult     `json:"last_reload,omitempty"`
	// ListenOverflows is the kernel's count of connections dropped because
	// an accept queue was full (TcpExt ListenOverflows: every socket of
	// this network namespace), and how much it grew in the last minute.
	ListenOverflows       uint64 `json:"listen_overflows"`
	ListenOverflowsMinute uint64 `json:"listen_overflows_last_minute"`
	// Note is what STATUS= adds: a refused reload, an overflow.
	Note      string     `json:"note,omitempty"`
	Workers   []Worker   `json:"workers"`
	Listeners []Listener `json:"listeners"`
}

// Worker is one worker's line.
type Worker struct {
	PID  int    `json:"pid"`
	Slot int    `json:"slot"`
	Gen  int    `json:"generation"`
	Kind string `json:"kind"` // worker, spare, oneshot, in-process
	// State: starting, idle, busy, exiting, and retiring for a worker told
	// to finish (it may still be busy: Busy says so).
	State  string `json:"state"`
	Served uint64 `json:"served"`
	Failed uint64 `json:"failed"`
	// Peer is the current client's address and Busy how long it has been
	// served ("" and 0 when idle).
	Peer string   `json:"peer,omitempty"`
	Busy Duration `json:"busy"`
	Age  Duration `json:"age"`
	// RSS and PSS in bytes (PSS only when asked for), CPU in seconds
	// (user + system), as the master last sampled them.
	RSS uint64  `json:"rss"`
	PSS uint64  `json:"pss,omitempty"`
	CPU float64 `json:"cpu_seconds"`
}

// Listener is one listening socket.
type Listener struct {
	Name string `json:"name,omitempty"`
	Addr string `json:"addr"`
	// Queue is the accept queue's length now and MaxQueue its maximum (the
	// backlog), read from the kernel (TCP_INFO); -1 when it cannot tell
	// (a unix socket).
	Queue    int64  `json:"queue"`
	MaxQueue int64  `json:"max_queue"`
	Served   uint64 `json:"served"`
	Failed   uint64 `json:"failed"`
}

// ReloadResult is what a reload came to.
type ReloadResult struct {
	Generation int       `json:"generation,omitempty"` // 0: refused, no generation was made
	Result     string    `json:"result"`               // ok, refused, failed
	Reason     string    `json:"reason,omitempty"`
	At         time.Time `json:"at"`
}

// WorkersResult is what a workers request did.
type WorkersResult struct {
	// Prefork (or Spares in forking mode) is the target now.
	Target int `json:"target"`
	// Refused says why some of the change was not made ("" when all was).
	Refused string `json:"refused,omitempty"`
}

// Duration is a time.Duration that is seconds (a float) in JSON, for
// scripts.
type Duration time.Duration

func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(time.Duration(d).Seconds(), 'f', 3, 64)), nil
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("control: duration %s: want seconds", b)
	}
	*d = Duration(f * float64(time.Second))
	return nil
}
