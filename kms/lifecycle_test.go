package kms_test

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/qkms/qkms/kms"
)

// TestMasterSlaveSameBytes: a key issued at A for a slave at B is fetched at B with the same
// bytes, exactly once, and erased at both sites afterwards (invariants 1 and 3).
func TestMasterSlaveSameBytes(t *testing.T) {
	l := newLink(t, kms.Limits{})
	for range 4 {
		l.ingest(64, true)
	}
	// A owns the blocks at even positions: 2 x 64 bytes.
	if got := pool(t, l.a).Available; got != 128 {
		t.Fatalf("A available %d, want 128", got)
	}
	is := l.issue(l.a, "SAE-A1", []string{"SAE-B1"}, 3, 256)
	if is.Err != nil {
		t.Fatal(is.Err)
	}
	if len(is.Keys) != 3 || len(is.Reservations) != 3 {
		t.Fatalf("issued %d keys, %d reservations", len(is.Keys), len(is.Reservations))
	}
	for i, k := range is.Keys {
		if len(k.Bytes) != 32 || !bytes.Equal(k.Bytes, l.expected(&is.Reservations[i])) {
			t.Fatalf("key %d: bytes differ from the link's", i)
		}
		for _, rg := range is.Reservations[i].Ranges {
			if _, err := l.a.tx.ReadMaterial(kmeB, rg.Block, rg.Off, rg.Len); err == nil {
				t.Fatalf("key %d still readable at the issuing site", i)
			}
		}
	}
	if got := pool(t, l.a).Available; got != 128-96 {
		t.Fatalf("A available %d after issue, want 32", got)
	}
	l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: is.Reservations}})
	if got := pool(t, l.b).Reserved; got != 96 {
		t.Fatalf("B reserved %d, want 96", got)
	}
	fe := l.fetch(l.b, "SAE-A1", "SAE-B1", ids(is.Keys)...)
	if fe.Err != nil {
		t.Fatal(fe.Err)
	}
	for i := range is.Keys {
		if fe.Keys[i].ID != is.Keys[i].ID || !bytes.Equal(fe.Keys[i].Bytes, is.Keys[i].Bytes) {
			t.Fatalf("key %d: slave got other bytes than master", i)
		}
		for _, rg := range is.Reservations[i].Ranges {
			if _, err := l.b.tx.ReadMaterial(kmeA, rg.Block, rg.Off, rg.Len); err == nil {
				t.Fatalf("key %d still readable at the slave site after fetch", i)
			}
		}
	}
	if got := pool(t, l.b).Reserved; got != 0 {
		t.Fatalf("B reserved %d after fetch, want 0", got)
	}
	// A second fetch of any of the IDs fails.
	for _, id := range ids(is.Keys) {
		wantErr(t, l.fetch(l.b, "SAE-A1", "SAE-B1", id).Err, kms.ErrKeyNotFound)
	}
	// The owner answers a pull with the reservations it issued.
	rs, err := l.a.m.Lookup(l.a.tx, ids(is.Keys))
	if err != nil || len(rs) != 3 {
		t.Fatalf("lookup: %d, %v", len(rs), err)
	}
	// The push acknowledged, the owner marks it; unknown IDs in the ack are skipped.
	l.must(l.a, &kms.Command{MarkPushed: &kms.MarkPushedCmd{KeyIDs: append(ids(is.Keys), "unknown")}})
	for _, id := range ids(is.Keys) {
		if r, _ := l.a.tx.Reservation(id); r == nil || !r.Pushed {
			t.Fatalf("reservation %s not marked pushed", id)
		}
	}
}

