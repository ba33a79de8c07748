package kms_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/qkms/qkms/kms"
)

func auditKey(t testing.TB, b byte) *kms.AuditKey {
	t.Helper()
	k, err := kms.NewAuditKey(bytes.Repeat([]byte{b}, kms.AuditKeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newAuditLink is newLink with a separate audit key at each site.
func newAuditLink(t testing.TB) *link {
	l := newLink(t, kms.Limits{})
	for i, s := range []*site{l.a, l.b} {
		cfg := kms.Config{Self: s.id, Registry: registry(t), KeyTTL: time.Minute, TombstoneTTL: time.Minute,
			AuditKey: auditKey(t, byte(i+1))}
		s.m = kms.NewMachine(cfg)
	}
	return l
}

// auditScenario drives every key event through both sites and returns the keys delivered.
func auditScenario(t *testing.T, l *link) []kms.Key {
	t.Helper()
	for range 4 {
		l.ingest(64, true)
	}
	bad := l.ingest(64, false)
	l.verify(bad, false)
	// A owns blocks 1 and 3 (even positions); two keys for two slaves use up block 1.
	iss := l.must(l.a, l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1", "SAE-B2"}, 2, 256))
	l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: l.a.id, Reservations: iss.Reservations}})
	f1 := l.must(l.b, &kms.Command{Fetch: &kms.FetchCmd{Master: "SAE-A1", Caller: "SAE-B1", KeyIDs: ids(iss.Keys)}})
	l.must(l.b, &kms.Command{Fetch: &kms.FetchCmd{Master: "SAE-A1", Caller: "SAE-B2", KeyIDs: ids(iss.Keys)}})
	// A key nobody fetches expires at both sites.
	late := l.must(l.a, l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1"}, 1, 256))
	l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: l.a.id, Reservations: late.Reservations}})
	// Block 4 (odd position, owned by B, untouched) moves to A.
	l.must(l.b, &kms.Command{Transfer: &kms.TransferCmd{Peer: kmeA, BlockIDs: []string{"blk-0004"}, To: kmeA}})
	l.must(l.a, &kms.Command{Transfer: &kms.TransferCmd{Peer: kmeB, BlockIDs: []string{"blk-0004"}, To: kmeA}})
	l.must(l.a, &kms.Command{Admin: &kms.AdminCmd{Action: "/qkms.v1.Admin/ListPools", Actor: "SAE-A1", Outcome: "denied", Detail: "role sae"}})
	l.now = l.now.Add(2 * time.Minute)
	for _, s := range []*site{l.a, l.b} {
		l.must(s, &kms.Command{Expire: &kms.ExpireCmd{}})
	}
	return append(f1.Keys, iss.Keys...)
}

func events(es []*kms.AuditEntry) []kms.AuditEvent {
	var out []kms.AuditEvent
	for _, e := range es {
		if !slices.Contains(out, e.Event) {
			out = append(out, e.Event)
		}
	}
	slices.Sort(out)
	return out
}

func TestAuditEveryEvent(t *testing.T) {
	l := newAuditLink(t)
	keys := auditScenario(t, l)
	for _, tc := range []struct {
		s    *site
		want []kms.AuditEvent
	}{
		{l.a, []kms.AuditEvent{kms.EventAdmin, kms.EventBlockDiscarded, kms.EventBlockIngested,
			kms.EventBlockShredded, kms.EventBlockVerified, kms.EventKeyErased, kms.EventKeyExpired,
			kms.EventKeyIssued, kms.EventOwnership}},
		{l.b, []kms.AuditEvent{kms.EventBlockDiscarded, kms.EventBlockIngested, kms.EventBlockShredded,
			kms.EventBlockVerified, kms.EventKeyErased, kms.EventKeyExpired, kms.EventKeyFetched,
			kms.EventKeyReserved, kms.EventOwnership}},
	} {
		trail := tc.s.tx.AuditTrail()
		slices.Sort(tc.want)
		if got := events(trail); !slices.Equal(got, tc.want) {
			t.Errorf("%s: events %v, want %v", tc.s.id, got, tc.want)
		}
		checkChain(t, tc.s.id, trail)
		checkNoKeyBytes(t, tc.s.id, trail, keys)
	}
	// Each slave's fetch is its own entry, naming the slave.
	var fetchedBy []string
	for _, e := range l.b.tx.AuditTrail() {
		if e.Event == kms.EventKeyFetched {
			fetchedBy = append(fetchedBy, e.SAE)
		}
	}
	if !slices.Equal(fetchedBy, []string{"SAE-B1", "SAE-B2"}) {
		t.Errorf("fetch entries name %v", fetchedBy)
	}
}

func checkChain(t *testing.T, who string, trail []*kms.AuditEntry) {
	t.Helper()
	prev := make([]byte, kms.AuditHashSize)
	for i, e := range trail {
		if e.Seq != uint64(i+1) || !bytes.Equal(e.Prev, prev) || !bytes.Equal(e.Hash, kms.HashAuditEntry(e, nil)) {
			t.Fatalf("%s: entry %d (seq %d) does not chain", who, i+1, e.Seq)
		}
		prev = e.Hash
	}
}

