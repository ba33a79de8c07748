package kms_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/qkms/qkms/kms"
)

// fullBatch holds one command of every binary kind with every field set, so that a field
// added to one of these types without a place in the binary form fails TestBinaryKindsFull.
func fullBatch() []*kms.Command {
	at := time.Date(2026, 11, 25, 1, 2, 3, 456789, time.UTC)
	r := kms.Reservation{
		KeyID: "019ab3c4-0000-7000-8000-000000000001", Peer: kmeB, Owner: kmeA, Master: "SAE-A1",
		Slaves: []string{"SAE-B1", "SAE-B2"}, Fetched: []string{"SAE-B2"}, Bits: 256,
		Ranges:     []kms.Range{{Block: "A-B-1", Off: 96, Len: 16}, {Block: "A-B-2", Off: 0, Len: 16}},
		Provenance: kms.ProvenanceHybrid, Issued: at, Expires: at.Add(time.Minute),
		State: kms.KeyFetched, Pushed: true, Epoch: "epoch-7",
	}
	return []*kms.Command{
		{Time: at, ReqID: "issue/1", Issue: &kms.IssueCmd{Self: kmeA, Peer: kmeB, Master: "SAE-A1",
			Slaves: []string{"SAE-B1", "SAE-B2"}, Bits: 512, KeyIDs: []string{"k1", "k2"},
			Expires: at.Add(time.Hour), Provenance: kms.ProvenancePQC}},
		{Time: at, ReqID: "fetch/SAE-B1/1", Fetch: &kms.FetchCmd{Master: "SAE-A1", Caller: "SAE-B1", KeyIDs: []string{"k1", "k2"}}},
		{Time: at, ReqID: "push/1", PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: []kms.Reservation{r, r}}},
		{Time: at, ReqID: "mark/1", MarkPushed: &kms.MarkPushedCmd{KeyIDs: []string{"k1"}}},
	}
}

// allSet fails t for every zero field of v, a struct or a pointer to one, recursively.
func allSet(t *testing.T, name string, v reflect.Value) {
	t.Helper()
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	for i := 0; i < v.NumField(); i++ {
		f, ft := v.Field(i), v.Type().Field(i)
		switch {
		case f.Kind() == reflect.Pointer && f.IsNil(), f.Kind() == reflect.Slice && f.IsNil():
			continue // the operations a command does not hold, lists checked by element
		case f.IsZero():
			t.Errorf("%s.%s is zero in the sample: give it a value (and a place in the binary form)", name, ft.Name)
		case f.Kind() == reflect.Struct && ft.Type != reflect.TypeFor[time.Time]():
			allSet(t, name+"."+ft.Name, f)
		case f.Kind() == reflect.Pointer:
			allSet(t, name+"."+ft.Name, f)
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct:
			allSet(t, name+"."+ft.Name+"[0]", f.Index(0))
		}
	}
}

func TestBinaryKindsFull(t *testing.T) {
	in := fullBatch()
	for _, c := range in {
		allSet(t, "Command", reflect.ValueOf(c))
	}
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
	var got kms.Reservation
	r := &in[2].PeerReserve.Reservations[0]
	if err := kms.DecodeReservation(kms.AppendReservation(nil, r), &got); err != nil || !reflect.DeepEqual(*r, got) {
		t.Fatalf("reservation round trip: %v\n%+v\n%+v", err, *r, got)
	}
}

// Entries written before batchV3 are still read.
func TestDecodeBatchV2(t *testing.T) {
	in := sampleBatch()
	var sealed [][]byte
	shallow := make([]kms.Command, len(in))
	for i, c := range in {
		shallow[i] = *c
		if c.Ingest != nil {
			ing := *c.Ingest
			sealed = append(sealed, ing.Sealed)
			ing.Sealed = nil
			shallow[i].Ingest = &ing
		}
	}
	js, err := json.Marshal(shallow)
	if err != nil {
		t.Fatal(err)
	}
	v2 := binary.AppendUvarint([]byte{2}, uint64(len(js)))
	v2 = append(v2, js...)
	for _, s := range sealed {
		v2 = binary.AppendUvarint(v2, uint64(len(s)))
		v2 = append(v2, s...)
	}
	out, err := kms.DecodeBatch(v2)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("v2 entry decodes differently:\n%+v\n%+v", in, out)
	}
}

