package kms_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/qkms/qkms/kms"
)

func sampleBatch() []*kms.Command {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	return []*kms.Command{
		{Time: at, ReqID: "r1", Ingest: &kms.IngestCmd{Peer: kmeB, BlockID: "b1", Bytes: 4, Tag: []byte{1}, Sealed: []byte{1, 2, 3, 4}, QBER: 0.02}},
		{Time: at, Verify: &kms.VerifyCmd{Peer: kmeB, BlockID: "b1", Match: true}},
		{Time: at, Issue: &kms.IssueCmd{Self: kmeA, Peer: kmeB, Master: "SAE-A1", Slaves: []string{"SAE-B1"}, Bits: 256, KeyIDs: []string{"k"}, Expires: at.Add(time.Hour), Provenance: kms.ProvenanceQKD}},
		{Time: at, Fetch: &kms.FetchCmd{Master: "SAE-A1", Caller: "SAE-B1", KeyIDs: []string{"k"}}},
		{Time: at, PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: []kms.Reservation{{KeyID: "k", Ranges: []kms.Range{{Block: "b1", Len: 4}}}}}},
		{Time: at, MarkPushed: &kms.MarkPushedCmd{KeyIDs: []string{"k"}}},
		{Time: at, Expire: &kms.ExpireCmd{Limit: 3}},
		{Time: at, Transfer: &kms.TransferCmd{Peer: kmeB, BlockIDs: []string{"b1"}, To: kmeB}},
	}
}

func TestBatchRoundTrip(t *testing.T) {
	in := sampleBatch()
	data, err := kms.EncodeBatch(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := kms.DecodeBatch(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip differs:\n%+v\n%+v", in, out)
	}
}

func TestDecodeBatchRejects(t *testing.T) {
	good, _ := kms.EncodeBatch(sampleBatch()[:1])
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"version", append([]byte{9}, good[1:]...)},
		{"not json", []byte("\x01{{")},
		{"object", []byte("\x01{}")},
		{"null", []byte("\x01null")},
		{"null command", []byte("\x01[null]")},
		{"no operation", []byte(`` + "\x01" + `[{"t":"2025-01-01T00:00:00Z"}]`)},
		{"two operations", []byte("\x01" + `[{"expire":{"limit":1},"mark_pushed":{"key_ids":["k"]}}]`)},
		{"unknown field", []byte("\x01" + `[{"expire":{"limit":1},"bogus":1}]`)},
		{"trailing", append(bytes.Clone(good), []byte("[]")...)},
	} {
		if _, err := kms.DecodeBatch(tc.data); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, err := kms.EncodeBatch([]*kms.Command{nil}); err == nil {
		t.Error("encoded a nil command")
	}
}

// TestDecodeBatchNewerFormat: what a later version may write (a higher batch version, a new
// command kind, a new JSON field) is reported as ErrNewerFormat, so that a node stops at it
// instead of skipping it; damage to what this version writes is not.
func TestDecodeBatchNewerFormat(t *testing.T) {
	good, _ := kms.EncodeBatch(sampleBatch()[:1])
	blob := func(b []byte) []byte { return append(binary.AppendUvarint(nil, uint64(len(b))), b...) }
	v3 := func(kind byte, body []byte) []byte { return append([]byte{3, 1, kind}, blob(body)...) }
	js := []byte(`{"t":"2025-01-01T00:00:00Z","expire":{"limit":1},"split_keys":{}}`)
	for _, tc := range []struct {
		name  string
		data  []byte
		newer bool
	}{
		{"version 4", append([]byte{4}, good[1:]...), true},
		{"unknown kind", v3(42, good[3:]), true},
		{"unknown JSON field", v3(0, blob(js)), true},
		{"version 1", append([]byte{1}, good[1:]...), false},
		{"truncated", good[:len(good)-1], false},
		{"bad JSON", v3(0, blob([]byte(`{"expire":`))), false},
	} {
		_, err := kms.DecodeBatch(tc.data)
		if err == nil || errors.Is(err, kms.ErrNewerFormat) != tc.newer {
			t.Errorf("%s: %v, want newer=%v", tc.name, err, tc.newer)
		}
	}
}

// FuzzDecodeBatch: decoding never panics, and what it accepts re-encodes to an equal batch.
func FuzzDecodeBatch(f *testing.F) {
	good, _ := kms.EncodeBatch(sampleBatch())
	f.Add(good)
	full, _ := kms.EncodeBatch(fullBatch())
	f.Add(full)
	f.Add([]byte("\x01[]"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		cmds, err := kms.DecodeBatch(data)
		if err != nil {
			return
		}
		again, err := kms.EncodeBatch(cmds)
		if err != nil {
			t.Fatal(err)
		}
		cmds2, err := kms.DecodeBatch(again)
		if err != nil || len(cmds2) != len(cmds) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

// BenchmarkBatchCodec encodes and decodes the entries key requests produce: four requests of
// 16 keys (Issue and Fetch) and one push of 64 reservations (PeerReserve).
func BenchmarkBatchCodec(b *testing.B) {
	at := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	ids := make([]string, 16)
	for i := range ids {
		ids[i] = fmt.Sprintf("019ab%03d-1234-7abc-8def-0123456789ab", i)
	}
	issue := &kms.IssueCmd{Self: kmeA, Peer: kmeB, Master: "SAE-A1", Slaves: []string{"SAE-B1"},
		Bits: 256, KeyIDs: ids, Expires: at.Add(time.Minute), Provenance: kms.ProvenanceQKD}
	fetch := &kms.FetchCmd{Master: "SAE-A1", Caller: "SAE-B1", KeyIDs: ids}
	var rs []kms.Reservation
	for i := range 64 {
		rs = append(rs, kms.Reservation{KeyID: ids[i%16], Peer: kmeB, Owner: kmeA, Master: "SAE-A1",
			Slaves: []string{"SAE-B1"}, Bits: 256, Ranges: []kms.Range{{Block: "A-B-17", Off: 32 * i, Len: 32}},
			Provenance: kms.ProvenanceQKD, Issued: at, Expires: at.Add(time.Minute)})
	}
	for _, tc := range []struct {
		name string
		cmds []*kms.Command
	}{
		{"requests-4x16", []*kms.Command{
			{Time: at, ReqID: "issue/" + ids[0], Issue: issue}, {Time: at, ReqID: "fetch/SAE-B1/" + ids[1], Fetch: fetch},
			{Time: at, ReqID: "issue/" + ids[2], Issue: issue}, {Time: at, ReqID: "fetch/SAE-B1/" + ids[3], Fetch: fetch},
		}},
		{"push-64", []*kms.Command{{Time: at, PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: rs}}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				data, err := kms.EncodeBatch(tc.cmds)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := kms.DecodeBatch(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
