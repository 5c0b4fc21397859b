package config

import (
	"flag"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// NaN, infinities and values too large for a time.Duration are refused, in a
// file and as a flag, with the key and the value as written; none may reach
// Validate as a nonsense value such as -2562047h47m16.854775808s (what NaN
// converted to an int64 gives on amd64).
func TestDurationNotFiniteOrTooLarge(t *testing.T) {
	for _, tc := range []struct {
		value string // as written in the file and on the command line
		want  string // the reason
	}{
		{"NaN", "is not a number (NaN)"},
		{"nan", "is not a number (NaN)"},
		{"-NaN", "is not a number (NaN)"},
		{".nan", "is not a number (NaN)"},
		{".NaN", "is not a number (NaN)"},
		{".NAN", "is not a number (NaN)"},
		{"inf", "is infinite"},
		{"-inf", "is infinite"},
		{"+Inf", "is infinite"},
		{"Infinity", "is infinite"},
		{"-infinity", "is infinite"},
		{".inf", "is infinite"},
		{"+.inf", "is infinite"},
		{"-.Inf", "is infinite"},
		{".INF", "is infinite"},
		{"1e300", "out of range: at most 4611686018 seconds (1281023h53m38s)"},
		{"-1e300", "out of range"},
		{"1e400", "out of range"}, // too large even for a float64
		{"-1e400", "out of range"},
		{"4611686019", "out of range"}, // just over 2^62 ns
		{"1e10", "out of range"},
		{"9999999999h", "out of range: at most 2562047h47m16.854775807s"},
		{"2562048h", "out of range"},
		{"-2562048h", "out of range"},
		{"1h9999999999999999999s", "out of range"},
	} {
		t.Run(tc.value, func(t *testing.T) {
			for _, key := range []string{"timeout", "px_idle", "handshake_timeout"} {
				// In a file, plain and quoted.
				for _, yml := range []string{key + ": " + tc.value + "\n", "\n" + key + ": \"" + tc.value + "\"\n"} {
					o := Default()
					line := strings.Count(yml, "\n")
					_, err := Load("bad.yaml", []byte(yml), &o)
					want := "config: bad.yaml:" + strconv.Itoa(line) + ": key \"" + key + "\": value \"" + tc.value + "\": duration \"" + tc.value + "\" " + tc.want
					if err == nil || !strings.HasPrefix(err.Error(), want) {
						t.Errorf("file %q: want %q, have %v (%s = %s)", yml, want, err, key, o.Timeout)
					}
				}
				// As a flag.
				fs := flag.NewFlagSet("x", flag.ContinueOnError)
				f := NewFlags(fs, &Options{})
				if err := fs.Parse([]string{"-" + flagName(key), tc.value}); err != nil {
					t.Fatal(err)
				}
				o := Default()
				err := f.Apply(&o)
				want := "config: flag -" + flagName(key) + ": value \"" + tc.value + "\": duration \"" + tc.value + "\" " + tc.want
				if err == nil || !strings.HasPrefix(err.Error(), want) {
					t.Errorf("flag: want %q, have %v", want, err)
				}
			}
		})
	}
}

// The edges that are still durations keep working.
func TestParseDurationEdges(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"0", 0},
		{"-0", 0},
		{"0.5", 500 * time.Millisecond},
		{"4", 4 * time.Second},
		{"1_000", 1000 * time.Second},
		{"1e-300", 0}, // rounds to nothing; Normalize then applies the default
		{"4611686018", 4611686018 * time.Second},
		{"-4611686018", -4611686018 * time.Second},
		{"500ms", 500 * time.Millisecond},
		{"2562047h47m16.854775807s", math.MaxInt64},
		{"-2562047h47m16.854775808s", math.MinInt64},
		{" 2m ", 2 * time.Minute},
	} {
		d, err := ParseDuration(tc.in)
		if err != nil || d.D() != tc.want {
			t.Errorf("%q: want %s, have %s %v", tc.in, tc.want, d, err)
		}
	}
	// What MarshalYAML writes, ParseDuration reads back, to the extremes.
	for _, d := range []Duration{math.MaxInt64, math.MinInt64, 1, -1, DefaultPxIdle} {
		s, _ := d.MarshalYAML()
		back, err := ParseDuration(s.(string))
		if err != nil || back != d {
			t.Errorf("round trip of %d: %q gives %d %v", int64(d), s, int64(back), err)
		}
	}
	// Not a duration at all: the old message, not "out of range".
	for _, in := range []string{"soon", "5 s", "1e3s", "0x10", "NaNs", "infh", "h", "--5s"} {
		_, err := ParseDuration(in)
		if err == nil || !strings.Contains(err.Error(), "is neither a number of seconds nor a duration") {
			t.Errorf("%q: want neither, have %v", in, err)
		}
	}
}

// Whatever ParseDuration accepts as a number of seconds is within ±2^62 ns:
// no NaN or overflow slips through as math.MinInt64.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"4", "NaN", ".inf", "1e300", "9999999999h", "-0.5", "1_0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if _, ferr := strconv.ParseFloat(strings.TrimSpace(s), 64); ferr == nil && (d > 1<<62 || d < -(1<<62)) {
			t.Fatalf("%q gives %d, outside ±2^62", s, int64(d))
		}
	})
}
