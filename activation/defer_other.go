//go:build !linux

package activation

import "time"

// DeferAccept sets TCP_DEFER_ACCEPT where the system has it (Linux); here
// it does nothing.
func (s *Socket) DeferAccept(d time.Duration) error { return nil }
