package activation

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// ErrNoCounter is wrapped when the kernel's statistics lack a counter (an
// old or emulated kernel, such as gVisor's, may not keep it).
var ErrNoCounter = errors.New("activation: no such kernel counter")

const netstatPath = "/proc/net/netstat"

// ListenOverflows returns the kernel's TcpExt ListenOverflows counter: how
// many times a handshake was dropped because a listening socket's accept
// queue was full (a SYN while it is full, or the last ACK that would have
// joined it). It counts every socket of this process's network namespace,
// not just this server's, from the namespace's start; and it counts events,
// not clients (a client's retransmitted SYN counts again). Compare two
// readings, and look at Queue to learn whether this server is the one.
func ListenOverflows() (uint64, error) {
	f, err := os.Open(netstatPath)
	if err != nil {
		return 0, fmt.Errorf("activation: %w", err)
	}
	defer f.Close()
	return parseNetstat(f, netstatPath, "TcpExt", "ListenOverflows")
}

// parseNetstat finds one counter in the text of /proc/net/netstat (or
// /proc/net/snmp), which errors name src: each group is a line of names and a line of values, both
// starting "Group:". The counter is found by name, since the kernel adds
// counters between releases and their positions move.
func parseNetstat(r io.Reader, src, group, name string) (uint64, error) {
	sc := bufio.NewScanner(r)
	// A line holds one name or number per counter: TcpExt has over a
	// hundred, a few kilobytes.
	sc.Buffer(make([]byte, 0, 16<<10), 1<<20)
	prefix := group + ":"
	for sc.Scan() {
		names, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		if !sc.Scan() {
			if err := sc.Err(); err != nil {
				return 0, fmt.Errorf("activation: %s: %w", src, err)
			}
			return 0, fmt.Errorf("activation: %s: %s names are not followed by their values", src, group)
		}
		values, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			return 0, fmt.Errorf("activation: %s: %s names are not followed by their values", src, group)
		}
		nf, vf := strings.Fields(names), strings.Fields(values)
		if len(nf) != len(vf) {
			return 0, fmt.Errorf("activation: %s: %s has %d names but %d values", src, group, len(nf), len(vf))
		}
		for i, n := range nf {
			if n != name {
				continue
			}
			v, err := strconv.ParseUint(vf[i], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("activation: %s: %s %s: %w", src, group, name, err)
			}
			return v, nil
		}
		return 0, fmt.Errorf("%w: %s: %s has no %s", ErrNoCounter, src, group, name)
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("activation: %s: %w", src, err)
	}
	return 0, fmt.Errorf("%w: %s: no %s lines", ErrNoCounter, src, group)
}