// checkNoKeyBytes searches the JSON of every entry for each key's bytes, raw, hex and base64.
func checkNoKeyBytes(t *testing.T, who string, trail []*kms.AuditEntry, keys []kms.Key) {
	t.Helper()
	var all []byte
	for _, e := range trail {
		js, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, js...)
	}
	for _, k := range keys {
		for _, form := range [][]byte{k.Bytes, []byte(hex.EncodeToString(k.Bytes)),
			[]byte(base64.StdEncoding.EncodeToString(k.Bytes)[:40]), []byte(base64.RawURLEncoding.EncodeToString(k.Bytes)[:40])} {
			if bytes.Contains(all, form) {
				t.Fatalf("%s: the audit trail holds the bytes of key %s", who, k.ID)
			}
		}
	}
}

func TestAuditFingerprintsMatchAcrossSites(t *testing.T) {
	l := newAuditLink(t)
	auditScenario(t, l)
	kA, kB := auditKey(t, 1), auditKey(t, 2)
	digest := func(s *site, k *kms.AuditKey, ev kms.AuditEvent) map[string][]byte {
		out := map[string][]byte{}
		for _, e := range s.tx.AuditTrail() {
			if e.Event != ev {
				continue
			}
			for i, id := range e.KeyIDs {
				d, err := k.OpenFingerprint(id, e.Fingerprints[i])
				if err != nil {
					t.Fatalf("%s: key %s: %v", s.id, id, err)
				}
				out[id] = d
			}
		}
		return out
	}
	issued, fetched := digest(l.a, kA, kms.EventKeyIssued), digest(l.b, kB, kms.EventKeyFetched)
	if len(fetched) != 2 || len(issued) != 3 {
		t.Fatalf("%d keys fetched, %d issued", len(fetched), len(issued))
	}
	var ids []string
	for id, d := range fetched {
		if !bytes.Equal(issued[id], d) {
			t.Errorf("key %s: fingerprints of both sites open to different digests", id)
		}
		ids = append(ids, id)
	}
	if bytes.Equal(fetched[ids[0]], fetched[ids[1]]) {
		t.Error("two different keys have the same digest")
	}
	// The fingerprint of one site does not open under the other site's audit key.
	for _, e := range l.a.tx.AuditTrail() {
		if e.Event == kms.EventKeyIssued {
			if _, err := kB.OpenFingerprint(e.KeyIDs[0], e.Fingerprints[0]); err == nil {
				t.Error("site A's fingerprint opened under site B's audit key")
			}
			if _, err := kA.OpenFingerprint(e.KeyIDs[0]+"x", e.Fingerprints[0]); err == nil {
				t.Error("a fingerprint opened for another key ID")
			}
		}
	}
}

func TestAuditDeterministic(t *testing.T) {
	l1, l2 := newAuditLink(t), newAuditLink(t)
	auditScenario(t, l1)
	auditScenario(t, l2)
	a, _ := json.Marshal(l1.a.tx.AuditTrail())
	b, _ := json.Marshal(l2.a.tx.AuditTrail())
	if !bytes.Equal(a, b) {
		t.Fatal("the same commands produced different audit trails")
	}
}

func TestAuditNothingForRejected(t *testing.T) {
	l := newAuditLink(t)
	l.ingest(64, true)
	n := len(l.b.tx.AuditTrail())
	for _, c := range []*kms.Command{
		{Fetch: &kms.FetchCmd{Master: "SAE-A1", Caller: "SAE-B1", KeyIDs: []string{"00000000-0000-4000-8000-999999999999"}}},
		{Verify: &kms.VerifyCmd{Peer: kmeA, BlockID: "blk-0001", Match: true}}, // repeat: no-op
		{Admin: &kms.AdminCmd{Action: "x"}},
		{Checkpoint: &kms.CheckpointCmd{KME: kmeB, Seq: 1, Head: make([]byte, 32), Signer: "k", Signature: []byte{1}}},
	} {
		l.apply(l.b, c)
		if got := len(l.b.tx.AuditTrail()); got != n {
			t.Fatalf("%+v added %d audit entries", c, got-n)
		}
	}
}

