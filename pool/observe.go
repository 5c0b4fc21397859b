package pool

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/waiter-go/waiter/activation"
	"github.com/waiter-go/waiter/control"
)

// What the master watches each second, in the supervisor loop (one owner):
// each worker's memory and CPU (from /proc: the workers write nothing for
// it), max_worker_rss and max_worker_rss_hard, the kernel's listen
// overflow counter, and the snapshot that metrics scrapes read.

// sampleEvery paces the /proc reads: two small files a worker a second.
const sampleEvery = time.Second

// clockTicks is USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on
// every Linux architecture Go runs on (the kernel converts for userspace).
const clockTicks = 100

type observer struct {
	at time.Time
	// the listen overflow counter: samples of the last minute
	ovf     []ovfSample
	ovfWarn time.Time
	ovfErr  bool
	// the duration histogram of reaped workers (their slots are reused)
	histDead  []uint64
	sumDead   uint64
	slow      uint64    // slow_request logs
	freshWarn time.Time // the last "limit below a new worker" error
}

type ovfSample struct {
	at time.Time
	n  uint64
}

// observe runs at each tick; it does its work once a second.
func (sv *supervisor) observe(now time.Time) {
	ob := &sv.obs
	if now.Sub(ob.at) < sampleEvery {
		return
	}
	ob.at = now
	sv.sample(now)
	sv.watchOverflows(now)
	sv.publish()
}

// sample reads each worker process's RSS and CPU into its slot, and
// applies the memory limits.
func (sv *supervisor) sample(now time.Time) {
	o := sv.cur.opts.o
	soft, hard := o.MaxWorkerRSS.Bytes(), o.MaxWorkerRSSHard.Bytes()
	for _, k := range sv.kids {
		if k.pid <= 0 {
			continue
		}
		if !k.reported {
			continue // not yet the program: the spawner's fork, or its exec
		}
		rss, cpu, err := procUsage(k.pid)
		if err != nil {
			continue // exited since: the reap is on its way
		}
		sl := sv.sb.Slot(k.slot)
		sl.setUsage(rss, cpu)
		if k.kind == kindInproc || !k.killedAt.IsZero() || !k.quitAt.IsZero() || k.cause == causeMemory {
			continue // the in-process worker's memory is the master's own
		}
		over := (hard > 0 && rss > hard) || (soft > 0 && rss > soft)
		if !over {
			continue
		}
		// A worker that has served nobody is as big as the program
		// starts: ending it would only start another as big, for ever.
		if sl.Served() == 0 && sl.State() != stateBusy {
			if now.Sub(sv.obs.freshWarn) >= time.Minute {
				sv.obs.freshWarn = now
				limit := " (" + o.MaxWorkerRSS.String() + ")"
				if hard > 0 && rss > hard {
					limit = "_hard (" + o.MaxWorkerRSSHard.String() + ")"
				}
				sv.log.Errorf("waiter: a new %s (pid %d) already uses %s of memory, above max_worker_rss%s: the limit is below what a worker starts with; workers that have served no client are not ended for it",
					k.kind, k.pid, humanSize(rss), limit)
			}
			continue
		}
		switch {
		case hard > 0 && rss > hard:
			sv.log.WithField("WORKER_PID", k.pid).Errorf("waiter: %s pid %d uses %s of memory, above max_worker_rss_hard (%s): writing its stacks and killing it",
				k.kind, k.pid, humanSize(rss), o.MaxWorkerRSSHard)
			k.cause = causeMemory
			k.quitAt = now
			sv.env.signal(k, syscall.SIGQUIT)
		case k.kind == kindOneshot || k.client:
			// Forking mode: the process ends with its one client anyway.
		case k.state == kRetiring:
		case k.kind == kindSpare:
			sv.log.WithField("WORKER_PID", k.pid).Warnf("waiter: spare pid %d uses %s of memory, above max_worker_rss (%s): replacing it",
				k.pid, humanSize(rss), o.MaxWorkerRSS)
			k.cause = causeMemory
			sv.retire(k, now.Add(o.GracefulTimeout.D()))
		default:
			// Not a stop: its client goes on undisturbed (no cancelled
			// context, no deadline), and it ends after it, or at its next
			// accept timeout when idle; its replacement starts then.
			sv.log.WithField("WORKER_PID", k.pid).Warnf("waiter: %s pid %d uses %s of memory, above max_worker_rss (%s): retiring it after its client",
				k.kind, k.pid, humanSize(rss), o.MaxWorkerRSS)
			k.cause = causeMemory
			sl.askRetire()
		}
	}
}