// TestFetchRules: the 401 rule and the other refusals of Get key with key IDs; each leaves both
// stores unchanged.
func TestFetchRules(t *testing.T) {
	l := newLink(t, kms.Limits{})
	l.ingest(256, true)
	is := l.issue(l.a, "SAE-A1", []string{"SAE-B1"}, 2, 256)
	if is.Err != nil {
		t.Fatal(is.Err)
	}
	l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: is.Reservations}})
	k0, k1 := is.Keys[0].ID, is.Keys[1].ID
	tests := []struct {
		name           string
		master, caller string
		ids            []string
		want           error
	}{
		{"third SAE", "SAE-A1", "SAE-B2", []string{k0}, kms.ErrUnauthorized},
		{"third SAE among good", "SAE-A1", "SAE-B2", []string{k0, k1}, kms.ErrUnauthorized},
		{"other master", "SAE-A2", "SAE-B1", []string{k0}, kms.ErrUnauthorized},
		{"unknown ID", "SAE-A1", "SAE-B1", []string{"nope"}, kms.ErrKeyNotFound},
		{"one unknown among good", "SAE-A1", "SAE-B1", []string{k0, "nope"}, kms.ErrKeyNotFound},
		{"duplicate ID", "SAE-A1", "SAE-B1", []string{k0, k0}, kms.ErrBadRequest},
		{"no IDs", "SAE-A1", "SAE-B1", nil, kms.ErrBadRequest},
		{"caller of another KME", "SAE-A1", "SAE-A2", []string{k0}, kms.ErrUnauthorized},
		{"unknown caller", "SAE-A1", "SAE-X", []string{k0}, kms.ErrUnknownSAE},
		{"unknown master", "SAE-X", "SAE-B1", []string{k0}, kms.ErrUnknownSAE},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := l.b.tx.Dump()
			wantErr(t, l.fetch(l.b, tc.master, tc.caller, tc.ids...).Err, tc.want)
			if l.b.tx.Dump() != before {
				t.Fatal("rejected fetch changed the store")
			}
		})
	}
	// At the issuing site the keys are not for its own SAEs.
	wantErr(t, l.fetch(l.a, "SAE-B1", "SAE-A2", k0).Err, kms.ErrUnauthorized)
	// The absent IDs are named so the node can pull them.
	var e *kms.Error
	r := l.fetch(l.b, "SAE-A1", "SAE-B1", k0, "missing-1")
	if !errorsAs(r.Err, &e) || !slices.Equal(e.Absent, []string{"missing-1"}) {
		t.Fatalf("absent IDs not reported: %v", r.Err)
	}
	if got := kms.Message(r.Err); got != "one or more keys specified are not found on KME" {
		t.Fatalf("message %q", got)
	}
	// After all the refusals the keys are still there for their slave.
	if r := l.fetch(l.b, "SAE-A1", "SAE-B1", k0, k1); r.Err != nil || !bytes.Equal(r.Keys[1].Bytes, is.Keys[1].Bytes) {
		t.Fatalf("good fetch after refusals: %v", r.Err)
	}
}

// TestFetchErasesOnlyFetched: a fetch reads and erases the ranges of its keys in runs of
// adjacent keys; a key between them, not fetched, keeps its bytes.
func TestFetchErasesOnlyFetched(t *testing.T) {
	l := newLink(t, kms.Limits{})
	l.ingest(1024, true)
	is := l.must(l.a, l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1"}, 5, 256))
	l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: is.Reservations}})
	readable := func(i int) bool {
		rg := is.Reservations[i].Ranges[0]
		_, err := l.b.tx.ReadMaterial(kmeA, rg.Block, rg.Off, rg.Len)
		return err == nil
	}
	// Keys 0, 1, 3 and 4 in one request (out of order): two runs around key 2.
	got := l.must(l.b, &kms.Command{Fetch: &kms.FetchCmd{Master: "SAE-A1", Caller: "SAE-B1",
		KeyIDs: []string{is.Keys[4].ID, is.Keys[0].ID, is.Keys[3].ID, is.Keys[1].ID}}})
	for j, i := range []int{4, 0, 3, 1} {
		if !bytes.Equal(got.Keys[j].Bytes, is.Keys[i].Bytes) {
			t.Fatalf("key %d: other bytes at the slave's site", i)
		}
		if readable(i) {
			t.Fatalf("key %d readable after its fetch", i)
		}
	}
	if !readable(2) {
		t.Fatal("key 2, not fetched, was erased with its neighbours")
	}
	if r := l.must(l.b, &kms.Command{Fetch: &kms.FetchCmd{Master: "SAE-A1", Caller: "SAE-B1", KeyIDs: []string{is.Keys[2].ID}}}); !bytes.Equal(r.Keys[0].Bytes, is.Keys[2].Bytes) || readable(2) {
		t.Fatal("key 2: other bytes, or still readable after its fetch")
	}
}

