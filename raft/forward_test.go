package raft

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/qkms/qkms/kms"
)

func TestWireResultRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 7, 9, 30, 0, 123456789, time.UTC)
	res := &kms.Reservation{KeyID: "k1", Peer: "KME-B", Owner: "KME-A", Master: "SAE-A1", Slaves: []string{"SAE-B1", "SAE-B2"},
		Fetched: []string{"SAE-B2"}, Bits: 256, Ranges: []kms.Range{{Block: "b1", Off: 4064, Len: 32}},
		Provenance: kms.ProvenanceHybrid, Issued: at, Expires: at.Add(time.Hour), State: kms.KeyFetched, Pushed: true, Epoch: "e1"}
	tests := []struct {
		name    string
		in      *kms.Result
		wantErr error
	}{
		{"keys", &kms.Result{Keys: []kms.Key{{ID: "k1", Bytes: []byte{1, 2, 3}, Res: res}, {ID: "k2", Bytes: []byte{}}}, Reservations: []kms.Reservation{*res, {KeyID: "k3"}}}, nil},
		{"expired and transferred", &kms.Result{Expired: []string{"a", ""}, Transferred: []string{"b"}}, nil},
		{"empty", &kms.Result{}, nil},
		{"internal error", &kms.Result{Err: errors.New("disk on fire")}, nil},
	}
	for _, k := range errorKinds {
		tests = append(tests, struct {
			name    string
			in      *kms.Result
			wantErr error
		}{k.kind, &kms.Result{Err: fmt.Errorf("context: %w", k.err)}, k.err})
	}
	// JSON is what leaders of earlier versions answer, and what this version answers a follower
	// that does not ask for binary; the caller reads both.
	for _, bin := range []bool{false, true} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/bin=%v", tc.name, bin), func(t *testing.T) {
				var buf bytes.Buffer
				sent := &wireResponse{Index: 42, Results: []wireResult{toWireResult(tc.in)}}
				if err := writeResponse(&buf, sent, bin); err != nil {
					t.Fatal(err)
				}
				if isJSON := buf.Bytes()[4] == '{'; isJSON == bin {
					t.Fatalf("asked for binary: %v, got JSON: %v", bin, isJSON)
				}
				var resp wireResponse
				if err := readResponse(&buf, &resp); err != nil {
					t.Fatal(err)
				}
				if resp.Index != 42 || len(resp.Results) != 1 {
					t.Fatalf("answer %+v", resp)
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
				for i, k := range out.Keys {
					in := tc.in.Keys[i]
					if k.ID != in.ID || !bytes.Equal(k.Bytes, in.Bytes) || (k.Res == nil) != (in.Res == nil) ||
						k.Res != nil && !sameReservation(*k.Res, *in.Res) {
						t.Fatalf("key %d: %+v became %+v", i, in, k)
					}
				}
				for i, r := range out.Reservations {
					if !sameReservation(r, tc.in.Reservations[i]) {
						t.Fatalf("reservation %d: %+v became %+v", i, tc.in.Reservations[i], r)
					}
				}
			})
		}
	}
	// A top-level error, as a refused proposal gets.
	var buf bytes.Buffer
	if err := writeResponse(&buf, &wireResponse{Err: toWireError(hraft.ErrNotLeader)}, true); err != nil {
		t.Fatal(err)
	}
	var resp wireResponse
	if err := readResponse(&buf, &resp); err != nil || !errors.Is(fromWireError(resp.Err), hraft.ErrNotLeader) {
		t.Fatalf("top-level error: %v, %+v", err, resp.Err)
	}
	// A wrapped raft error keeps its kind too (Propose's retry decision depends on it).
	if !errors.Is(fromWireError(toWireError(fmt.Errorf("x: %w", hraft.ErrNotLeader))), hraft.ErrNotLeader) {
		t.Fatal("ErrNotLeader lost over the wire")
	}
}

// sameReservation compares every field, times as instants.
func sameReservation(a, b kms.Reservation) bool {
	if !a.Issued.Equal(b.Issued) || !a.Expires.Equal(b.Expires) {
		return false
	}
	a.Issued, a.Expires, b.Issued, b.Expires = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return reflect.DeepEqual(normalize(a), normalize(b))
}

// normalize treats empty and nil slices alike, as both encodings may.
func normalize(r kms.Reservation) kms.Reservation {
	if len(r.Slaves) == 0 {
		r.Slaves = nil
	}
	if len(r.Fetched) == 0 {
		r.Fetched = nil
	}
	if len(r.Ranges) == 0 {
		r.Ranges = nil
	}
	return r
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
	buf.Reset()
	at := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	_ = writeResponse(&buf, &wireResponse{Index: 7, Results: []wireResult{{Keys: []wireKey{{ID: "k", Bytes: []byte{1},
		Res: &kms.Reservation{KeyID: "k", Slaves: []string{"s"}, Ranges: []kms.Range{{Block: "b", Len: 1}}, Issued: at}}},
		Reservations: []kms.Reservation{{KeyID: "k"}}, Expired: []string{"e"}}}}, true)
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		// An answer in either form: what decodes re-encodes in binary to the same answer.
		var ans wireResponse
		if readResponse(bytes.NewReader(data), &ans) == nil {
			var out bytes.Buffer
			if err := writeResponse(&out, &ans, true); err != nil {
				t.Fatal(err)
			}
			var again wireResponse
			if err := readResponse(&out, &again); err != nil {
				t.Fatalf("re-encoded answer does not decode: %v", err)
			}
			if again.Index != ans.Index || len(again.Results) != len(ans.Results) || fmt.Sprint(again.Err) != fmt.Sprint(ans.Err) {
				t.Fatalf("answer %+v became %+v", ans, again)
			}
		}
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

// A binary answer whose lengths claim more elements than its bytes can hold is refused before
// anything is allocated for them.
func TestDecodeResponseBoundsLengths(t *testing.T) {
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"results", binary.AppendUvarint([]byte{respBinary, 0, 0}, 1<<40)},
		{"results beyond the bytes", append(binary.AppendUvarint([]byte{respBinary, 0, 0}, 3), make([]byte, 14)...)},
		{"keys", append(binary.AppendUvarint([]byte{respBinary, 0, 0, 1, 0}, 10), make([]byte, 20)...)},
		{"reservations", append(binary.AppendUvarint([]byte{respBinary, 0, 0, 1, 0, 0}, 3), make([]byte, 30)...)},
		{"trailing bytes", []byte{respBinary, 0, 0, 0, 9}},
		{"unknown form", []byte{2, 0, 0, 0}},
	} {
		var resp wireResponse
		if err := decodeResponse(tc.body, &resp); err == nil {
			t.Errorf("%s: decoded %+v", tc.name, resp)
		}
	}
	// The same lengths with the bytes to back them decode.
	var resp wireResponse
	if err := decodeResponse([]byte{respBinary, 0, 0, 1, 0, 0, 0, 0, 0}, &resp); err != nil || len(resp.Results) != 1 {
		t.Fatalf("one empty result: %v, %+v", err, resp)
	}
}
