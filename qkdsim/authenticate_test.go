package qkdsim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
)

// tapeChannel records what is sent and plays back a fixed list on Recv: the attacker's view of
// the wire.
type tapeChannel struct {
	sent []Message
	in   []Message
}

func (c *tapeChannel) Send(m Message) error {
	c.sent = append(c.sent, Message{Type: m.Type, Body: bytes.Clone(m.Body)})
	return nil
}

func (c *tapeChannel) Recv() (Message, error) {
	if len(c.in) == 0 {
		return Message{}, ErrChannelClosed
	}
	m := c.in[0]
	c.in = c.in[1:]
	return m, nil
}

func testPSK(r *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// gfMulSlow is the bitwise reference for multiplication in GF(2^64).
func gfMulSlow(a, b uint64) uint64 {
	var r uint64
	for i := 63; i >= 0; i-- {
		top := r >> 63
		r <<= 1
		if top == 1 {
			r ^= 0x1b
		}
		if b>>uint(i)&1 == 1 {
			r ^= a
		}
	}
	return r
}

func TestGF64TableMatchesBitwise(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for range 50 {
		k := r.Uint64()
		tab := newGF64Table(k)
		for range 20 {
			a := r.Uint64()
			if got, want := tab.mul(a), gfMulSlow(a, k); got != want {
				t.Fatalf("%x * %x = %x, want %x", a, k, got, want)
			}
		}
	}
}

// TestAuthHashIsHorner checks the four-block steps of hash against plain Horner's rule with the
// bitwise multiplication, for every way a body can end.
func TestAuthHashIsHorner(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	k, err := NewAuthKey(testPSK(r, 64))
	if err != nil {
		t.Fatal(err)
	}
	key := k.mul[0][1] // 1 * K
	for n := 0; n <= 100; n++ {
		body := testPSK(r, n)
		acc := gfMulSlow(uint64('B')|uint64(MsgCascade)<<8, key)
		acc = gfMulSlow(acc^7, key)
		acc = gfMulSlow(acc^uint64(n), key)
		for i := 0; i < n; i += 8 {
			var w [8]byte
			copy(w[:], body[i:])
			acc = gfMulSlow(acc^binary.LittleEndian.Uint64(w[:]), key)
		}
		if got := k.hash(1, MsgCascade, 7, body); got != acc {
			t.Fatalf("%d-byte body: hash %x, Horner %x", n, got, acc)
		}
	}
}

// sendAll authenticates msgs as Alice and returns the frames on the wire.
func sendAll(t testing.TB, psk []byte, msgs []Message) []Message {
	t.Helper()
	k, err := NewAuthKey(psk)
	if err != nil {
		t.Fatal(err)
	}
	tape := &tapeChannel{}
	a := Authenticate(tape, k, true)
	for _, m := range msgs {
		if err := a.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	return tape.sent
}

func TestAuthenticateRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	psk := testPSK(r, 8+64*8)
	ka, _ := NewAuthKey(psk)
	kb, _ := NewAuthKey(psk)
	ca, cb, _, _, closeFn := Pipe()
	defer closeFn()
	alice, bob := Authenticate(ca, ka, true), Authenticate(cb, kb, false)
	msgs := []Message{{MsgSift, nil}, {MsgCascade, []byte{1}}, {MsgAmplify, testPSK(r, 1000)}, {MsgVerify, testPSK(r, 15)}}
	for i, m := range msgs {
		// Both directions in flight at once: each end sends before it receives.
		if err := alice.Send(m); err != nil {
			t.Fatal(err)
		}
		if err := bob.Send(Message{Type: m.Type + 1, Body: m.Body}); err != nil {
			t.Fatal(err)
		}
		gb, err := bob.Recv()
		if err != nil || gb.Type != m.Type || !bytes.Equal(gb.Body, m.Body) {
			t.Fatalf("message %d to Bob: %v", i, err)
		}
		ga, err := alice.Recv()
		if err != nil || ga.Type != m.Type+1 || !bytes.Equal(ga.Body, m.Body) {
			t.Fatalf("message %d to Alice: %v", i, err)
		}
	}
	want := int64(2 * len(msgs) * AuthTagBits)
	if ka.Consumed() != want || kb.Consumed() != want {
		t.Fatalf("consumed %d and %d bits, want %d", ka.Consumed(), kb.Consumed(), want)
	}
	if ka.Available() != kb.Available() || ka.Available() != 64*64-int(want) {
		t.Fatalf("available %d and %d", ka.Available(), kb.Available())
	}
}

func TestAuthenticateRejectsAttacks(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	psk := testPSK(r, 8+32*8)
	msgs := []Message{{MsgCascade, []byte("parities 0101")}, {MsgCascadeReply, []byte("ok")}, {MsgVerify, []byte("tag")}}
	wire := sendAll(t, psk, msgs)
	edit := func(i int, f func([]byte) []byte) []Message {
		out := make([]Message, len(wire))
		for j, m := range wire {
			out[j] = Message{Type: m.Type, Body: bytes.Clone(m.Body)}
		}
		out[i].Body = f(out[i].Body)
		return out
	}
	flip := func(pos int) func([]byte) []byte {
		return func(b []byte) []byte { b[pos] ^= 0x04; return b }
	}
	retype := func() []Message { w := edit(0, func(b []byte) []byte { return b }); w[0].Type = MsgSift; return w }
	cases := []struct {
		name string
		in   []Message
	}{
		{"body bit", edit(0, flip(9))},
		{"tag bit", edit(1, func(b []byte) []byte { b[len(b)-1] ^= 1; return b })},
		{"sequence number", edit(0, flip(0))},
		{"type", retype()},
		{"truncated", edit(0, func(b []byte) []byte { return append(b[:len(b)-9], b[len(b)-8:]...) })},
		{"short frame", edit(0, func(b []byte) []byte { return b[:15] })},
		{"extended", edit(2, func(b []byte) []byte { return append(b[:len(b)-8], append([]byte{0}, b[len(b)-8:]...)...) })},
		{"replayed", []Message{wire[0], wire[0], wire[1]}},
		{"reordered", []Message{wire[1], wire[0], wire[2]}},
		{"dropped", []Message{wire[0], wire[2]}},
		{"forged", []Message{wire[0], {Type: MsgCascadeReply, Body: encodeAuthFrame(1, []byte("ok!"), r.Uint64())}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, _ := NewAuthKey(psk)
			bob := Authenticate(&tapeChannel{in: c.in}, k, false)
			var failed error
			for i := range c.in {
				m, err := bob.Recv()
				if err != nil {
					failed = err
					break
				}
				if m.Type != msgs[i].Type || !bytes.Equal(m.Body, msgs[i].Body) {
					t.Fatalf("message %d delivered altered: %q", i, m.Body)
				}
			}
			if !errors.Is(failed, ErrAuthFailed) {
				t.Fatalf("got %v, want ErrAuthFailed", failed)
			}
			if _, err := bob.Recv(); !errors.Is(err, ErrAuthFailed) {
				t.Fatalf("after a failure Recv returned %v", err)
			}
		})
	}
}

// TestAuthenticateReflection checks that Alice's own frame sent back to her is refused: the
// directions hash differently and use different pads.
func TestAuthenticateReflection(t *testing.T) {
	r := rand.New(rand.NewPCG(27, 28))
	psk := testPSK(r, 8+8*8)
	wire := sendAll(t, psk, []Message{{MsgSift, []byte("x")}})
	k, _ := NewAuthKey(psk)
	alice := Authenticate(&tapeChannel{in: wire}, k, true)
	if _, err := alice.Recv(); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("reflected frame: got %v, want ErrAuthFailed", err)
	}
}

