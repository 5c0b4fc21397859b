package config

import (
	"strings"
	"testing"
)

func TestParseSource(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"10.0.0.0/8", "10.0.0.0/8", ""},
		{"10.1.2.3/8", "10.0.0.0/8", ""},
		{"192.0.2.10", "192.0.2.10/32", ""},
		{"fd00::/8", "fd00::/8", ""},
		{"::1", "::1/128", ""},
		// IPv4-mapped: the IPv4 CIDR it maps, as sources are matched.
		{"::ffff:127.0.0.0/104", "127.0.0.0/8", ""},
		{"::ffff:192.0.2.10", "192.0.2.10/32", ""},
		{"::ffff:0.0.0.0/96", "0.0.0.0/0", ""},
		{"::ffff:0.0.0.0/95", "", "at least 96 bits"},
		{"banana", "", "want a CIDR"},
		{"10.0.0.0/33", "", "want a CIDR"},
	} {
		p, err := ParseSource(tc.in)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: want an error with %q, have %v %v", tc.in, tc.err, p, err)
			}
		case err != nil || p.String() != tc.want:
			t.Errorf("%q: want %s, have %v %v", tc.in, tc.want, p, err)
		}
	}
}
