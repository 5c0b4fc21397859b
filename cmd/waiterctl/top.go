package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gdamore/tcell/v2"

	"github.com/waiter-go/waiter/control"
)

// refresh is how often top asks for the status.
const refresh = time.Second

// runTop shows the scoreboard in the terminal until a quit key. The loop
// below owns the screen and what it shows; a poller goroutine owns the
// connection and sends it each status, or why there is none.
func runTop(o *options, args []string) error {
	if len(args) > 0 {
		return usageError("top takes no arguments, not %q", strings.Join(args, " "))
	}
	if o.json {
		return usageError("-json does not apply to top")
	}
	scr, err := tcell.NewScreen()
	if err == nil {
		err = scr.Init()
	}
	if err != nil {
		// Not a usage error as such, but the same answer: run it elsewhere.
		return &failure{code: exitUsage, err: fmt.Errorf("top needs a terminal: %w", err)}
	}

	events := make(chan tcell.Event, 16)
	quit := make(chan struct{})
	go scr.ChannelEvents(events, quit) // ends on quit, closing events
	p := &poller{path: o.socket, timeout: o.timeoutFor("top"), pss: o.pss}
	results := make(chan fetched)
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		p.run(results, quit)
	}()
	// Raw mode turns Ctrl-C into a key; these are for kill and a closed
	// terminal, so that the terminal is restored on them too.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer func() {
		signal.Stop(sigs)
		close(quit)
		p.interrupt() // a request in flight ends now, not at its timeout
		<-polled
		scr.Fini()
		for range events {
		}
	}()

	v := &topView{socket: o.socket}
	for {
		v.draw(scr)
		select {
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			switch ev := ev.(type) {
			case *tcell.EventKey:
				switch {
				case ev.Key() == tcell.KeyEscape, ev.Key() == tcell.KeyCtrlC,
					ev.Key() == tcell.KeyRune && (ev.Rune() == 'q' || ev.Rune() == 'Q'):
					return nil
				case ev.Key() == tcell.KeyCtrlL:
					scr.Sync()
				}
			case *tcell.EventResize:
				scr.Sync()
			}
		case r := <-results:
			v.last = r
		case <-sigs:
			return nil
		}
	}
}

// fetched is one poll's outcome.
type fetched struct {
	st  *control.Status
	err error
	at  time.Time
}

// poller asks for the status each second on one connection, and makes a
// new one when it breaks.
type poller struct {
	path    string
	timeout time.Duration
	pss     bool

	mu      sync.Mutex
	c       *control.Client // kept between polls; nil after a failure
	stopped bool
}

var errStopped = errors.New("stopped")

// run polls until quit, sending each outcome on out.
func (p *poller) run(out chan<- fetched, quit <-chan struct{}) {
	defer p.interrupt()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-quit:
			return
		}
		start := time.Now()
		r := p.fetch()
		select {
		case out <- r:
		case <-quit:
			return
		}
		t.Reset(max(0, refresh-time.Since(start)))
	}
}

func (p *poller) fetch() fetched {
	req := control.Request{Cmd: control.CmdStatus, PSS: p.pss}
	for attempt := 0; ; attempt++ {
		c, reused, err := p.conn()
		if err != nil {
			return fetched{err: err, at: time.Now()}
		}
		rep, err := call(c, p.path, req, p.timeout)
		if err == nil && rep.Status == nil {
			err = brokeReply(p.path, "a status reply without the status")
		}
		if err == nil {
			return fetched{st: rep.Status, at: time.Now()}
		}
		var f *failure
		if errors.As(err, &f) && f.code == exitSocket {
			p.drop(c)
			// A kept connection may have broken since the last poll (the
			// master restarted): one new try before showing an error.
			if reused && attempt == 0 {
				continue
			}
		}
		return fetched{err: err, at: time.Now()}
	}
}

// conn is the kept connection, or a new one; reused says which.
func (p *poller) conn() (c *control.Client, reused bool, err error) {
	p.mu.Lock()
	c, stopped := p.c, p.stopped
	p.mu.Unlock()
	if stopped {
		return nil, false, errStopped
	}
	if c != nil {
		return c, true, nil
	}
	c, err = dial(p.path, p.timeout)
	if err != nil {
		return nil, false, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		c.Close()
		return nil, false, errStopped
	}
	p.c = c
	return c, false, nil
}

func (p *poller) drop(c *control.Client) {
	p.mu.Lock()
	if p.c == c {
		p.c = nil
	}
	p.mu.Unlock()
	c.Close()
}

// interrupt ends the poller's connection, and any request on it, from
// another goroutine: closing a net.Conn is safe while it is in use.
func (p *poller) interrupt() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	if p.c != nil {
		p.c.Close()
		p.c = nil
	}
}