// TestMulticast: each additional slave fetches once; the bytes are erased after the last.
func TestMulticast(t *testing.T) {
	l := newLink(t, kms.Limits{})
	l.ingest(128, true)
	slaves := []string{"SAE-B1", "SAE-B2", "SAE-B3"}
	is := l.issue(l.a, "SAE-A1", slaves, 1, 512)
	if is.Err != nil {
		t.Fatal(is.Err)
	}
	l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: is.Reservations}})
	id := is.Keys[0].ID
	rg := is.Reservations[0].Ranges[0]
	for i, s := range slaves {
		r := l.fetch(l.b, "SAE-A1", s, id)
		if r.Err != nil || !bytes.Equal(r.Keys[0].Bytes, is.Keys[0].Bytes) {
			t.Fatalf("slave %s: %v", s, r.Err)
		}
		wantErr(t, l.fetch(l.b, "SAE-A1", s, id).Err, kms.ErrKeyNotFound)
		_, err := l.b.tx.ReadMaterial(kmeA, rg.Block, rg.Off, rg.Len)
		if last := i == len(slaves)-1; (err == nil) == last {
			t.Fatalf("after %d of %d slaves: material readable = %v", i+1, len(slaves), err == nil)
		}
	}
	wantErr(t, l.fetch(l.b, "SAE-A1", "SAE-A2", id).Err, kms.ErrUnauthorized)
}

// TestExpiry: unfetched keys expire at both sites, their bytes are erased, and a push retried
// after expiry revives nothing.
func TestExpiry(t *testing.T) {
	l := newLink(t, kms.Limits{})
	l.ingest(64, true)
	is := l.issue(l.a, "SAE-A1", []string{"SAE-B1", "SAE-B2"}, 2, 128)
	if is.Err != nil {
		t.Fatal(is.Err)
	}
	l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: is.Reservations}})
	if r := l.fetch(l.b, "SAE-A1", "SAE-B1", is.Keys[0].ID); r.Err != nil {
		t.Fatal(r.Err)
	}
	exp := is.Reservations[0].Expires
	// Not yet.
	l.now = exp.Add(-time.Second)
	if r := l.must(l.b, &kms.Command{Expire: &kms.ExpireCmd{}}); len(r.Expired) != 0 {
		t.Fatalf("expired early: %v", r.Expired)
	}
	l.now = exp
	for _, s := range []*site{l.a, l.b} {
		r := l.must(s, &kms.Command{Expire: &kms.ExpireCmd{Limit: 10}})
		if len(r.Expired) != 2 {
			t.Fatalf("%s expired %v, want both keys", s.id, r.Expired)
		}
	}
	for i := range is.Keys {
		wantErr(t, l.fetch(l.b, "SAE-A1", "SAE-B2", is.Keys[i].ID).Err, kms.ErrKeyNotFound)
	}
	blk := is.Reservations[0].Ranges[0].Block
	if got := l.b.tx.Live(kmeA, blk); got != 64-32 {
		t.Fatalf("B holds %d live bytes of the block, want 32", got)
	}
	if p := pool(t, l.b); p.Reserved != 0 {
		t.Fatalf("B reserved %d after expiry", p.Reserved)
	}
	// A retried push while the tombstone lives is a no-op.
	before := l.b.tx.Dump()
	l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: is.Reservations}})
	if l.b.tx.Dump() != before {
		t.Fatal("retried push after expiry changed the store")
	}
	// Tombstones are purged after their TTL; a push after that is ignored as expired.
	l.now = exp.Add(2 * time.Minute)
	l.must(l.b, &kms.Command{Expire: &kms.ExpireCmd{}})
	if r, _ := l.b.tx.Reservation(is.Keys[0].ID); r != nil {
		t.Fatal("tombstone not purged")
	}
	l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: is.Reservations}})
	if r, _ := l.b.tx.Reservation(is.Keys[0].ID); r != nil {
		t.Fatal("late push revived an expired key")
	}
	if r, _ := l.a.tx.Reservation(is.Keys[0].ID); r != nil {
		t.Fatal("issuing site kept an expired reservation")
	}
}

