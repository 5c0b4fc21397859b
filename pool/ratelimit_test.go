package pool

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestWarnLimitOnePerInterval(t *testing.T) {
	clk := newFakeClock()
	w := newWarnLimit(time.Second, clk.now)
	step := func(kind string, wantOK bool, wantHeld uint64) {
		t.Helper()
		ok, held := w.allow(kind)
		if ok != wantOK || held != wantHeld {
			t.Fatalf("%s at +%s: want %v %d, have %v %d", kind, clk.now().Sub(time.Unix(1_700_000_000, 0)), wantOK, wantHeld, ok, held)
		}
	}
	// The first of a kind passes at once; the flood after it is held.
	step("tls", true, 0)
	for i := 0; i < 999; i++ {
		step("tls", false, 0)
	}
	// Another kind is not held back by the first.
	step("on_process", true, 0)
	clk.add(999 * time.Millisecond)
	step("tls", false, 0)
	// A second after the last line: one passes, with the count held since.
	clk.add(time.Millisecond)
	step("tls", true, 1000)
	step("tls", false, 0)
	step("on_process", true, 0) // 1 s after its first, nothing held
	// Long quiet: the next passes, reporting only what was held.
	clk.add(time.Hour)
	step("tls", true, 1)
	step("tls", false, 0)
	// The interval runs from the last line that passed, not from the last
	// event: a steady stream gives one line per interval.
	for i := 0; i < 9; i++ {
		clk.add(100 * time.Millisecond)
		step("tls", false, 0)
	}
	clk.add(100 * time.Millisecond)
	step("tls", true, 10)
}

// A clock that goes back (an injected one) does not hold a kind back until
// it catches up.
func TestWarnLimitClockBack(t *testing.T) {
	clk := newFakeClock()
	w := newWarnLimit(time.Second, clk.now)
	w.allow("x")
	w.allow("x")
	clk.add(-time.Hour)
	if ok, held := w.allow("x"); !ok || held != 1 {
		t.Fatalf("after the clock went back: want a pass with 1 held, have %v %d", ok, held)
	}
}

// The zero value works: one a second of each kind, on the real clock.
func TestWarnLimitZeroValue(t *testing.T) {
	var w warnLimit
	if ok, _ := w.allow("a"); !ok {
		t.Fatal("the first event was held")
	}
	if ok, _ := w.allow("a"); ok {
		t.Fatal("the second event at once passed")
	}
	if ok, _ := w.allow("b"); !ok {
		t.Fatal("another kind's first event was held")
	}
	if w.interval != 0 || w.now != nil {
		t.Fatal("the zero value was changed")
	}
}

// Past 64 kinds, the one least recently seen is dropped: memory stays
// bounded, the kinds still in use keep their state, and the dropped one
// starts again as new.
func TestWarnLimitBoundedKinds(t *testing.T) {
	clk := newFakeClock()
	w := newWarnLimit(time.Second, clk.now)
	for i := 0; i < warnKinds; i++ {
		if ok, _ := w.allow(fmt.Sprint("k", i)); !ok {
			t.Fatalf("k%d: the first event was held", i)
		}
	}
	if len(w.kinds) != 64 {
		t.Fatalf("want 64 kinds tracked, have %d", len(w.kinds))
	}
	// k0 is seen again (held), so k1 is now the least recently seen.
	if ok, _ := w.allow("k0"); ok {
		t.Fatal("k0: the second event at once passed")
	}
	// The 65th kind drops k1 and only k1.
	if ok, _ := w.allow("k64"); !ok {
		t.Fatal("k64: the first event was held")
	}
	if len(w.kinds) != 64 {
		t.Fatalf("after a 65th kind: want 64 kinds tracked, have %d", len(w.kinds))
	}
	if _, kept := w.kinds["k1"]; kept {
		t.Fatal("k1, the least recently seen, was not the one dropped")
	}
	for _, k := range []string{"k0", "k2", "k63", "k64"} {
		if _, kept := w.kinds[k]; !kept {
			t.Fatalf("%s was dropped instead of k1", k)
		}
	}
	// k0 kept its state: still held within the interval, with its count.
	if ok, _ := w.allow("k0"); ok {
		t.Fatal("k0 lost its state: passed within the interval")
	}
	// k1 was forgotten: it passes at once, as a first event (dropping k2,
	// now the least recently seen).
	if ok, held := w.allow("k1"); !ok || held != 0 {
		t.Fatalf("k1 after being dropped: want a pass with 0 held, have %v %d", ok, held)
	}
	clk.add(time.Second)
	if ok, held := w.allow("k0"); !ok || held != 2 {
		t.Fatalf("k0 after a second: want a pass with 2 held, have %v %d", ok, held)
	}
	// Thousands of kinds (say, one per peer address): still 64.
	for i := 0; i < 10_000; i++ {
		w.allow(fmt.Sprint("peer", i))
	}
	if len(w.kinds) != warnKinds {
		t.Fatalf("after 10000 kinds: want %d tracked, have %d", warnKinds, len(w.kinds))
	}
}

// Many goroutines at once: exactly one event per kind and interval passes,
// and the counts add up. Run with -race.
func TestWarnLimitConcurrent(t *testing.T) {
	clk := newFakeClock()
	w := newWarnLimit(time.Second, clk.now)
	const goroutines, each = 16, 500
	var passed, heldReported atomic.Uint64
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if ok, held := w.allow("flood"); ok {
					passed.Add(1)
					heldReported.Add(held)
				}
			}
		}()
	}
	wg.Wait()
	if passed.Load() != 1 {
		t.Fatalf("want 1 event passed in one interval, have %d", passed.Load())
	}
	clk.add(time.Second)
	ok, held := w.allow("flood")
	if !ok || held != goroutines*each-1 {
		t.Fatalf("want a pass reporting %d held, have %v %d", goroutines*each-1, ok, held)
	}
	// Kinds added and dropped concurrently.
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				w.allow(fmt.Sprint("g", g, "-", i))
				clk.add(time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if n := len(w.kinds); n != warnKinds {
		t.Fatalf("want %d kinds tracked, have %d", warnKinds, n)
	}
}
