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
		{allModes, [][]string{{"prefork", "prefork+ops", "prefork+proxy1", "prefork+proxy2"}, {"forking", "spawn"}}},
		{[]string{"prefork", "prefork+proxy2", "spawn"}, [][]string{{"prefork", "prefork+proxy2"}}},
		// Nothing to pair with.
		{[]string{"prefork+ops", "forking", "spares"}, nil},
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
