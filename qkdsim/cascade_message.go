package qkdsim

// Wire encoding of Cascade's messages: fixed-width little-endian fields, no reflection, one
// allocation per message. Every decoder checks lengths and ranges and returns an error on a
// malformed or truncated body; none of them panics (FuzzCascade* in cascade_message_test.go).
//
// Bob -> Alice, MsgCascade, first byte the operation:
//
//	hello: op, n u32, frame u32, seed [32], passes u8, passes x (kind u8, k u32)
//	       -- also opens pass 0; frame is the frame length (cascade_pass.go)
//	open:  op, pass u8                                                  -- opens the next pass
//	query: op, count u32, count x (pass u8, start u32, end u32)         -- one binary-search level
//
// Alice -> Bob, MsgCascadeReply: count u32, then count parity bits packed LSB first, unused
// bits of the last byte zero. Bob -> Alice, MsgCascadeDone: empty.

import (
	"encoding/binary"
	"fmt"
)

const (
	cascadeOpHello byte = 1
	cascadeOpOpen  byte = 2
	cascadeOpQuery byte = 3
)

// cascadeMaxPasses bounds the schedule a hello may ask for.
const cascadeMaxPasses = 64

// cascadeMaxBits bounds the key length (positions travel as uint32).
const cascadeMaxBits = 1<<31 - 1

const cascadeQueryLen = 9

// cascadeHelloLen is the length of a hello before its pass specs.
const cascadeHelloLen = 42

type cascadeHello struct {
	n     int
	frame int // frame length; 0 encodes as n (one frame)
	seed  [32]byte
	specs []passSpec
}

// cascadeQuery asks for the parity of pass-order range [s, e) of pass p.
type cascadeQuery struct {
	p    uint8
	s, e uint32
}

func encodeCascadeHello(h cascadeHello) []byte {
	b := make([]byte, 0, cascadeHelloLen+5*len(h.specs))
	b = append(b, cascadeOpHello)
	b = binary.LittleEndian.AppendUint32(b, uint32(h.n))
	fl := h.frame
	if fl == 0 {
		fl = h.n
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(fl))
	b = append(b, h.seed[:]...)
	b = append(b, byte(len(h.specs)))
	for _, s := range h.specs {
		b = append(b, byte(s.kind))
		b = binary.LittleEndian.AppendUint32(b, uint32(s.k))
	}
	return b
}

func decodeCascadeHello(body []byte) (cascadeHello, error) {
	var h cascadeHello
	if len(body) < cascadeHelloLen || body[0] != cascadeOpHello {
		return h, fmt.Errorf("qkdsim: cascade: malformed hello (%d bytes)", len(body))
	}
	n := binary.LittleEndian.Uint32(body[1:])
	if n == 0 || n > cascadeMaxBits {
		return h, fmt.Errorf("qkdsim: cascade: hello: key length %d outside [1, %d]", n, cascadeMaxBits)
	}
	h.n = int(n)
	fl := binary.LittleEndian.Uint32(body[5:])
	if fl == 0 || fl > n || (fl != n && fl%64 != 0) {
		return h, fmt.Errorf("qkdsim: cascade: hello: frame length %d is neither %d nor a multiple of 64 below it", fl, n)
	}
	h.frame = int(fl)
	copy(h.seed[:], body[9:41])
	np := int(body[41])
	if np == 0 || np > cascadeMaxPasses {
		return h, fmt.Errorf("qkdsim: cascade: hello: %d passes, want 1 to %d", np, cascadeMaxPasses)
	}
	if len(body) != cascadeHelloLen+5*np {
		return h, fmt.Errorf("qkdsim: cascade: hello: %d bytes for %d passes, want %d", len(body), np, cascadeHelloLen+5*np)
	}
	h.specs = make([]passSpec, np)
	for i := range h.specs {
		o := cascadeHelloLen + 5*i
		kind := passKind(body[o])
		k := binary.LittleEndian.Uint32(body[o+1:])
		if kind >= passKinds {
			return h, fmt.Errorf("qkdsim: cascade: hello: pass %d has unknown kind %d", i, kind)
		}
		if kind != passSplit && (k == 0 || k > n) {
			return h, fmt.Errorf("qkdsim: cascade: hello: pass %d block size %d outside [1, %d]", i, k, n)
		}
		h.specs[i] = passSpec{kind: kind, k: int(k)}
	}
	return h, nil
}

