package qkdsim

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math"
)

// Test doubles for the stages other files own, so the pipeline can be tested on its own. The
// double "Cascade" has Alice send her key (an oracle) but charges the leak a real code would,
// 1.1 n h(e); the double verification sends a SHA-256 prefix; the double amplification keeps the
// first m bits, XORed with a stream from Alice's seed; the double authentication charges 64 bits
// per message.

func fakeCascadeAlice(ch Channel, key Bits, _ CascadeVariant) (ReconcileStats, error) {
	m, err := ch.Recv()
	if err != nil {
		return ReconcileStats{}, err
	}
	if m.Type != MsgCascade {
		return ReconcileStats{}, errors.New("fake cascade: unexpected message")
	}
	if err := ch.Send(Message{Type: MsgCascadeReply, Body: key.Bytes()}); err != nil {
		return ReconcileStats{}, err
	}
	done, err := ch.Recv()
	if err != nil {
		return ReconcileStats{}, err
	}
	leak := int64(binary.LittleEndian.Uint64(padTo8(done.Body)))
	return ReconcileStats{LeakedBits: leak, RoundTrips: 1, Messages: 3}, nil
}

func padTo8(b []byte) []byte { return append(append([]byte(nil), b...), make([]byte, 8)...)[:8] }

func fakeCascadeBob(ch Channel, key Bits, _ float64, _ CascadeVariant, _ io.Reader) (ReconcileStats, error) {
	return fakeCascadeBobLeak(ch, key, 1.1)
}

func fakeCascadeBobLeak(ch Channel, key Bits, f float64) (ReconcileStats, error) {
	// The leak is computed from the true error count, which the oracle learns.
	m, err := func() (Message, error) {
		if err := ch.Send(Message{Type: MsgCascade, Body: make([]byte, 8)}); err != nil {
			return Message{}, err
		}
		return ch.Recv()
	}()
	if err != nil {
		return ReconcileStats{}, err
	}
	alice := BitsFromBytes(m.Body, key.N)
	e := float64(Diff(alice, key)) / math.Max(float64(key.N), 1)
	copy(key.W, alice.W)
	leak := int64(math.Ceil(f * float64(key.N) * h(e)))
	if err := ch.Send(Message{Type: MsgCascadeDone, Body: binary.LittleEndian.AppendUint64(nil, uint64(leak))}); err != nil {
		return ReconcileStats{}, err
	}
	return ReconcileStats{LeakedBits: leak, RoundTrips: 1, Messages: 3}, nil
}

func fakeVerifyAlice(ch Channel, key Bits, _ io.Reader) (int, error) {
	s := sha256.Sum256(key.Bytes())
	if err := ch.Send(Message{Type: MsgVerify, Body: s[:8]}); err != nil {
		return 0, err
	}
	m, err := ch.Recv()
	if err != nil {
		return 0, err
	}
	if len(m.Body) != 1 || m.Body[0] != 1 {
		return 64, ErrVerifyFailed
	}
	return 64, nil
}

func fakeVerifyBob(ch Channel, key Bits) (int, error) {
	m, err := ch.Recv()
	if err != nil {
		return 0, err
	}
	s := sha256.Sum256(key.Bytes())
	ok := string(m.Body) == string(s[:8])
	v := byte(0)
	if ok {
		v = 1
	}
	if err := ch.Send(Message{Type: MsgVerifyReply, Body: []byte{v}}); err != nil {
		return 0, err
	}
	if !ok {
		return 64, ErrVerifyFailed
	}
	return 64, nil
}

func fakeAmplify(key Bits, m int, seed []byte) Bits {
	out := key.Slice(0, m)
	for i := range out.W {
		s := sha256.Sum256(binary.LittleEndian.AppendUint64(append([]byte(nil), seed...), uint64(i)))
		out.W[i] ^= binary.LittleEndian.Uint64(s[:])
	}
	out.trim()
	return out
}

func fakeAmplifyAlice(ch Channel, key Bits, m int, rnd io.Reader) (Bits, error) {
	seed := make([]byte, 16)
	if _, err := rnd.Read(seed); err != nil {
		return Bits{}, err
	}
	if err := ch.Send(Message{Type: MsgAmplify, Body: seed}); err != nil {
		return Bits{}, err
	}
	return fakeAmplify(key, m, seed), nil
}

func fakeAmplifyBob(ch Channel, key Bits, m int) (Bits, error) {
	msg, err := ch.Recv()
	if err != nil {
		return Bits{}, err
	}
	return fakeAmplify(key, m, msg.Body), nil
}

type fakeAuth struct{ consumed, refilled int64 }

func (a *fakeAuth) Refill(p []byte)  { a.refilled += int64(8 * len(p)) }
func (a *fakeAuth) Consumed() int64  { return a.consumed }
func (a *fakeAuth) Available() int64 { return a.refilled - a.consumed }

type fakeAuthChannel struct {
	Channel
	a *fakeAuth
}

func (c fakeAuthChannel) Send(m Message) error { c.a.consumed += 64; return c.Channel.Send(m) }
func (c fakeAuthChannel) Recv() (Message, error) {
	m, err := c.Channel.Recv()
	if err == nil {
		c.a.consumed += 64
	}
	return m, err
}

func fakeStages() stages {
	return stages{
		cascadeAlice: fakeCascadeAlice, cascadeBob: fakeCascadeBob,
		verifyAlice: fakeVerifyAlice, verifyBob: fakeVerifyBob,
		amplifyAlice: fakeAmplifyAlice, amplifyBob: fakeAmplifyBob,
		newAuth:      func([]byte) (authState, error) { return &fakeAuth{}, nil },
		authenticate: func(ch Channel, k authState, _ bool) Channel { return fakeAuthChannel{ch, k.(*fakeAuth)} },
	}
}
