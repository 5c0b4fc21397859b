package pool

import (
	"sync"
	"time"
)

// warnKinds bounds the kinds a warnLimit tracks, so that kinds made from
// client data cannot grow it without end.
const warnKinds = 64

// warnLimit passes the first event of each kind at once, then at most one
// per interval, reporting how many were held back since the last one passed.
// A flood of one kind of bad client (TLS handshakes of junk from many hosts)
// then gives one log line an interval with a count, not one per client.
//
// The zero value passes at most one event a second of each kind on the
// system clock; newWarnLimit sets another interval or clock. It is safe for
// concurrent use; it takes a mutex, which is fine on the paths it is for
// (errors).
//
// At most warnKinds kinds are tracked: a new kind beyond that drops the one
// least recently seen, whose next event then passes at once as a first one
// (and the count held back for it is lost). A count held back when events
// stop is never reported: the next event of the kind reports it.
type warnLimit struct {
	interval time.Duration    // 0: a second
	now      func() time.Time // nil: time.Now

	mu    sync.Mutex
	kinds map[string]*warnKind
	tick  uint64 // counts calls, to find the kind least recently seen
}

type warnKind struct {
	passed time.Time // when the last event of this kind passed
	held   uint64    // events held back since then
	seen   uint64    // warnLimit.tick at this kind's last event
}

func newWarnLimit(interval time.Duration, now func() time.Time) *warnLimit {
	return &warnLimit{interval: interval, now: now}
}

// allow reports whether an event of this kind may be logged now and, if it
// may, how many events of the kind were held back since the last one passed.
func (w *warnLimit) allow(kind string) (ok bool, suppressed uint64) {
	now := time.Now
	if w.now != nil {
		now = w.now
	}
	interval := w.interval
	if interval <= 0 {
		interval = time.Second
	}
	t := now()

	w.mu.Lock()
	defer w.mu.Unlock()
	w.tick++
	k := w.kinds[kind]
	if k == nil {
		if w.kinds == nil {
			w.kinds = make(map[string]*warnKind, warnKinds)
		}
		if len(w.kinds) >= warnKinds {
			w.dropOldest()
		}
		w.kinds[kind] = &warnKind{passed: t, seen: w.tick}
		return true, 0
	}
	k.seen = w.tick
	// A clock that went back (only an injected one can: time.Now's is
	// monotonic) must not hold the kind back until it catches up.
	if d := t.Sub(k.passed); d >= interval || d < 0 {
		held := k.held
		k.passed, k.held = t, 0
		return true, held
	}
	k.held++
	return false, 0
}

// dropOldest forgets the kind least recently seen. It scans: there are at
// most warnKinds, and this runs only when a new kind comes in.
func (w *warnLimit) dropOldest() {
	var oldest string
	var least uint64
	first := true
	for name, k := range w.kinds {
		if first || k.seen < least {
			oldest, least, first = name, k.seen, false
		}
	}
	delete(w.kinds, oldest)
}
