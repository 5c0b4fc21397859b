package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration that reads, as Net::Waiter's options did, a bare
// number as seconds ("4", "0.5"), and also a Go duration ("500ms", "2m").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// maxSeconds bounds a bare number of seconds to 2^62 ns (about 146 years),
// well inside a time.Duration, so that the float multiplication cannot land
// outside int64 (converting such a float to an int64 is undefined in Go and
// gives math.MinInt64 on amd64). A Go duration ("2562047h") may use the whole
// range, so that MarshalYAML's output is always read back.
const maxSeconds = float64(1<<62) / float64(time.Second)

// goDuration is the syntax time.ParseDuration reads, used to tell a duration
// too long for a time.Duration ("9999999999h", which time.ParseDuration
// refuses as "invalid") from one that is not a duration at all.
var goDuration = regexp.MustCompile(`^[-+]?(([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`)

// ParseDuration parses a bare number of seconds or a Go duration. It refuses
// NaN, infinities (Go's "NaN", "inf", "Infinity" and YAML's ".nan", ".inf")
// and values too large for a time.Duration, with the value as written in the
// message.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	f, err := strconv.ParseFloat(s, 64)
	// ParseFloat reads "NaN", "inf" and "Infinity" but not "-NaN" nor
	// YAML's ".nan" and ".inf": those would be "neither a number nor a
	// duration", which is true but does not say what is wrong.
	special := strings.ToLower(strings.TrimLeft(s, "+-"))
	switch {
	case special == "nan" || special == ".nan" || err == nil && math.IsNaN(f):
		return 0, fmt.Errorf("duration %q is not a number (NaN): want seconds or a duration such as 500ms", s)
	case special == "inf" || special == "infinity" || special == ".inf" || err == nil && math.IsInf(f, 0):
		return 0, fmt.Errorf("duration %q is infinite: want a finite number of seconds or a duration such as 500ms", s)
	case err == nil && (f > maxSeconds || f < -maxSeconds), errors.Is(err, strconv.ErrRange):
		// ErrRange: a number too large even for a float64 (1e400).
		return 0, fmt.Errorf("duration %q out of range: at most %.0f seconds (%s)", s, maxSeconds, time.Duration(1<<62).Truncate(time.Second))
	case err == nil:
		return Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if goDuration.MatchString(s) {
			return 0, fmt.Errorf("duration %q out of range: at most %s", s, time.Duration(math.MaxInt64))
		}
		return 0, fmt.Errorf("%q is neither a number of seconds nor a duration such as 500ms", s)
	}
	return Duration(d), nil
}

// UnmarshalYAML accepts only scalars: a list or a map is a type error.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a duration, have a %s", kindName(n.Kind))
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalYAML writes the Go form, which ParseDuration reads back exactly.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// MarshalJSON and UnmarshalJSON carry options to workers without loss.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(int64(d)) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	*d = Duration(n)
	return nil
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "sequence"
	case yaml.AliasNode:
		return "alias"
	case yaml.DocumentNode:
		return "document"
	}
	return "scalar"
}
