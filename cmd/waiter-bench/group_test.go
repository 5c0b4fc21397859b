package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRotation: in n turns each mode goes first once; two alternate.
func TestRotation(t *testing.T) {
	cases := []struct {
		n, i, r int
		want    []int
	}{
		{2, 0, 0, []int{0, 1}},
		{2, 1, 0, []int{1, 0}},
		// The next round starts where the last left off.
		{2, 0, 1, []int{1, 0}},
		{4, 0, 0, []int{0, 1, 2, 3}},
		{4, 3, 0, []int{3, 0, 1, 2}},
		{4, 2, 3, []int{1, 2, 3, 0}},
	}
	for _, c := range cases {
		if have := rotation(c.n, c.i, c.r); !slices.Equal(have, c.want) {
			t.Errorf("rotation(%d, %d, %d): want %v, have %v", c.n, c.i, c.r, c.want, have)
		}
	}
}

// TestGroups: prefork with its variants, forking with spawn; a mode alone
// in its group is measured alone.
func TestGroups(t *testing.T) {
	cases := []struct {
		modes []string
		want  [][]string
	}{
		// The default run.
		{allModes, [][]string{{"prefork", "prefork+ops", "prefork+proxy1", "prefork+proxy2"},
			{"prefork+echo", "prefork+echo+proxy1", "prefork+echo+proxy2"}, {"forking", "spawn"}}},
		{[]string{"prefork", "prefork+proxy2", "spawn"}, [][]string{{"prefork", "prefork+proxy2"}}},
		// The echo rows are compared with prefork+echo, not with plain
		// prefork.
		{[]string{"prefork", "prefork+echo", "prefork+echo+proxy1", "prefork+echo+proxy2"},
			[][]string{{"prefork+echo", "prefork+echo+proxy1", "prefork+echo+proxy2"}}},
		{[]string{"prefork", "prefork+proxy1", "prefork+echo", "prefork+echo+proxy1"},
			[][]string{{"prefork", "prefork+proxy1"}, {"prefork+echo", "prefork+echo+proxy1"}}},
		// Nothing to pair with.
		{[]string{"prefork+ops", "forking", "spares"}, nil},
		{[]string{"prefork", "prefork+echo+proxy1", "prefork+echo+proxy2"}, nil},
		{[]string{"prefork+echo", "prefork+proxy1"}, nil},
	}
	for _, c := range cases {
		b := &bench{st: settings{Modes: c.modes}}
		have := b.groups()
		if !slices.EqualFunc(have, c.want, slices.Equal) {
			t.Errorf("%v: want %v, have %v", c.modes, c.want, have)
		}
	}
}

// TestSpawnReport: forking is its group's first mode and the ratio's
// numerator: the slice ratios must not come out inverted.
func TestSpawnReport(t *testing.T) {
	b := &bench{st: settings{Modes: []string{"forking", "spawn"}, Concs: []int{8}, Rounds: 2, Duration: 2 * time.Second},
		res: map[rowKey][]loadResult{}, pairs: map[rowKey][]slicePair{}}
	res := func(perSec float64) loadResult {
		return loadResult{Conc: 8, PerSec: perSec, OK: int(perSec), Window: time.Second}
	}
	b.res[rowKey{"forking", 8}] = []loadResult{res(340), res(360)}
	b.res[rowKey{"spawn", 8}] = []loadResult{res(400), res(400)}
	k := rowKey{"spawn", 8}
	b.pairs[k] = []slicePair{{res(340), res(400)}, {res(360), res(400)}}
	var out bytes.Buffer
	b.spawnReport(&out)
	b.targets(&out)
	for _, want := range []string{
		"loaded in alternate slices of 1s",
		"c=8   conn/s forking 350, spawn 400: 0.875x of spawn",
		"forking/spawn round by round 0.850..0.900, median 0.875; 2 slice pairs of 1s: median 0.875, range 0.850..0.900",
		"forking c=8 conn/s vs bare spawn (same run)  0.88x   >= 0.85x",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("want %q in:\n%s", want, out.String())
		}
	}
}

