package qkdsim

import (
	"bytes"
	"testing"
)

func FuzzCascadeHello(f *testing.F) {
	specs, _ := cascadeSchedule(CascadeYan, 0.02, 100000)
	f.Add(encodeCascadeHello(cascadeHello{n: 100000, specs: specs}))
	f.Add(encodeCascadeHello(cascadeHello{n: 100000, frame: 32768, specs: specs}))
	f.Add([]byte{cascadeOpHello, 1, 0, 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		h, err := decodeCascadeHello(body)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeCascadeHello(h), body) {
			t.Fatalf("accepted hello does not round-trip")
		}
	})
}

func FuzzCascadeQueries(f *testing.F) {
	f.Add(encodeCascadeQueries([]cascadeQuery{{0, 1, 5}, {2, 100, 300}}))
	f.Add([]byte{cascadeOpQuery, 255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, body []byte) {
		qs, err := decodeCascadeQueries(body, nil)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeCascadeQueries(qs), body) {
			t.Fatalf("accepted query does not round-trip")
		}
	})
}

func FuzzCascadeReply(f *testing.F) {
	w := newParityWriter(10)
	for i := 0; i < 10; i++ {
		w.add(uint8(i & 1))
	}
	f.Add(w.bytes(), 10)
	f.Add([]byte{1, 0, 0, 0, 2}, 1)
	f.Fuzz(func(t *testing.T, body []byte, want int) {
		if want < 0 || want > 1<<20 {
			return
		}
		p, err := decodeCascadeReply(body, want)
		if err != nil {
			return
		}
		for i := 0; i < want; i++ {
			_ = replyBit(p, i)
		}
	})
}

// FuzzCascadeAlice feeds Alice a valid hello followed by an arbitrary message: she must answer
// or fail with an error, never panic.
func FuzzCascadeAlice(f *testing.F) {
	f.Add(uint8(MsgCascade), encodeCascadeQueries([]cascadeQuery{{0, 0, 3}}))
	f.Add(uint8(MsgCascade), encodeCascadeQueries([]cascadeQuery{{0, 60, 70}}))
	f.Add(uint8(MsgCascade), encodeCascadeOpen(1))
	f.Add(uint8(MsgCascade), encodeCascadeOpen(7))
	f.Add(uint8(MsgCascadeDone), []byte{1})
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		key := recRandomKey(recTestRand(1), 1000)
		specs, _ := cascadeSchedule(CascadeYan, 0.05, key.N)
		ca, cb, _, _, closeFn := Pipe()
		defer closeFn()
		done := make(chan error, 1)
		go func() {
			_, err := CascadeAlice(ca, key, CascadeYan)
			closeFn()
			done <- err
		}()
		if cb.Send(Message{Type: MsgCascade, Body: encodeCascadeHello(cascadeHello{n: key.N, specs: specs})}) != nil {
			return
		}
		if _, err := cb.Recv(); err != nil {
			t.Fatalf("no answer to hello: %v", err)
		}
		if cb.Send(Message{Type: typ, Body: body}) != nil {
			return
		}
		if typ != MsgCascadeDone {
			cb.Recv() // an answer, or the close after an error
		}
		cb.Send(Message{Type: MsgCascadeDone})
		<-done
	})
}

func TestCascadeAliceRejects(t *testing.T) {
	key := recRandomKey(recTestRand(2), 1000)
	specs, _ := cascadeSchedule(CascadeYan, 0.05, key.N)
	tests := []struct {
		name string
		msgs []Message
	}{
		{"wrong length", []Message{{MsgCascade, encodeCascadeHello(cascadeHello{n: 999, specs: specs})}}},
		{"not hello", []Message{{MsgCascade, encodeCascadeOpen(0)}}},
		{"range across blocks", []Message{{MsgCascade, encodeCascadeHello(cascadeHello{n: 1000, specs: specs})},
			{MsgCascade, encodeCascadeQueries([]cascadeQuery{{0, 0, 1000}})}}},
		{"pass not open", []Message{{MsgCascade, encodeCascadeHello(cascadeHello{n: 1000, specs: specs})},
			{MsgCascade, encodeCascadeQueries([]cascadeQuery{{3, 0, 1}})}}},
		{"skipped pass", []Message{{MsgCascade, encodeCascadeHello(cascadeHello{n: 1000, specs: specs})},
			{MsgCascade, encodeCascadeOpen(2)}}},
		{"stray type", []Message{{MsgCascade, encodeCascadeHello(cascadeHello{n: 1000, specs: specs})},
			{MsgVerify, nil}}},
		{"frame not a multiple of 64", []Message{{MsgCascade, encodeCascadeHello(cascadeHello{n: 1000, frame: 500, specs: specs})}}},
		{"frame longer than key", []Message{{MsgCascade, encodeCascadeHello(cascadeHello{n: 1000, frame: 1024, specs: specs})}}},
		// One block per frame: the range is inside a block but for the frames.
		{"range across frames", []Message{{MsgCascade, encodeCascadeHello(cascadeHello{n: 1000, frame: 256, specs: []passSpec{{passBlocks, 1000}}})},
			{MsgCascade, encodeCascadeQueries([]cascadeQuery{{0, 250, 260}})}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ca, cb, _, _, closeFn := Pipe()
			defer closeFn()
			done := make(chan error, 1)
			go func() {
				_, err := CascadeAlice(ca, key, CascadeYan)
				closeFn()
				done <- err
			}()
			for _, m := range tc.msgs {
				if cb.Send(m) != nil {
					break
				}
				if _, err := cb.Recv(); err != nil {
					break
				}
			}
			if err := <-done; err == nil {
				t.Fatal("Alice accepted a malformed conversation")
			}
		})
	}
}

// TestCascadeBobRejectsTamperedReply: a reply with the wrong number of parities ends Bob's run
// with an error.
func TestCascadeBobRejectsTamperedReply(t *testing.T) {
	key := recRandomKey(recTestRand(3), 1000)
	ca, cb, _, _, closeFn := Pipe()
	defer closeFn()
	go func() {
		if _, err := ca.Recv(); err == nil {
			ca.Send(Message{Type: MsgCascadeReply, Body: []byte{1, 0, 0, 0, 1}})
		}
	}()
	if _, err := CascadeBob(cb, key, 0.05, CascadeYan, recTestRand(4)); err == nil {
		t.Fatal("Bob accepted a reply with the wrong parity count")
	}
}