func encodeCascadeOpen(p int) []byte { return []byte{cascadeOpOpen, byte(p)} }

func decodeCascadeOpen(body []byte) (int, error) {
	if len(body) != 2 || body[0] != cascadeOpOpen {
		return 0, fmt.Errorf("qkdsim: cascade: malformed open (%d bytes)", len(body))
	}
	return int(body[1]), nil
}

func encodeCascadeQueries(qs []cascadeQuery) []byte {
	b := make([]byte, 5+cascadeQueryLen*len(qs))
	b[0] = cascadeOpQuery
	binary.LittleEndian.PutUint32(b[1:], uint32(len(qs)))
	o := 5
	for _, q := range qs {
		b[o] = q.p
		binary.LittleEndian.PutUint32(b[o+1:], q.s)
		binary.LittleEndian.PutUint32(b[o+5:], q.e)
		o += cascadeQueryLen
	}
	return b
}

// decodeCascadeQueries appends the queries of body to dst. Ranges are checked against the
// passes by the caller.
func decodeCascadeQueries(body []byte, dst []cascadeQuery) ([]cascadeQuery, error) {
	if len(body) < 5 || body[0] != cascadeOpQuery {
		return dst, fmt.Errorf("qkdsim: cascade: malformed query (%d bytes)", len(body))
	}
	count := binary.LittleEndian.Uint32(body[1:])
	if uint64(len(body)-5) != uint64(count)*cascadeQueryLen {
		return dst, fmt.Errorf("qkdsim: cascade: query: %d bytes for %d ranges", len(body), count)
	}
	for o := 5; o < len(body); o += cascadeQueryLen {
		dst = append(dst, cascadeQuery{p: body[o], s: binary.LittleEndian.Uint32(body[o+1:]),
			e: binary.LittleEndian.Uint32(body[o+5:])})
	}
	return dst, nil
}

// parityWriter packs parity bits for a reply.
type parityWriter struct {
	b     []byte
	count int
}

func newParityWriter(capBits int) *parityWriter {
	w := &parityWriter{b: make([]byte, 4, 4+(capBits+7)/8)}
	return w
}

func (w *parityWriter) add(bit uint8) {
	if w.count&7 == 0 {
		w.b = append(w.b, 0)
	}
	w.b[len(w.b)-1] |= bit << uint(w.count&7)
	w.count++
}

func (w *parityWriter) bytes() []byte {
	binary.LittleEndian.PutUint32(w.b, uint32(w.count))
	return w.b
}

// decodeCascadeReply checks a reply holds exactly want parity bits and returns the packed bits.
func decodeCascadeReply(body []byte, want int) ([]byte, error) {
	if len(body) < 4 {
		return nil, fmt.Errorf("qkdsim: cascade: malformed reply (%d bytes)", len(body))
	}
	count := binary.LittleEndian.Uint32(body)
	if uint64(count) != uint64(want) || len(body) != 4+(want+7)/8 {
		return nil, fmt.Errorf("qkdsim: cascade: reply has %d parities in %d bytes, want %d", count, len(body), want)
	}
	p := body[4:]
	if r := want & 7; r != 0 && p[len(p)-1]>>uint(r) != 0 {
		return nil, fmt.Errorf("qkdsim: cascade: reply has padding bits set")
	}
	return p, nil
}

func replyBit(p []byte, i int) uint8 { return p[i>>3] >> uint(i&7) & 1 }
