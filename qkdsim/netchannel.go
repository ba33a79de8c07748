package qkdsim

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
)

// A Channel over a net.Conn. Each message is one frame:
//
//	length (4 bytes, big endian; counts type and body) | type (1 byte) | body
//
// The length is checked against a limit before anything is allocated, so a peer cannot make
// the reader allocate more than the limit.

// DefaultMaxMessage bounds one frame: a sifting announcement of a 10^10-pulse block at short
// distance is the largest message (a few tens of MB).
const DefaultMaxMessage = 256 << 20

// ErrMessageTooLarge means a frame exceeded the size limit.
var ErrMessageTooLarge = errors.New("qkdsim: classical channel message too large")

// NetChannel is a Channel over a stream connection.
type NetChannel struct {
	conn  net.Conn
	r     *bufio.Reader
	w     *bufio.Writer
	limit int
	Sent  Traffic
}

// NewNetChannel wraps conn; maxMessage <= 0 means DefaultMaxMessage.
func NewNetChannel(conn net.Conn, maxMessage int) *NetChannel {
	if maxMessage <= 0 {
		maxMessage = DefaultMaxMessage
	}
	return &NetChannel{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), w: bufio.NewWriterSize(conn, 64<<10), limit: maxMessage}
}

// Send writes one frame and flushes it.
func (c *NetChannel) Send(m Message) error {
	if len(m.Body)+1 > c.limit {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, len(m.Body)+1, c.limit)
	}
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(m.Body)+1))
	hdr[4] = m.Type
	if _, err := c.w.Write(hdr[:]); err != nil {
		return c.wrap(err)
	}
	if _, err := c.w.Write(m.Body); err != nil {
		return c.wrap(err)
	}
	if err := c.w.Flush(); err != nil {
		return c.wrap(err)
	}
	c.Sent.Messages.Add(1)
	c.Sent.Bytes.Add(int64(len(m.Body)) + 5)
	return nil
}

// Recv reads one frame.
func (c *NetChannel) Recv() (Message, error) {
	m, err := readFrame(c.r, c.limit)
	if err != nil {
		return Message{}, c.wrap(err)
	}
	return m, nil
}

// Close closes the connection.
func (c *NetChannel) Close() error { return c.conn.Close() }

func (c *NetChannel) wrap(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) {
		return fmt.Errorf("%w: %w", ErrChannelClosed, err)
	}
	return fmt.Errorf("qkdsim: classical channel: %w", err)
}

// readFrame decodes one frame of at most limit bytes (type and body).
func readFrame(r io.Reader, limit int) (Message, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Message{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return Message{}, errors.New("qkdsim: classical channel: empty frame")
	}
	if uint64(n) > uint64(limit) {
		return Message{}, fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, n, limit)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Message{}, err
	}
	return Message{Type: buf[0], Body: buf[1:]}, nil
}

// NetPipe returns two NetChannels joined by a TCP connection on the loopback interface, for a
// Link's Transport when the classical channel should be a real socket.
func NetPipe() (a, b Channel, closeFn func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("qkdsim: net pipe: %w", err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	acc := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		acc <- res{c, err}
	}()
	ca, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("qkdsim: net pipe: %w", err)
	}
	r := <-acc
	if r.err != nil {
		ca.Close()
		return nil, nil, nil, fmt.Errorf("qkdsim: net pipe: %w", r.err)
	}
	var once atomic.Bool
	closeFn = func() {
		if once.CompareAndSwap(false, true) {
			ca.Close()
			r.c.Close()
		}
	}
	return NewNetChannel(ca, 0), NewNetChannel(r.c, 0), closeFn, nil
}
