package qkdsim

import (
	"errors"
	"sync/atomic"
)

// Message is one message on the classical channel. Type says which stage and step it belongs
// to; Body is the stage's own encoding, decoded by that stage (and fuzzed there).
type Message struct {
	Type uint8
	Body []byte
}

// Message types, one range per stage so a stray message is caught by the stage that reads it.
const (
	MsgSift uint8 = 0x10 + iota
	MsgSiftReply
)
const (
	MsgEstimate uint8 = 0x20 + iota
	MsgEstimateReply
)
const (
	MsgCascade uint8 = 0x30 + iota
	MsgCascadeReply
	MsgCascadeDone
)
const (
	MsgVerify uint8 = 0x40 + iota
	MsgVerifyReply
)
const (
	MsgAmplify uint8 = 0x50 + iota
	MsgAmplifyReply
)

// ErrChannelClosed is returned by a Channel whose other end has gone away.
var ErrChannelClosed = errors.New("qkdsim: classical channel closed")

// Channel is one party's end of the classical channel between Alice and Bob. Messages arrive
// in the order they were sent. A Channel is used by one goroutine at a time.
type Channel interface {
	Send(m Message) error
	Recv() (Message, error)
}

// Traffic counts what crossed a channel in one direction.
type Traffic struct {
	Messages atomic.Int64
	Bytes    atomic.Int64
}

// memChannel is an in-memory Channel end.
type memChannel struct {
	in, out chan Message
	done    chan struct{}
	closed  *atomic.Bool
	sent    *Traffic
}

// Pipe returns the two ends of an in-memory channel. Closing either end (via the returned
// close function) makes pending and later calls on both ends fail with ErrChannelClosed.
func Pipe() (a, b Channel, sentByA, sentByB *Traffic, closeFn func()) {
	ab := make(chan Message, 64)
	ba := make(chan Message, 64)
	done := make(chan struct{})
	closed := new(atomic.Bool)
	ta, tb := new(Traffic), new(Traffic)
	closeFn = func() {
		if closed.CompareAndSwap(false, true) {
			close(done)
		}
	}
	return &memChannel{in: ba, out: ab, done: done, closed: closed, sent: ta},
		&memChannel{in: ab, out: ba, done: done, closed: closed, sent: tb},
		ta, tb, closeFn
}

func (c *memChannel) Send(m Message) error {
	select {
	case <-c.done:
		return ErrChannelClosed
	default:
	}
	body := append([]byte(nil), m.Body...)
	select {
	case c.out <- Message{Type: m.Type, Body: body}:
		c.sent.Messages.Add(1)
		c.sent.Bytes.Add(int64(len(body)) + 1)
		return nil
	case <-c.done:
		return ErrChannelClosed
	}
}

func (c *memChannel) Recv() (Message, error) {
	select {
	case m := <-c.in:
		return m, nil
	case <-c.done:
		return Message{}, ErrChannelClosed
	}
}
