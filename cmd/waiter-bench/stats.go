package main

import (
	"errors"
	"os"
	"slices"
	"syscall"
	"time"
)

// errKind is how a client connection failed.
type errKind int

const (
	errRefused errKind = iota // connect: ECONNREFUSED (nobody listening)
	errReset                  // ECONNRESET or EPIPE: the server aborted
	errTimeout                // connect or read took longer than the client timeout
	errWrong                  // the bytes read to EOF were not the reply wanted
	errOther                  // anything else (EADDRNOTAVAIL: out of ports, ...)
	numErrKinds
)

var errKindNames = [numErrKinds]string{"refused", "reset", "timeout", "wrong", "other"}

func (k errKind) String() string { return errKindNames[k] }

// errWrongReply is returned by a client that read something else than the
// reply it wanted (the greeting, or the greeting and its echoed line)
// before EOF.
var errWrongReply = errors.New("wrong reply")

// classify names the kind of a client error. It sees through net.OpError
// and os.SyscallError to the errno.
func classify(err error) errKind {
	var errno syscall.Errno
	switch {
	case errors.Is(err, errWrongReply):
		return errWrong
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errTimeout
	case errors.As(err, &errno):
		switch errno {
		case syscall.ECONNREFUSED:
			return errRefused
		case syscall.ECONNRESET, syscall.EPIPE, syscall.ECONNABORTED:
			return errReset
		case syscall.ETIMEDOUT, syscall.EAGAIN, syscall.EINPROGRESS:
			// A blocking socket with SO_RCVTIMEO or SO_SNDTIMEO reports its
			// timeout as EAGAIN (read) or EINPROGRESS (connect).
			return errTimeout
		}
	}
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		return errTimeout
	}
	return errOther
}

// errCounts counts failed connections by kind.
type errCounts [numErrKinds]int

func (e *errCounts) add(o errCounts) {
	for i := range e {
		e[i] += o[i]
	}
}

func (e errCounts) total() int {
	n := 0
	for _, v := range e {
		n += v
	}
	return n
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted: the smallest value that at least p% of the values are at or
// below. Zero for an empty slice.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// Nearest rank: ceil(p/100 * n), 1-based. Integer arithmetic in
	// hundredths of a percent keeps 99% of 100 at exactly rank 99.
	rank := (int64(p*100+0.5)*int64(n) + 9999) / 10000
	rank = max(1, min(rank, int64(n)))
	return sorted[rank-1]
}

// latencies summarizes one round's successful connections.
type latencies struct {
	P50, P90, P99, Max time.Duration
}

func summarize(d []time.Duration) latencies {
	slices.Sort(d)
	if len(d) == 0 {
		return latencies{}
	}
	return latencies{
		P50: percentile(d, 50),
		P90: percentile(d, 90),
		P99: percentile(d, 99),
		Max: d[len(d)-1],
	}
}

// median of a few values (the rounds of one measurement); the mean of the
// two middle ones when their number is even.
func median[T ~int64 | ~float64](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}