// topView is what top shows: the last poll's outcome.
type topView struct {
	socket string
	last   fetched
}

// line is one screen line.
type line struct {
	text  string
	style tcell.Style
}

func (v *topView) draw(scr tcell.Screen) {
	width, height := scr.Size()
	scr.Clear()
	for y, l := range v.lines(width, height) {
		scr.PutStrStyled(0, y, l.text, l.style)
	}
	scr.Show()
}

// lines is the screen's content for a width × height terminal: the header
// line, a line for the note or the error, then the workers table, busy
// workers first; each line cut to the width, and the table to the height.
func (v *topView) lines(width, height int) []line {
	if width <= 0 || height <= 0 {
		return nil
	}
	reverse := tcell.StyleDefault.Reverse(true)
	bold := tcell.StyleDefault.Bold(true)
	var out []line
	add := func(s string, style tcell.Style) {
		if len(out) < height {
			out = append(out, line{clip(s, width), style})
		}
	}
	r := v.last
	if r.at.IsZero() {
		add(pad(fmt.Sprintf("waiterctl top: %s: connecting", v.socket), width), reverse)
		return out
	}
	if r.err != nil {
		add(pad(fmt.Sprintf("waiterctl top: %s  %s", v.socket, r.at.Format("15:04:05")), width), reverse)
		// Wrapped, not cut: the end of the message is often the cause.
		for _, l := range wrap(oneLine(r.err.Error())+"; retrying each second (q quits)", width) {
			add(l, bold)
		}
		return out
	}
	st := r.st
	add(pad(header(st, r.at), width), reverse)
	add(oneLine(st.Note), tcell.StyleDefault)
	add("", tcell.StyleDefault)
	ws := slices.Clone(st.Workers)
	sort.SliceStable(ws, func(i, j int) bool {
		if bi, bj := isBusy(ws[i]), isBusy(ws[j]); bi != bj {
			return bi
		}
		if ws[i].Slot != ws[j].Slot {
			return ws[i].Slot < ws[j].Slot
		}
		return ws[i].PID < ws[j].PID
	})
	table, err := workerLines(ws)
	if err != nil {
		add(err.Error(), bold)
		return out
	}
	add(table[0], bold)
	rows := table[1:]
	for i, row := range rows {
		// The last line left says what does not fit, rather than a row.
		if left := len(rows) - i; left > 1 && len(out) == height-1 {
			add(fmt.Sprintf("... and %d more workers", left), tcell.StyleDefault)
			break
		}
		style := tcell.StyleDefault
		if isBusy(ws[i]) {
			style = bold
		}
		add(row, style)
	}
	return out
}

// header is top's first line: the pool at a glance.
func header(st *control.Status, at time.Time) string {
	busy := 0
	for _, w := range st.Workers {
		if isBusy(w) {
			busy++
		}
	}
	var q int64
	known := false
	for _, l := range st.Listeners {
		if l.Queue >= 0 {
			q += l.Queue
			known = true
		}
	}
	queued := "-"
	if known {
		queued = fmt.Sprint(q)
	}
	flags := ""
	if st.Reloading {
		flags += "  RELOADING"
	}
	if st.Stopping {
		flags += "  STOPPING"
	}
	gen := fmt.Sprint(st.Generation)
	if st.Serving != st.Generation {
		gen += fmt.Sprintf(" (%d serving)", st.Serving)
	}
	return fmt.Sprintf("pid %d  %s  gen %s  workers %d busy / %d  served %d  failed %d  queue %s%s  %s",
		st.PID, st.Mode, gen, busy, len(st.Workers), st.Served, st.Failed, queued, flags, at.Format("15:04:05"))
}

func isBusy(w control.Worker) bool {
	return w.State == "busy" || w.Peer != "" || w.Busy > 0
}

// clip cuts s to width columns (counted as runes: what top prints is
// ASCII but for a note's text).
func clip(s string, width int) string {
	if r := []rune(s); len(r) > width {
		return string(r[:width])
	}
	return s
}

// wrap breaks s into lines of at most width columns, at spaces where it
// can.
func wrap(s string, width int) []string {
	var lines []string
	for r := []rune(s); len(r) > 0; {
		if len(r) <= width {
			lines = append(lines, string(r))
			break
		}
		cut := width
		for i := width; i > width/2; i-- {
			if r[i] == ' ' {
				cut = i
				break
			}
		}
		lines = append(lines, strings.TrimRight(string(r[:cut]), " "))
		r = []rune(strings.TrimLeft(string(r[cut:]), " "))
	}
	return lines
}

// pad fills s to width, so that a reversed header spans the screen.
func pad(s string, width int) string {
	if n := len([]rune(s)); n < width {
		return s + strings.Repeat(" ", width-n)
	}
	return s
}
