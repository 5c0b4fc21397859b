package config

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Size is a number of bytes that reads as systemd's MemoryMax= does: a
// bare number of bytes, or one with K, M, G or T (powers of 1024; "KiB",
// "MB" and lower case are read the same), e.g. 512M, 1.5G.
type Size uint64

// Bytes returns the value in bytes.
func (s Size) Bytes() uint64 { return uint64(s) }

func (s Size) String() string {
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}} {
		if s != 0 && uint64(s)%(1<<u.shift) == 0 {
			return strconv.FormatUint(uint64(s)>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatUint(uint64(s), 10)
}

// ParseSize parses a size. It refuses negative, fractional-byte, NaN,
// infinite and overflowing values, with the value as written.
func ParseSize(in string) (Size, error) {
	s := strings.TrimSpace(in)
	if s == "" {
		return 0, fmt.Errorf("empty size")
	}
	num := strings.TrimRight(s, "KMGTkmgtiIbB")
	unit := strings.ToUpper(strings.TrimPrefix(s, num))
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
	sh, ok := shift[unit]
	if !ok || num == "" {
		return 0, fmt.Errorf("%q is not a size: want bytes, or a number with K, M, G or T (e.g. 512M)", in)
	}
	f, err := strconv.ParseFloat(num, 64)
	switch {
	case err != nil || math.IsNaN(f) || math.IsInf(f, 0):
		return 0, fmt.Errorf("%q is not a size: want bytes, or a number with K, M, G or T (e.g. 512M)", in)
	case f < 0:
		return 0, fmt.Errorf("size %q is negative", in)
	}
	v := f * float64(uint64(1)<<sh)
	if v >= float64(math.MaxInt64) {
		return 0, fmt.Errorf("size %q out of range", in)
	}
	return Size(uint64(v)), nil
}

// UnmarshalYAML accepts only scalars.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a size, have a %s", kindName(n.Kind))
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalYAML writes what ParseSize reads back exactly.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalJSON and UnmarshalJSON carry the value to workers as bytes.
func (s Size) MarshalJSON() ([]byte, error) { return json.Marshal(uint64(s)) }

func (s *Size) UnmarshalJSON(b []byte) error {
	var n uint64
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	*s = Size(n)
	return nil
}