// TestSpanningBlocks: keys larger than what is left in a block continue in the next owned
// block, and the slave reassembles the same bytes.
func TestSpanningBlocks(t *testing.T) {
	l := newLink(t, kms.Limits{})
	var owned []string
	for range 6 {
		id := l.ingest(40, true)
		if b, _ := l.a.tx.Block(kmeB, id); b.Owner == kmeA {
			owned = append(owned, id)
		}
	}
	is := l.issue(l.a, "SAE-A1", []string{"SAE-B1"}, 3, 256) // 96 of A's 120 bytes
	if is.Err != nil {
		t.Fatal(is.Err)
	}
	wantRanges := [][]kms.Range{
		{{Block: owned[0], Off: 0, Len: 32}},
		{{Block: owned[0], Off: 32, Len: 8}, {Block: owned[1], Off: 0, Len: 24}},
		{{Block: owned[1], Off: 24, Len: 16}, {Block: owned[2], Off: 0, Len: 16}},
	}
	for i, r := range is.Reservations {
		if !slices.Equal(r.Ranges, wantRanges[i]) {
			t.Fatalf("key %d ranges %v, want %v", i, r.Ranges, wantRanges[i])
		}
	}
	if l.a.tx.HasMaterial(kmeB, owned[0]) || l.a.tx.HasMaterial(kmeB, owned[1]) {
		t.Fatal("fully used blocks not dropped at the issuing site")
	}
	if p := pool(t, l.a); !slices.Equal(p.Owned, owned[2:]) || p.Available != 24 {
		t.Fatalf("A pool %+v", p)
	}
	l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: is.Reservations}})
	fe := l.fetch(l.b, "SAE-A1", "SAE-B1", ids(is.Keys)...)
	if fe.Err != nil {
		t.Fatal(fe.Err)
	}
	for i := range is.Keys {
		if !bytes.Equal(fe.Keys[i].Bytes, is.Keys[i].Bytes) {
			t.Fatalf("key %d differs", i)
		}
	}
	if l.b.tx.HasMaterial(kmeA, owned[0]) || !l.b.tx.HasMaterial(kmeA, owned[2]) {
		t.Fatal("slave site: wrong blocks dropped")
	}
	// 24 bytes left: a 256-bit key does not fit, nothing is consumed.
	before := l.a.tx.Dump()
	wantErr(t, l.issue(l.a, "SAE-A1", []string{"SAE-B1"}, 1, 256).Err, kms.ErrNotEnoughKey)
	if l.a.tx.Dump() != before {
		t.Fatal("failed issue changed the store")
	}
}

// TestMismatchDiscarded: a block whose tags differ is discarded at both ends, its material
// dropped, and never used.
func TestMismatchDiscarded(t *testing.T) {
	l := newLink(t, kms.Limits{})
	bad := l.ingest(64, false)
	l.verify(bad, false)
	for _, s := range []*site{l.a, l.b} {
		b, _ := s.tx.Block(s.peer(), bad)
		if b.State != kms.BlockDiscarded || s.tx.HasMaterial(s.peer(), bad) {
			t.Fatalf("%s: block %+v not discarded", s.id, b)
		}
		if p := pool(t, s); p.Available != 0 || p.Pending != 0 {
			t.Fatalf("%s: pool %+v counts a discarded block", s.id, p)
		}
		// Idempotent, and not reversible.
		l.must(s, &kms.Command{Verify: &kms.VerifyCmd{Peer: s.peer(), BlockID: bad, Match: false}})
		wantErr(t, l.apply(s, &kms.Command{Verify: &kms.VerifyCmd{Peer: s.peer(), BlockID: bad, Match: true}}).Err, kms.ErrBadRequest)
	}
	wantErr(t, l.issue(l.a, "SAE-A1", []string{"SAE-B1"}, 1, 64).Err, kms.ErrNotEnoughKey)
	// A reservation naming the discarded block is refused by the slave site.
	forged := []kms.Reservation{{KeyID: "k", Peer: kmeB, Owner: kmeA, Master: "SAE-A1", Slaves: []string{"SAE-B1"},
		Bits: 64, Ranges: []kms.Range{{Block: bad, Off: 0, Len: 8}}, Expires: t0.Add(time.Hour)}}
	wantErr(t, l.push(l.a, l.b, forged).Err, kms.ErrBadRequest)
	// Later good blocks are used; the discarded one never appears in a range.
	l.ingest(64, true)
	good := l.ingest(64, true)
	is := l.issue(l.a, "SAE-A1", []string{"SAE-B1"}, 2, 256)
	if is.Err != nil {
		t.Fatal(is.Err)
	}
	for _, r := range is.Reservations {
		for _, rg := range r.Ranges {
			if rg.Block != good {
				t.Fatalf("range in block %s, want only %s", rg.Block, good)
			}
		}
	}
}

