package pool

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/waiter-go/waiter/config"
)

// What a worker inherits. The fds have fixed numbers so that a worker needs
// no parsing to find them; the variables carry the rest. These names are the
// only environment a worker reads from the master.
const (
	envRole    = "WAITER_ROLE"    // "worker" (prefork) or "oneshot" (forking)
	envSlot    = "WAITER_SLOT"    // scoreboard slot
	envGen     = "WAITER_GEN"     // generation (reloads)
	envMaster  = "WAITER_MASTER"  // master pid (get_parent_pid)
	envOptions = "WAITER_OPTIONS" // the master's options, JSON
	envNames   = "WAITER_NAMES"   // listener names, ':'-separated
	envHandoff = "WAITER_HANDOFF" // "spare": fd 7 is a socket the client arrives on
	envCarry   = "WAITER_CARRY"   // the program's own settings (Server.Carry), JSON
	envTLS     = "WAITER_TLS_FD"  // a memfd with the TLS files the master read (activation.TLSPEM, JSON)

	fdScoreboard = 3 // memfd
	fdLifeline   = 4 // read end of a pipe: EOF means the master is gone
	fdEvents     = 5 // write end of the master's event pipe
	fdStacks     = 6 // the workers' end of the stacks socket (stacks.go)
	fdFirst      = 7 // listeners (prefork), the client (oneshot), or the handoff socket (spare)
)

const (
	roleMaster  = ""
	roleWorker  = "worker"
	roleOneshot = "oneshot"
)

// workerEnv builds a worker's environment from the master's: systemd's
// variables are removed because only the master talks to systemd (and
// LISTEN_PID could never name the child), and waiter's own are set.
func workerEnv(base []string, vars map[string]string) []string {
	out := make([]string, 0, len(base)+len(vars))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "LISTEN_"), k == "NOTIFY_SOCKET", strings.HasPrefix(k, "WATCHDOG_"), k == "FDSTORE",
			strings.HasPrefix(k, "WAITER_"):
			continue
		}
		out = append(out, kv)
	}
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return out
}

// withVars returns a copy of env (already filtered by workerEnv) with vars
// appended: the per-spawn part of a worker's environment.
func withVars(env []string, vars map[string]string) []string {
	out := make([]string, len(env), len(env)+len(vars))
	copy(out, env)
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return out
}

// workerInfo is what a worker learns from its environment.
type workerInfo struct {
	role    string
	slot    int
	gen     int
	master  int
	opts    config.Options
	names   []string
	handoff bool
	carry   string
	tlsFd   int // -1: none
}

func readWorkerInfo() (workerInfo, error) {
	wi := workerInfo{role: os.Getenv(envRole)}
	var err error
	num := func(k string) int {
		if err != nil {
			return 0
		}
		n, e := strconv.Atoi(os.Getenv(k))
		if e != nil {
			err = fmt.Errorf("pool: worker: %s=%q: not a number", k, os.Getenv(k))
		}
		return n
	}
	wi.slot = num(envSlot)
	wi.gen = num(envGen)
	wi.master = num(envMaster)
	if err != nil {
		return wi, err
	}
	if e := json.Unmarshal([]byte(os.Getenv(envOptions)), &wi.opts); e != nil {
		return wi, fmt.Errorf("pool: worker: %s: %w", envOptions, e)
	}
	if n := os.Getenv(envNames); n != "" {
		wi.names = strings.Split(n, ":")
	}
	wi.handoff = os.Getenv(envHandoff) == "spare"
	wi.carry = os.Getenv(envCarry)
	wi.tlsFd = -1
	if v := os.Getenv(envTLS); v != "" {
		if wi.tlsFd = num(envTLS); err != nil {
			return wi, err
		}
	}
	for _, k := range []string{envRole, envSlot, envGen, envMaster, envOptions, envNames, envHandoff, envCarry, envTLS} {
		os.Unsetenv(k)
	}
	return wi, nil
}
