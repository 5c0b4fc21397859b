package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/waiter-go/waiter/control"
)

func runStatus(o *options, args []string) error {
	if len(args) > 0 {
		return usageError("status takes no arguments, not %q", strings.Join(args, " "))
	}
	s, err := open(o, "status")
	if err != nil {
		return err
	}
	defer s.Close()
	rep, err := s.do(control.Request{Cmd: control.CmdStatus, PSS: o.pss})
	if err != nil {
		return err
	}
	if rep.Status == nil {
		return brokeReply(o.socket, "a status reply without the status")
	}
	if o.json {
		return printJSON(o.stdout, rep.Status)
	}
	return writeStatus(o.stdout, rep.Status, time.Now())
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// writeStatus prints st as an operator reads apachectl status: a header
// block, then the listeners and the workers as tables.
func writeStatus(w io.Writer, st *control.Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	kv := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "%s:\t%s\n", k, fmt.Sprintf(format, args...))
	}
	if !st.At.IsZero() {
		now = st.At // ages as of the master's snapshot, not of this clock
	}
	up := "-"
	if !st.Started.IsZero() {
		up = fmt.Sprintf("up %s (since %s)", duration(now.Sub(st.Started)), st.Started.Local().Format("2006-01-02 15:04:05 MST"))
	}
	kv("master", "pid %d, %s mode, %s", st.PID, st.Mode, up)
	kv("generation", "%d newest, %d serving", st.Generation, st.Serving)
	kv("state", "%s", state(st))
	kv("limits", "prefork %d, maxfork %d, spares %d", st.Prefork, st.Maxfork, st.Spares)
	kv("clients", "%d served, %d failed", st.Served, st.Failed)
	kv("reloads", "%s", reloads(st.Reloads))
	if r := st.LastReload; r != nil {
		last := r.Result
		if r.Generation > 0 {
			last += fmt.Sprintf(", generation %d", r.Generation)
		}
		if !r.At.IsZero() {
			last += fmt.Sprintf(", %s ago", duration(now.Sub(r.At)))
		}
		if r.Reason != "" {
			last += ": " + oneLine(r.Reason)
		}
		kv("last reload", "%s", last)
	}
	kv("listen overflows", "%d total, %d in the last minute (the kernel's, for every socket of the network namespace)", st.ListenOverflows, st.ListenOverflowsMinute)
	if st.Note != "" {
		kv("note", "%s", oneLine(st.Note))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nlisteners:\n")
	if len(st.Listeners) == 0 {
		fmt.Fprintf(w, "  none\n")
	} else {
		tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintf(tw, "  NAME\tADDR\tQUEUE\tMAX\tSERVED\tFAILED\n")
		for _, l := range st.Listeners {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%d\n", dash(l.Name), dash(l.Addr), queue(l.Queue), queue(l.MaxQueue), l.Served, l.Failed)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	fmt.Fprintf(w, "\nworkers:\n")
	if len(st.Workers) == 0 {
		fmt.Fprintf(w, "  none\n")
		return nil
	}
	ws := slices.Clone(st.Workers)
	sort.SliceStable(ws, func(i, j int) bool {
		if ws[i].Slot != ws[j].Slot {
			return ws[i].Slot < ws[j].Slot
		}
		return ws[i].PID < ws[j].PID
	})
	lines, err := workerLines(ws)
	if err != nil {
		return err
	}
	for _, l := range lines {
		fmt.Fprintf(w, "  %s\n", l)
	}
	return nil
}

// workerLines is the workers table, its header first, aligned; status and
// top both print it.
func workerLines(ws []control.Worker) ([]string, error) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "PID\tSLOT\tGEN\tKIND\tSTATE\tSERVED\tFAILED\tBUSY\tPEER\tRSS\tPSS\tCPU\tAGE\n")
	for _, w := range ws {
		busy := "-"
		if w.Busy > 0 || w.Peer != "" {
			busy = duration(w.Busy.D())
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n",
			w.PID, w.Slot, w.Gen, dash(w.Kind), dash(w.State), w.Served, w.Failed,
			busy, dash(w.Peer), size(w.RSS), size(w.PSS), cpu(w.CPU), duration(w.Age.D()))
	}
	if err := tw.Flush(); err != nil {
		return nil, err
	}
	// Each line without the padding tabwriter leaves after the last cell.
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	return lines, nil
}

func state(st *control.Status) string {
	var s []string
	if st.Reloading {
		s = append(s, "reloading")
	}
	if st.Stopping {
		s = append(s, "stopping")
	}
	if len(s) == 0 {
		return "running"
	}
	return strings.Join(s, ", ")
}

// reloads is the count by result: ok, refused, failed always, then any
// other result the master reports.
func reloads(m map[string]uint64) string {
	parts := []string{
		fmt.Sprintf("%d ok", m["ok"]),
		fmt.Sprintf("%d refused", m["refused"]),
		fmt.Sprintf("%d failed", m["failed"]),
	}
	var other []string
	for k := range m {
		if k != "ok" && k != "refused" && k != "failed" {
			other = append(other, k)
		}
	}
	sort.Strings(other)
	for _, k := range other {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

// queue is an accept queue's length or bound; -1 (the kernel cannot tell,
// a unix socket) is "-".
func queue(n int64) string {
	if n < 0 {
		return "-"
	}
	return strconv.FormatInt(n, 10)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
