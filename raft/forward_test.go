package raft

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	hraft "github.com/hashicorp/raft"

	"github.com/qkms/qkms/kms"
)

func TestWireResultRoundTrip(t *testing.T) {
	res := &kms.Reservation{KeyID: "k1", Peer: "KME-B", Slaves: []string{"SAE-B1"}, Bits: 256}
	tests := []struct {
		name    string
		in      *kms.Result
		wantErr error
	}{
		{"keys", &kms.Result{Keys: []kms.Key{{ID: "k1", Bytes: []byte{1, 2, 3}, Res: res}}, Reservations: []kms.Reservation{*res}}, nil},
		{"expired and transferred", &kms.Result{Expired: []string{"a"}, Transferred: []string{"b"}}, nil},
		{"internal error", &kms.Result{Err: errors.New("disk on fire")}, nil},
	}
	for _, k := range errorKinds {
		tests = append(tests, struct {
			name    string
			in      *kms.Result
			wantErr error
		}{k.kind, &kms.Result{Err: fmt.Errorf("context: %w", k.err)}, k.err})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := writeFrame(&buf, &wireResponse{Results: []wireResult{toWireResult(tc.in)}}); err != nil {
				t.Fatal(err)
			}
			var resp wireResponse
			if err := readFrame(&buf, &resp); err != nil {
				t.Fatal(err)
			}
			out := fromWireResult(&resp.Results[0])
			if (tc.in.Err == nil) != (out.Err == nil) {
				t.Fatalf("err %v became %v", tc.in.Err, out.Err)
			}
			if tc.in.Err != nil && out.Err.Error() != tc.in.Err.Error() {
				t.Fatalf("message %q became %q", tc.in.Err, out.Err)
			}
			if tc.wantErr != nil && !errors.Is(out.Err, tc.wantErr) {
				t.Fatalf("%v does not map back to %v", out.Err, tc.wantErr)
			}
			if len(out.Keys) != len(tc.in.Keys) || len(out.Reservations) != len(tc.in.Reservations) ||
				fmt.Sprint(out.Expired, out.Transferred) != fmt.Sprint(tc.in.Expired, tc.in.Transferred) {
				t.Fatalf("result %+v became %+v", tc.in, out)
			}
			for i := range out.Keys {
				if out.Keys[i].ID != tc.in.Keys[i].ID || !bytes.Equal(out.Keys[i].Bytes, tc.in.Keys[i].Bytes) ||
					out.Keys[i].Res.KeyID != tc.in.Keys[i].Res.KeyID {
					t.Fatalf("key %d changed", i)
				}
			}
		})
	}
	// A wrapped raft error keeps its kind too (Propose's retry decision depends on it).
	if !errors.Is(fromWireError(toWireError(fmt.Errorf("x: %w", hraft.ErrNotLeader))), hraft.ErrNotLeader) {
		t.Fatal("ErrNotLeader lost over the wire")
	}
}

func TestReadFrameRejectsOversize(t *testing.T) {
	hdr := []byte{0xff, 0xff, 0xff, 0xff}
	var req wireRequest
	if err := readFrame(bytes.NewReader(hdr), &req); err == nil {
		t.Fatal("accepted a frame larger than maxFrame")
	}
}

// FuzzReadFrame feeds arbitrary bytes from a (compromised or buggy) site node to the
// forwarding decoders: they must not panic, and what they accept must re-encode.
func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	_ = writeFrame(&buf, &wireRequest{Op: opPropose, Batch: []byte{1, '[', ']'}})
	f.Add(buf.Bytes())
	buf.Reset()
	_ = writeFrame(&buf, &wireResponse{Results: []wireResult{{Err: &wireError{Kind: "bad_request", Msg: "m"}, Keys: []wireKey{{ID: "k", Bytes: []byte{1}}}}}})
	f.Add(buf.Bytes())
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req wireRequest
		if readFrame(bytes.NewReader(data), &req) == nil {
			var out bytes.Buffer
			if err := writeFrame(&out, &req); err != nil {
				t.Fatal(err)
			}
		}
		var resp wireResponse
		if readFrame(bytes.NewReader(data), &resp) == nil {
			for i := range resp.Results {
				_ = fromWireResult(&resp.Results[i])
			}
			_ = fromWireError(resp.Err)
		}
	})
}

// FuzzApplyEntry drives the FSM with arbitrary log entry bytes: a bad entry is reported
// as ErrEntryDecode and changes nothing, one that may be of a later version stops the FSM
// before it; it never panics.
func FuzzApplyEntry(f *testing.F) {
	good, _ := encodeBatch([]*kms.Command{ingest("a", 1)})
	f.Add(good)
	f.Add([]byte{1, '[', 'n', 'u', 'l', 'l', ']'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newMemStore()
		m, err := newFSM(&countApplier{}, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		out := m.ApplyBatch([]*hraft.Log{{Index: 1, Type: hraft.LogCommand, Data: data}})
		want := uint64(1)
		if err, ok := out[0].(error); ok {
			switch {
			case errors.Is(err, kms.ErrNewerFormat):
				want = 0
			case !errors.Is(err, ErrEntryDecode):
				t.Fatalf("unexpected error kind: %v", err)
			}
			if s.available("KME-B") != 0 {
				t.Fatal("a rejected entry changed state")
			}
		}
		if idx, _ := m.appliedIndex(); idx != want {
			t.Fatalf("applied index %d after entry 1 (%v), want %d", idx, out[0], want)
		}
	})
}
