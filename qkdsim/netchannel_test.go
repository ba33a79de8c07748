package qkdsim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestNetChannelRoundTripAndLimit(t *testing.T) {
	a, b, closeFn, err := NetPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	for _, m := range []Message{{Type: MsgSift, Body: []byte("bases")}, {Type: MsgCommit}, {Type: 0xff, Body: make([]byte, 100000)}} {
		if err := a.Send(m); err != nil {
			t.Fatal(err)
		}
		got, err := b.Recv()
		if err != nil || got.Type != m.Type || !bytes.Equal(got.Body, m.Body) {
			t.Fatalf("round trip of type %#x: %v", m.Type, err)
		}
	}
	small := NewNetChannel(nil, 10)
	if err := small.Send(Message{Body: make([]byte, 10)}); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("oversized send: %v", err)
	}
	var frame []byte
	frame = binary.BigEndian.AppendUint32(frame, 1<<30)
	if _, err := readFrame(bytes.NewReader(frame), 1<<20); !errors.Is(err, ErrMessageTooLarge) {
		t.Errorf("oversized frame: %v", err)
	}
	closeFn()
	if _, err := b.Recv(); !errors.Is(err, ErrChannelClosed) {
		t.Errorf("after close: %v", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 3, 0x10, 1, 2})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := readFrame(bytes.NewReader(data), 1<<16)
		if err != nil {
			return
		}
		if len(m.Body)+1 > 1<<16 || 4+1+len(m.Body) > len(data) {
			t.Fatalf("frame of %d bytes from %d input bytes", len(m.Body), len(data))
		}
	})
}

func FuzzDecodeSift(f *testing.F) {
	b := NewBits(10)
	b.Set(3, 1)
	f.Add(encodeSift(b), 10)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 100)
	f.Fuzz(func(t *testing.T, body []byte, max int) {
		if max < 0 || max > 1<<20 {
			return
		}
		got, err := decodeSift(body, max)
		if err == nil && got.N > max {
			t.Fatalf("%d events beyond limit %d", got.N, max)
		}
	})
}

func FuzzDecodeSiftReply(f *testing.F) {
	f.Add(encodeSiftReply([3]int{5, 3, 2}, NewBits(10)), 10)
	f.Fuzz(func(t *testing.T, body []byte, events int) {
		if events < 0 || events > 1<<20 {
			return
		}
		det, m, err := decodeSiftReply(body, events)
		if err == nil && (m.N != events || det[0]+det[1]+det[2] != int64(events)) {
			t.Fatal("inconsistent reply accepted")
		}
	})
}

func FuzzDecodeEstimate(f *testing.F) {
	f.Add(encodeEstimate(estimateMsg{Sent: [3]int64{100, 10, 10}, Sample: 3, SampleBits: NewBits(3), Weak: NewBits(5), Vacuum: NewBits(2)}), 20, 5, 2)
	f.Fuzz(func(t *testing.T, body []byte, sig, weak, vac int) {
		if sig < 0 || weak < 0 || vac < 0 || sig > 1<<16 || weak > 1<<16 || vac > 1<<16 {
			return
		}
		m, err := decodeEstimate(body, sig, weak, vac)
		if err == nil && (m.Sample > int64(sig) || m.Weak.N != weak || m.Vacuum.N != vac) {
			t.Fatal("inconsistent estimate accepted")
		}
	})
}

func FuzzDecodeCounts(f *testing.F) {
	f.Add(encodeEstimateReply([3]int64{1, 2, 3}))
	f.Add(binary.AppendUvarint(binary.AppendUvarint(nil, 800), 64))
	f.Fuzz(func(t *testing.T, body []byte) {
		if errs, err := decodeEstimateReply(body, [3]int64{10, 10, 10}); err == nil {
			for _, e := range errs {
				if e > 10 {
					t.Fatal("error count beyond limit accepted")
				}
			}
		}
		if l, c, err := decodeCommit(body); err == nil && (l < 0 || c < 0) {
			t.Fatal("negative commit accepted")
		}
	})
}
