package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// MaxReply bounds what the client reads for one reply (a status of a few
// thousand workers, or a worker's stacks, are well under it).
const MaxReply = 32 << 20

// Client is a connection to a master's control socket.
type Client struct {
	c    net.Conn
	r    *bufio.Reader
	path string
}

// Dial connects to the control socket at path.
func Dial(path string, timeout time.Duration) (*Client, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return &Client{c: c, r: bufio.NewReaderSize(c, 64<<10), path: path}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

// Do sends one request and reads its reply within timeout. An error is
// the transport's or the server's (Reply.Error, as an error).
func (c *Client) Do(req Request, timeout time.Duration) (Reply, error) {
	c.c.SetDeadline(time.Now().Add(timeout))
	b, err := json.Marshal(req)
	if err != nil {
		return Reply{}, err
	}
	_, werr := c.c.Write(append(b, '\n'))
	// Even when the write failed, the server may have answered (a refusal)
	// before it closed: its reply says more than EPIPE.
	line, err := readLine(c.r, MaxReply)
	if werr != nil && err != nil {
		return Reply{}, fmt.Errorf("control socket %s: %w", c.path, werr)
	}
	if err != nil {
		if errors.Is(err, errTooLong) {
			return Reply{}, fmt.Errorf("control socket %s: reply longer than %d bytes", c.path, MaxReply)
		}
		return Reply{}, fmt.Errorf("control socket %s: no reply: %w", c.path, err)
	}
	var rep Reply
	if err := json.Unmarshal(line, &rep); err != nil {
		return Reply{}, fmt.Errorf("control socket %s: malformed reply: %w", c.path, err)
	}
	if !rep.OK {
		if rep.Error == "" {
			rep.Error = "failed, without a reason"
		}
		return rep, &ReplyError{Reply: rep}
	}
	return rep, nil
}

// ReplyError is the master's "no" (an error reply), as opposed to a
// transport error: errors.As tells them apart.
type ReplyError struct{ Reply Reply }

func (e *ReplyError) Error() string { return e.Reply.Error }
