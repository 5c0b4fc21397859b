//go:build soak

package pool_test

// The long hostile-condition runs: `make soak`. Each prints its figures.

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// treeRSS sums VmRSS (KiB) of the master and its workers.
func treeRSS(pid int) int {
	total := 0
	for _, p := range append([]int{pid}, children(pid)...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				n, _ := strconv.Atoi(strings.Fields(v)[0])
				total += n
			}
		}
	}
	return total
}

// 60 s at 64 concurrent clients against prefork 8..32: no failed
// connection, the pool within maxfork, the tree's memory flat after warm-up.
func TestSoakPrefork64(t *testing.T) {
	p := start(t, prefork(8, 32, nil))
	eventually(t, 5*time.Second, "8 workers", func() bool { return p.count("on_child_start") == 8 })
	var res tally
	var wg sync.WaitGroup
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 10_000_000 && time.Now().Before(deadline); n++ {
				s, err := talk(p.addr, "hello")
				res.add(outcome(s, err))
			}
		}()
	}
	maxKids, rss10, rssEnd := 0, 0, 0
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		maxKids = max(maxKids, len(children(p.pid())))
		if rss10 == 0 && time.Until(deadline) < 50*time.Second {
			rss10 = treeRSS(p.pid())
		}
	}
	rssEnd = treeRSS(p.pid())
	wg.Wait()
	t.Logf("60s at c=64, prefork 8..32: %v; at most %d workers; tree RSS %d KiB at 10s, %d KiB at 60s",
		res.String(), maxKids, rss10, rssEnd)
	if ok := res.get("ok"); ok == 0 || res.String() != fmt.Sprint(map[string]int{"ok": ok}) {
		t.Fatalf("failed connections: %v", res.String())
	}
	if maxKids > 32 {
		t.Fatalf("the pool passed maxfork: %d", maxKids)
	}
	if rssEnd > rss10*13/10+4096 {
		t.Fatalf("the tree's memory grew: %d KiB -> %d KiB", rss10, rssEnd)
	}
}

func TestSoakForking10000(t *testing.T) {
	forkingLeakCheck(t, 10000)
}