// humanSize prints bytes as the options are written (512M).
func humanSize(b uint64) string {
	switch {
	case b >= 10<<30:
		return fmt.Sprintf("%.1fG", float64(b)/(1<<30))
	case b >= 10<<20:
		return fmt.Sprintf("%.1fM", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%.1fK", float64(b)/(1<<10))
}

// procUsage reads a process's resident set (statm) and CPU time (stat).
func procUsage(pid int) (rss uint64, cpu time.Duration, err error) {
	p := "/proc/" + strconv.Itoa(pid)
	b, err := os.ReadFile(p + "/statm")
	if err != nil {
		return 0, 0, err
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("%s/statm: %q", p, b)
	}
	pages, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("%s/statm: %w", p, err)
	}
	rss = pages * uint64(os.Getpagesize())
	b, err = os.ReadFile(p + "/stat")
	if err != nil {
		return rss, 0, err
	}
	// The command name may hold spaces and parentheses: the fields are
	// counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return rss, 0, fmt.Errorf("%s/stat: no command name", p)
	}
	f = bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return rss, 0, fmt.Errorf("%s/stat: %d fields", p, len(f))
	}
	ut, _ := strconv.ParseUint(string(f[11]), 10, 64) // utime, field 14
	st, _ := strconv.ParseUint(string(f[12]), 10, 64) // stime, field 15
	cpu = time.Duration(ut+st) * (time.Second / clockTicks)
	return rss, cpu, nil
}

// procPSS reads a process's proportional set size (smaps_rollup: it walks
// the page tables, so only on request).
func procPSS(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("Pss:")); ok {
			f := bytes.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseUint(string(f[0]), 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// overflowWarnEvery paces the overflow warning.
const overflowWarnEvery = time.Minute

// watchOverflows follows the kernel's ListenOverflows counter: when it
// grows, a warning (once a minute at most, with the count) and STATUS=
// say so, with the accept queues of this server's listeners.
func (sv *supervisor) watchOverflows(now time.Time) {
	ob := &sv.obs
	n, err := activation.ListenOverflows()
	if err != nil {
		if !ob.ovfErr {
			sv.log.Warnf("waiter: cannot watch for listen queue overflows: %v", err)
			ob.ovfErr = true
		}
		return
	}
	grew := len(ob.ovf) > 0 && n > ob.ovf[len(ob.ovf)-1].n
	ob.ovf = append(ob.ovf, ovfSample{now, n})
	for len(ob.ovf) > 1 && now.Sub(ob.ovf[0].at) > time.Minute {
		ob.ovf = ob.ovf[1:]
	}
	if !grew || now.Sub(ob.ovfWarn) < overflowWarnEvery {
		return
	}
	ob.ovfWarn = now
	queues := ""
	for _, l := range sv.listeners() {
		if l.MaxQueue >= 0 {
			queues += fmt.Sprintf("; %s: %d queued of %d", l.Addr, l.Queue, l.MaxQueue)
		}
	}
	sv.log.Warnf("waiter: the kernel dropped %d connections on full accept queues in the last minute (ListenOverflows, every socket of this network namespace)%s",
		sv.overflowsLastMinute(), queues)
	sv.status.at = time.Time{} // STATUS= at once
}

func (sv *supervisor) overflowsLastMinute() uint64 {
	ob := &sv.obs
	if len(ob.ovf) < 2 {
		return 0
	}
	return ob.ovf[len(ob.ovf)-1].n - ob.ovf[0].n
}

func (sv *supervisor) overflowsTotal() uint64 {
	if len(sv.obs.ovf) == 0 {
		return 0
	}
	return sv.obs.ovf[len(sv.obs.ovf)-1].n
}

// listeners reports each listener's accept queue and counts.
func (sv *supervisor) listeners() []control.Listener {
	var out []control.Listener
	for i, sk := range sv.s.sockets {
		l := control.Listener{Name: sk.Name, Queue: -1, MaxQueue: -1}
		if sk.Addr != nil {
			l.Addr = sk.Addr.String()
		}
		if sk.Fd >= 0 {
			if q, m, err := sk.Queue(); err == nil {
				l.Queue, l.MaxQueue = q, m
			}
		}
		l.Served, l.Failed = sv.sb.ListenerCounts(i)
		out = append(out, l)
	}
	return out
}

// durations sums the client duration histogram: live slots and the dead.
func (sv *supervisor) durations() durationSnapshot {
	ob := &sv.obs
	b := make([]uint64, len(clientDurationBuckets)+1)
	copy(b, ob.histDead)
	sum := ob.sumDead
	for _, k := range sv.kids {
		sum += sv.sb.Slot(k.slot).addHist(b)
	}
	return durationSnapshot{Buckets: b, Sum: float64(sum) / float64(time.Second)}
}

// bury keeps a reaped worker's histogram before its slot is freed.
func (sv *supervisor) bury(k *kid) {
	ob := &sv.obs
	if ob.histDead == nil {
		ob.histDead = make([]uint64, len(clientDurationBuckets)+1)
	}
	ob.sumDead += sv.sb.Slot(k.slot).addHist(ob.histDead)
}

// publish stores the snapshots that metrics scrapes read from their own
// goroutines.
func (sv *supervisor) publish() {
	st := sv.statusOf()
	sv.pubStatus.Store(st)
	d := sv.durations()
	sv.pubDurations.Store(&d)
}
