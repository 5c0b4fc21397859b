package main

import (
	"testing"
	"time"
)

func TestSize(t *testing.T) {
	cases := []struct {
		in   uint64
		want string
	}{
		{0, "-"}, // not sampled
		{1, "1B"},
		{1023, "1023B"},
		{1024, "1.0K"},
		{1536, "1.5K"},
		{12897485, "12.3M"},
		{99 << 20, "99.0M"},
		{123 << 20, "123M"},
		// Just under 1 GiB rounds to the next unit, not to "1024M".
		{1<<30 - 1, "1.0G"},
		{3 << 30, "3.0G"},
		{2048 << 40, "2048T"},
	}
	for _, tc := range cases {
		if have := size(tc.in); have != tc.want {
			t.Errorf("size(%d): want %q, have %q", tc.in, tc.want, have)
		}
	}
}

func TestDuration(t *testing.T) {
	cases := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{-time.Second, "0s"}, // a clock step: never negative
		{350 * time.Millisecond, "350ms"},
		{2500 * time.Millisecond, "2.5s"},
		{9990 * time.Millisecond, "10s"}, // not "10.0s"
		{45 * time.Second, "45s"},
		{3*time.Minute + 5*time.Second, "3m05s"},
		{2*time.Hour + 3*time.Minute, "2h03m"},
		{76 * time.Hour, "3d04h"},
	}
	for _, tc := range cases {
		if have := duration(tc.in); have != tc.want {
			t.Errorf("duration(%v): want %q, have %q", tc.in, tc.want, have)
		}
	}
	for in, want := range map[float64]string{0: "0.00s", 1.234: "1.23s", 125: "2m05s"} {
		if have := cpu(in); have != want {
			t.Errorf("cpu(%v): want %q, have %q", in, want, have)
		}
	}
}

// TestTimeoutFor: reload waits long enough for a reload to be given up
// (60 s) plus graceful time; -timeout wins over both defaults.
func TestTimeoutFor(t *testing.T) {
	cases := []struct {
		flag time.Duration
		cmd  string
		want time.Duration
	}{
		{0, "status", 10 * time.Second},
		{0, "reload", 150 * time.Second},
		{0, "top", 10 * time.Second},
		{2 * time.Second, "reload", 2 * time.Second},
		{time.Minute, "status", time.Minute},
	}
	for _, tc := range cases {
		o := &options{timeout: tc.flag}
		if have := o.timeoutFor(tc.cmd); have != tc.want {
			t.Errorf("-timeout %v, %s: want %v, have %v", tc.flag, tc.cmd, tc.want, have)
		}
	}
}
