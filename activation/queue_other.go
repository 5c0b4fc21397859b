//go:build !linux

package activation

// Queue reports a listening TCP socket's accept queue. Only Linux says
// (TCP_INFO): elsewhere it returns -1, -1, nil, as Linux does for a socket
// that is not a listening TCP one.
func (s *Socket) Queue() (length, max int64, err error) {
	return -1, -1, nil
}
