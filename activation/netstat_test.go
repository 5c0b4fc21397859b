package activation

import (
	"errors"
	"strings"
	"testing"
)

// netstatSample is /proc/net/netstat as Linux 6.x writes it, cut short.
const netstatSample = `TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts PruneCalled DelayedACKLost ListenOverflows ListenDrops TCPHPHits
TcpExt: 3 2 0 0 2 405 17 19 111944
IpExt: InNoRoutes InTruncatedPkts InMcastPkts OutMcastPkts InOctets OutOctets
IpExt: 0 0 0 0 1010374476 896535866
MPTcpExt: MPCapableSYNRX MPCapableSYNTX MPCapableSYNACKRX
MPTcpExt: 0 0 0
`

func TestParseNetstat(t *testing.T) {
	for _, tc := range []struct {
		name  string
		text  string
		want  uint64
		err   string // in the error; "" for none
		noCtr bool   // the error is ErrNoCounter
	}{
		{"sample", netstatSample, 17, "", false},
		// Found by name: a kernel that adds counters moves it.
		{"moved", "TcpExt: ListenDrops TCPNew ListenOverflows\nTcpExt: 19 5 23\n", 23, "", false},
		// Another group's counter of the same name is not TcpExt's.
		{"other group first", "IpExt: ListenOverflows\nIpExt: 99\nTcpExt: ListenOverflows\nTcpExt: 7\n", 7, "", false},
		{"no final newline, largest value", "TcpExt: ListenOverflows\nTcpExt: 18446744073709551615", 1<<64 - 1, "", false},
		{"no field", "TcpExt: SyncookiesSent ListenDrops\nTcpExt: 1 2\nIpExt: ListenOverflows\nIpExt: 3\n", 0, "TcpExt has no ListenOverflows", true},
		{"no group", "IpExt: InNoRoutes\nIpExt: 0\n", 0, "no TcpExt lines", true},
		{"empty", "", 0, "no TcpExt lines", true},
		{"truncated", "TcpExt: ListenOverflows ListenDrops\n", 0, "not followed by their values", false},
		{"values of another group", "TcpExt: ListenOverflows\nIpExt: 4\n", 0, "not followed by their values", false},
		{"count mismatch", "TcpExt: ListenDrops ListenOverflows\nTcpExt: 4\n", 0, "2 names but 1 values", false},
		{"not a number", "TcpExt: ListenOverflows\nTcpExt: many\n", 0, "invalid syntax", false},
	} {
		have, err := parseNetstat(strings.NewReader(tc.text), "sample", "TcpExt", "ListenOverflows")
		if tc.err == "" {
			if err != nil || have != tc.want {
				t.Errorf("%s: want %d, have %d, %v", tc.name, tc.want, have, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "sample") {
			t.Errorf("%s: want an error naming the source with %q, have %d, %v", tc.name, tc.err, have, err)
		}
		if errors.Is(err, ErrNoCounter) != tc.noCtr {
			t.Errorf("%s: want errors.Is(ErrNoCounter) %v, have %v", tc.name, tc.noCtr, err)
		}
	}
}