func TestAuthKeyExhaustionAndRefill(t *testing.T) {
	r := rand.New(rand.NewPCG(29, 30))
	psk := testPSK(r, MinPSKBytes)
	ka, err := NewAuthKey(psk)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := NewAuthKey(psk)
	tape := &tapeChannel{}
	alice := Authenticate(tape, ka, true)
	if err := alice.Send(Message{Type: MsgSift}); err != nil {
		t.Fatal(err)
	}
	if err := alice.Send(Message{Type: MsgSift}); !errors.Is(err, ErrAuthKeyExhausted) {
		t.Fatalf("second send with one pad: got %v, want ErrAuthKeyExhausted", err)
	}
	// Refill in uneven pieces on one end and in one piece on the other: same pads either way.
	fresh := testPSK(r, 40)
	ka.Refill(fresh[:3])
	ka.Refill(fresh[3:21])
	ka.Refill(fresh[21:])
	kb.Refill(fresh)
	if ka.Available()+AuthTagBits != kb.Available() {
		t.Fatalf("available %d vs %d after refill", ka.Available(), kb.Available())
	}
	if err := alice.Send(Message{Type: MsgSift, Body: []byte("after refill")}); err != nil {
		t.Fatal(err)
	}
	bob := Authenticate(&tapeChannel{in: tape.sent}, kb, false)
	for range 2 {
		if _, err := bob.Recv(); err != nil {
			t.Fatalf("Bob after refill: %v", err)
		}
	}
}

func TestNewAuthKeyRejectsBadPSK(t *testing.T) {
	for _, psk := range [][]byte{nil, make([]byte, MinPSKBytes-1), make([]byte, MinPSKBytes)} {
		if _, err := NewAuthKey(psk); err == nil {
			t.Errorf("pre-shared key %x accepted", psk)
		}
	}
}

func FuzzAuthRecv(f *testing.F) {
	psk := testPSK(rand.New(rand.NewPCG(31, 32)), 8+4*8)
	for _, m := range sendAll(f, psk, []Message{{MsgCascade, []byte("abc")}}) {
		f.Add(m.Type, m.Body)
	}
	f.Add(uint8(0), []byte{})
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		if seq, payload, tag, err := decodeAuthFrame(body); err == nil {
			if !bytes.Equal(encodeAuthFrame(seq, payload, tag), body) {
				t.Fatal("frame does not re-encode to itself")
			}
		}
		k, _ := NewAuthKey(psk)
		bob := Authenticate(&tapeChannel{in: []Message{{typ, body}}}, k, false)
		m, err := bob.Recv()
		if err == nil && (m.Type != MsgCascade || string(m.Body) != "abc") {
			t.Fatalf("forged message delivered: %#x %q", m.Type, m.Body)
		}
	})
}

func BenchmarkAuthenticate(b *testing.B) {
	r := rand.New(rand.NewPCG(33, 34))
	body := testPSK(r, 1<<20)
	k, _ := NewAuthKey(testPSK(r, 64))
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		k.hash(0, MsgAmplify, 1, body)
	}
}