// TestPeerReserveBeforeVerify: a reservation in a block the slave site has not verified (or not
// ingested) is refused with ErrNotConfirmed and succeeds when retried after verification.
func TestPeerReserveBeforeVerify(t *testing.T) {
	l := newLink(t, kms.Limits{})
	id := l.ingest(64, false)
	l.must(l.a, &kms.Command{Verify: &kms.VerifyCmd{Peer: kmeB, BlockID: id, Match: true}})
	is := l.issue(l.a, "SAE-A1", []string{"SAE-B1"}, 1, 256)
	if is.Err != nil {
		t.Fatal(is.Err)
	}
	before := l.b.tx.Dump()
	wantErr(t, l.push(l.a, l.b, is.Reservations).Err, kms.ErrNotConfirmed)
	if l.b.tx.Dump() != before {
		t.Fatal("refused push changed the store")
	}
	l.must(l.b, &kms.Command{Verify: &kms.VerifyCmd{Peer: kmeA, BlockID: id, Match: true}})
	l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: is.Reservations}})
	// Idempotent by key ID.
	before = l.b.tx.Dump()
	l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: is.Reservations}})
	if l.b.tx.Dump() != before {
		t.Fatal("repeated push changed the store")
	}
	// Same key ID, other bits: refused.
	other := slices.Clone(is.Reservations)
	other[0].Ranges = []kms.Range{{Block: id, Off: 32, Len: 32}}
	wantErr(t, l.push(l.a, l.b, other).Err, kms.ErrBadRequest)

	// A block not ingested at all.
	fresh := []kms.Reservation{{KeyID: "k2", Peer: kmeB, Owner: kmeA, Master: "SAE-A1", Slaves: []string{"SAE-B1"},
		Bits: 64, Ranges: []kms.Range{{Block: "blk-none", Off: 0, Len: 8}}, Expires: t0.Add(time.Hour)}}
	wantErr(t, l.push(l.a, l.b, fresh).Err, kms.ErrNotConfirmed)
}

// TestIdempotentReqID: a command whose ReqID was applied changes nothing when it comes again,
// and gets the first application's keys (a retry after a lost answer), until RequestTTL.
func TestIdempotentReqID(t *testing.T) {
	l := newLink(t, kms.Limits{})
	l.ingest(256, true)
	c := l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1"}, 1, 256)
	c.ReqID = "req-1"
	first := l.apply(l.a, c)
	if first.Err != nil {
		t.Fatal(first.Err)
	}
	before := l.a.tx.Dump()
	r := l.apply(l.a, c) // the same command again, as raft retries it
	if r.Err != nil {
		t.Fatalf("replayed issue: %v", r.Err)
	}
	if len(r.Keys) != 1 || r.Keys[0].ID != first.Keys[0].ID || !bytes.Equal(r.Keys[0].Bytes, first.Keys[0].Bytes) {
		t.Fatal("replayed issue did not return the first application's key")
	}
	if l.a.tx.Dump() != before {
		t.Fatal("repeated request changed the state")
	}
	if len(r.Reservations) != 1 {
		t.Fatalf("replayed issue returned %d reservations to push, want 1", len(r.Reservations))
	}

	// The same at the slave's site for a fetch.
	l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: first.Reservations}})
	f := &kms.Command{ReqID: "fetch-1", Fetch: &kms.FetchCmd{Master: "SAE-A1", Caller: "SAE-B1", KeyIDs: []string{first.Keys[0].ID}}}
	f1 := l.apply(l.b, f)
	f2 := l.apply(l.b, f)
	if f1.Err != nil || f2.Err != nil || !bytes.Equal(f1.Keys[0].Bytes, f2.Keys[0].Bytes) || !bytes.Equal(f1.Keys[0].Bytes, first.Keys[0].Bytes) {
		t.Fatalf("replayed fetch: %v / %v", f1.Err, f2.Err)
	}
	// Another request ID is a new request: the key is gone.
	wantErr(t, l.apply(l.b, &kms.Command{ReqID: "fetch-2", Fetch: f.Fetch}).Err, kms.ErrKeyNotFound)

	// A reused ID of another kind is refused.
	wantErr(t, l.apply(l.b, &kms.Command{ReqID: "fetch-1", MarkPushed: &kms.MarkPushedCmd{KeyIDs: []string{"x"}}}).Err, kms.ErrBadRequest)

	// Records, and the copies of the keys in them, go after RequestTTL.
	l.must(l.b, &kms.Command{Time: t0.Add(kms.DefaultRequestTTL + time.Hour), Expire: &kms.ExpireCmd{}})
	if rec, _ := l.b.tx.Request("fetch-1"); rec != nil {
		t.Fatal("request record outlived RequestTTL")
	}

	// A rejected command does not record its ReqID: it can be retried.
	c3 := l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1"}, 1, 12)
	c3.ReqID = "req-2"
	wantErr(t, l.apply(l.a, c3).Err, kms.ErrBadRequest)
	if rec, _ := l.a.tx.Request("req-2"); rec != nil {
		t.Fatal("rejected request recorded")
	}
}