// TestEchoProxyReport: the echo PROXY rows are compared with prefork+echo
// (their group's first mode), in lines and targets of their own, next to
// the plain PROXY ones.
func TestEchoProxyReport(t *testing.T) {
	modes := []string{"prefork", "prefork+proxy1", "prefork+echo", "prefork+echo+proxy1", "prefork+echo+proxy2"}
	b := &bench{st: settings{Modes: modes, Concs: []int{64}, Rounds: 2, Duration: 2 * time.Second, Prefork: 8, Maxfork: 32},
		res: map[rowKey][]loadResult{}, pairs: map[rowKey][]slicePair{}}
	res := func(perSec float64) loadResult {
		return loadResult{Conc: 64, PerSec: perSec, OK: int(perSec), Window: time.Second}
	}
	b.res[rowKey{"prefork", 64}] = []loadResult{res(1000), res(1000)}
	b.res[rowKey{"prefork+proxy1", 64}] = []loadResult{res(900), res(900)}
	b.res[rowKey{"prefork+echo", 64}] = []loadResult{res(800), res(800)}
	b.res[rowKey{"prefork+echo+proxy1", 64}] = []loadResult{res(784), res(752)}
	b.res[rowKey{"prefork+echo+proxy2", 64}] = []loadResult{res(720), res(720)}
	b.pairs[rowKey{"prefork+proxy1", 64}] = []slicePair{{res(1000), res(900)}, {res(1000), res(900)}}
	b.pairs[rowKey{"prefork+echo+proxy1", 64}] = []slicePair{{res(800), res(784)}, {res(800), res(752)}}
	b.pairs[rowKey{"prefork+echo+proxy2", 64}] = []slicePair{{res(800), res(720)}, {res(800), res(720)}}
	var out bytes.Buffer
	b.proxyReport(&out)
	b.targets(&out)
	for _, want := range []string{
		"PROXY v1 (text) header first, vs plain prefork; 2 pools up at once (prefork, prefork+proxy1)",
		"c=64  conn/s v1 900, plain 1000: 0.900x of plain",
		"PROXY v1 (text) header in the same write as its line (echo on: the line back, then EOF), vs prefork+echo, no header; 3 pools up at once (prefork+echo, prefork+echo+proxy1, prefork+echo+proxy2)",
		"c=64  conn/s v1 768, echo 800: 0.960x of echo",
		"v1/echo round by round 0.940..0.980, median 0.960; 2 slice pairs of 1s: median 0.960, range 0.940..0.980",
		"PROXY v2 (binary) header in the same write",
		"c=64  conn/s v2 720, echo 800: 0.900x of echo",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("want %q in:\n%s", want, out.String())
		}
	}
	// Target rows, by their fields (the table's spacing is tabwriter's).
	for _, want := range [][]string{
		{"prefork+proxy1 c=64 conn/s vs prefork (same run)", "0.90x", ">= 0.95x", "MISSED"},
		{"prefork+echo+proxy1 c=64 conn/s vs prefork+echo (same run)", "0.96x", ">= 0.95x", "met"},
		{"prefork+echo+proxy2 c=64 conn/s vs prefork+echo (same run)", "0.90x", ">= 0.95x", "MISSED"},
	} {
		found := false
		for _, l := range strings.Split(out.String(), "\n") {
			if rest, ok := strings.CutPrefix(l, want[0]); ok {
				found = true
				if f := strings.Fields(rest); len(f) < 4 || f[0] != want[1] || f[1]+" "+f[2] != want[2] || f[3] != want[3] {
					t.Errorf("target %q: want %v, have %q", want[0], want[1:], rest)
				}
			}
		}
		if !found {
			t.Errorf("no target %q in:\n%s", want[0], out.String())
		}
	}
	// The plain PROXY target comes before the echo ones.
	if i, j := strings.Index(out.String(), "prefork+proxy1 c=64"), strings.Index(out.String(), "prefork+echo+proxy1 c=64"); i < 0 || j < i {
		t.Errorf("want the plain PROXY target first:\n%s", out.String())
	}
}