func TestAuditCheckpoint(t *testing.T) {
	l := newAuditLink(t)
	l.ingest(64, true)
	trail := l.a.tx.AuditTrail()
	head := trail[len(trail)-1]
	for _, tc := range []struct {
		name string
		cp   kms.CheckpointCmd
		want error
	}{
		{"other site", kms.CheckpointCmd{KME: kmeB, Seq: head.Seq, Head: head.Hash, Signer: "k", Signature: []byte{1}}, kms.ErrBadRequest},
		{"future entry", kms.CheckpointCmd{KME: kmeA, Seq: head.Seq + 1, Head: head.Hash, Signer: "k", Signature: []byte{1}}, kms.ErrBadRequest},
		{"wrong head", kms.CheckpointCmd{KME: kmeA, Seq: head.Seq - 1, Head: head.Hash, Signer: "k", Signature: []byte{1}}, kms.ErrBadRequest},
		{"no signature", kms.CheckpointCmd{KME: kmeA, Seq: head.Seq, Head: head.Hash, Signer: "k"}, kms.ErrBadRequest},
		{"good", kms.CheckpointCmd{KME: kmeA, Seq: head.Seq, Head: head.Hash, Signer: "k", Signature: []byte{1}}, nil},
	} {
		cp := tc.cp
		res := l.apply(l.a, &kms.Command{Checkpoint: &cp})
		if tc.want == nil {
			if res.Err != nil {
				t.Fatalf("%s: %v", tc.name, res.Err)
			}
			continue
		}
		if !errors.Is(res.Err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, res.Err, tc.want)
		}
	}
	trail = l.a.tx.AuditTrail()
	last := trail[len(trail)-1]
	if last.Event != kms.EventCheckpoint || last.Checkpoint.Seq != head.Seq || last.Seq != head.Seq+1 {
		t.Fatalf("checkpoint entry %+v", last)
	}
}

func TestAuditCanonicalUnambiguous(t *testing.T) {
	base := kms.AuditEntry{Seq: 1, Event: kms.EventKeyIssued, KeyIDs: []string{"ab", "c"}, Prev: make([]byte, 32)}
	moved := base
	moved.KeyIDs = []string{"a", "bc"}
	joined := base
	joined.KeyIDs = []string{"abc"}
	h := kms.HashAuditEntry(&base, nil)
	for _, e := range []*kms.AuditEntry{&moved, &joined} {
		if bytes.Equal(h, kms.HashAuditEntry(e, nil)) {
			t.Errorf("%v and %v hash alike", base.KeyIDs, e.KeyIDs)
		}
	}
}

// auditSamples are entries of every shape the trail holds, for the codec tests.
func auditSamples() []*kms.AuditEntry {
	at := time.Date(2026, 12, 6, 17, 0, 0, 123456789, time.UTC)
	prev := bytes.Repeat([]byte{7}, kms.AuditHashSize)
	return []*kms.AuditEntry{
		{Seq: 1, Time: at, Event: kms.EventBlockIngested, Peer: kmeB, Owner: kmeA, Blocks: []string{"b1", "b2"}, Bytes: 1 << 20, Prev: make([]byte, kms.AuditHashSize)},
		{Seq: 2, Time: at, Event: kms.EventKeyFetched, Peer: kmeA, Owner: kmeA, KeyIDs: []string{"k1", "k2"}, Master: "SAE-A1",
			Slaves: []string{"SAE-B1", "SAE-B2"}, SAE: "SAE-B1", Bits: 256, Bytes: 64, Provenance: kms.ProvenanceHybrid,
			Fingerprints: [][]byte{bytes.Repeat([]byte{1}, kms.FingerprintSize), bytes.Repeat([]byte{2}, kms.FingerprintSize)}, Prev: prev},
		{Seq: 3, Time: at.Add(-time.Hour * 24 * 365 * 60), Event: kms.EventAdmin, Actor: "admin-1", Detail: "pause link: ok", Prev: prev},
		{Seq: 1 << 40, Time: at, Event: kms.EventCheckpoint, Prev: prev, Checkpoint: &kms.AuditCheckpoint{KME: kmeA, Seq: 1<<40 - 5,
			Head: prev, Signer: "key-1", Signature: bytes.Repeat([]byte{9}, 3309)}},
	}
}

// TestAuditCanonicalRoundTrip: DecodeAuditCanonical returns the entry AppendAuditCanonical
// encoded, field for field.
func TestAuditCanonicalRoundTrip(t *testing.T) {
	for _, e := range auditSamples() {
		enc := kms.AppendAuditCanonical(nil, e)
		got, err := kms.DecodeAuditCanonical(enc)
		if err != nil {
			t.Fatalf("entry %d: %v", e.Seq, err)
		}
		got.Hash = e.Hash
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("entry %d: decoded\n%+v\nwant\n%+v", e.Seq, got, e)
		}
		refusesDamage(t, fmt.Sprint("entry ", e.Seq), enc, func(b []byte) error { _, err := kms.DecodeAuditCanonical(b); return err })
	}
}

// FuzzDecodeAuditCanonical: stored audit records are decoded from bytes a tampered file may
// hold; decoding never panics, and what decodes encodes to bytes that decode to the same entry.
func FuzzDecodeAuditCanonical(f *testing.F) {
	for _, e := range auditSamples() {
		f.Add(kms.AppendAuditCanonical(nil, e))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := kms.DecodeAuditCanonical(b)
		if err != nil {
			return
		}
		again, err := kms.DecodeAuditCanonical(kms.AppendAuditCanonical(nil, e))
		if err != nil || !reflect.DeepEqual(again, e) {
			t.Fatalf("re-encoded entry does not decode to itself: %v\n%+v\n%+v", err, again, e)
		}
	})
}