// TestFetchReplayRules: a fetch's request ID can come from its SAE (an idempotency key), so a
// replay must ask for the same keys of the same master; it is recorded in the audit trail.
func TestFetchReplayRules(t *testing.T) {
	l := newLink(t, kms.Limits{})
	l.ingest(256, true)
	issued := l.must(l.a, l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1"}, 2, 256))
	l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: issued.Reservations}})
	ids := []string{issued.Keys[0].ID, issued.Keys[1].ID}
	fetch := func(master string, keyIDs ...string) *kms.Result {
		return l.apply(l.b, &kms.Command{ReqID: "fetch/SAE-B1/idem/x", Fetch: &kms.FetchCmd{Master: master, Caller: "SAE-B1", KeyIDs: keyIDs}})
	}
	if r := fetch("SAE-A1", ids...); r.Err != nil || r.Replayed {
		t.Fatalf("first fetch: %v, replayed %v", r.Err, r.Replayed)
	}
	head := func() uint64 {
		seq, _, err := l.b.tx.AuditHead()
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	before, seq := l.b.tx.Dump(), head()
	for _, bad := range [][]string{ids[:1], {ids[1], ids[0]}, {ids[0], ids[1], "00000000-0000-4000-8000-000000000999"}} {
		wantErr(t, fetch("SAE-A1", bad...).Err, kms.ErrBadRequest)
	}
	wantErr(t, fetch("SAE-A2", ids...).Err, kms.ErrBadRequest)
	if l.b.tx.Dump() != before {
		t.Fatal("a refused replay changed the state")
	}
	r := fetch("SAE-A1", ids...)
	if r.Err != nil || !r.Replayed || len(r.Keys) != 2 || !bytes.Equal(r.Keys[0].Bytes, issued.Keys[0].Bytes) || !bytes.Equal(r.Keys[1].Bytes, issued.Keys[1].Bytes) {
		t.Fatalf("replay: %v (replayed %v)", r.Err, r.Replayed)
	}
	var last *kms.AuditEntry
	l.b.tx.Audit(seq+1, func(e *kms.AuditEntry) bool { last = e; return true })
	if head() != seq+1 || last == nil || last.Event != kms.EventKeyRedelivered || last.SAE != "SAE-B1" || !slices.Equal(last.KeyIDs, ids) {
		t.Fatalf("replay audited as %+v, head %d -> %d", last, seq, head())
	}
}

// TestStorageFailure: a failing write is reported as ErrStorage and no key is returned.
func TestStorageFailure(t *testing.T) {
	for after := 1; after <= 4; after++ {
		l := newLink(t, kms.Limits{})
		l.ingest(256, true)
		l.a.tx.FailWritesAfter = l.a.tx.Writes() + after
		r := l.issue(l.a, "SAE-A1", []string{"SAE-B1"}, 2, 256)
		wantErr(t, r.Err, kms.ErrStorage)
		if len(r.Keys) != 0 {
			t.Fatalf("after %d writes: keys returned with a storage failure", after)
		}
	}
}

func errorsAs(err error, target **kms.Error) bool {
	for err != nil {
		if e, ok := err.(*kms.Error); ok {
			*target = e
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}