func TestDecodeBatchV3Rejects(t *testing.T) {
	good, err := kms.EncodeBatch(fullBatch()[:1])
	if err != nil {
		t.Fatal(err)
	}
	// One command of kind k with the given body.
	entry := func(k byte, body []byte) []byte {
		b := []byte{3, 1, k}
		b = binary.AppendUvarint(b, uint64(len(body)))
		return append(b, body...)
	}
	n, k := binary.Uvarint(good[3:])
	body := good[3+k : 3+k+int(n)] // the Issue's binary body
	if len(good) != 3+k+int(n) {
		t.Fatal("test assumes a one-command entry")
	}
	if _, err := kms.DecodeBatch(entry(1, body)); err != nil {
		t.Fatalf("rebuilt entry: %v", err)
	}
	issueJSON, _ := json.Marshal(fullBatch()[0])
	jsonBody := func(js []byte) []byte { return append(binary.AppendUvarint(nil, uint64(len(js))), js...) }
	ingestJSON, _ := json.Marshal(&kms.Command{Ingest: &kms.IngestCmd{Peer: kmeB, BlockID: "b", Bytes: 1}})
	expireJSON, _ := json.Marshal(&kms.Command{Expire: &kms.ExpireCmd{Limit: 1}})
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"truncated", good[:len(good)-1]},
		{"trailing", append(bytes.Clone(good), 0)},
		{"count past the end", []byte{3, 5, 2}},
		{"unknown kind", entry(9, []byte{0, 0})},
		{"empty binary body", entry(2, nil)},
		{"body with trailing byte", entry(1, append(bytes.Clone(body), 0))},
		{"body cut short", entry(1, body[:len(body)-1])},
		{"issue body read as fetch", entry(2, body)},
		{"binary kind as JSON", entry(0, jsonBody(issueJSON))},
		{"ingest without material", entry(0, jsonBody(ingestJSON))},
		{"material after a non-ingest", entry(0, append(jsonBody(expireJSON), 1, 7))},
		{"bad time tag", entry(2, []byte{7})},
	} {
		if _, err := kms.DecodeBatch(tc.data); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// TestRequestRecordCodec: request records round-trip, and a truncated or extended body is
// refused.
func TestRequestRecordCodec(t *testing.T) {
	at := time.Date(2026, 12, 6, 18, 0, 0, 5, time.UTC)
	for _, rec := range []*kms.RequestRecord{
		{Kind: "issue", At: at, Keys: []kms.RecordedKey{{ID: "k1", Bytes: []byte{1, 2, 3}, Provenance: kms.ProvenanceQKD}, {ID: "k2", Bytes: make([]byte, 1024), Provenance: kms.ProvenancePQC}}},
		{Kind: "fetch", At: at},
	} {
		enc := kms.AppendRequestRecord(nil, rec)
		got, err := kms.DecodeRequestRecord(enc)
		if err != nil || !reflect.DeepEqual(got, rec) {
			t.Fatalf("%s: %+v, %v", rec.Kind, got, err)
		}
		// The store wipes the decrypted body once decoded: the keys must not share it.
		clear(enc)
		if !reflect.DeepEqual(got, rec) {
			t.Fatalf("%s: wiping the body changed the decoded keys", rec.Kind)
		}
		enc = kms.AppendRequestRecord(nil, rec)
		refusesDamage(t, rec.Kind, enc, func(b []byte) error { _, err := kms.DecodeRequestRecord(b); return err })
	}
}

// refusesDamage checks that decode refuses enc cut short anywhere and enc with a trailing byte.
func refusesDamage(t *testing.T, name string, enc []byte, decode func([]byte) error) {
	t.Helper()
	for cut := range len(enc) {
		if decode(enc[:cut]) == nil {
			t.Fatalf("%s cut to %d of %d bytes decoded", name, cut, len(enc))
		}
	}
	if decode(append(enc[:len(enc):len(enc)], 0)) == nil {
		t.Fatalf("%s with a trailing byte decoded", name)
	}
}
