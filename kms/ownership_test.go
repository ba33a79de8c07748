package kms_test

import (
	"slices"
	"testing"

	"github.com/qkms/qkms/kms"
)

// TestDefaultOwner: both ends compute the same owner for a position, and positions alternate.
func TestDefaultOwner(t *testing.T) {
	for seq := range uint64(8) {
		a, b := kms.DefaultOwner(kmeA, kmeB, seq), kms.DefaultOwner(kmeB, kmeA, seq)
		if a != b {
			t.Fatalf("seq %d: %s at A, %s at B", seq, a, b)
		}
		if next := kms.DefaultOwner(kmeA, kmeB, seq+1); next == a {
			t.Fatalf("seq %d and %d both owned by %s", seq, seq+1, a)
		}
	}
}

// TestTransfer: untouched blocks change owner at the giver and then the receiver, the counters
// follow, used blocks cannot move, and a repeated transfer is a no-op.
func TestTransfer(t *testing.T) {
	l := newLink(t, kms.Limits{})
	var aOwned []string
	for range 6 {
		id := l.ingest(64, true)
		if b, _ := l.a.tx.Block(kmeB, id); b.Owner == kmeA {
			aOwned = append(aOwned, id)
		}
	}
	// A uses its first block.
	if r := l.issue(l.a, "SAE-A1", []string{"SAE-B1"}, 1, 256); r.Err != nil {
		t.Fatal(r.Err)
	}
	before := l.a.tx.Dump()
	wantErr(t, l.apply(l.a, &kms.Command{Transfer: &kms.TransferCmd{Peer: kmeB, BlockIDs: aOwned[:2], To: kmeB}}).Err, kms.ErrBadRequest)
	if l.a.tx.Dump() != before {
		t.Fatal("refused transfer changed the store")
	}
	give := aOwned[1:]
	r := l.must(l.a, &kms.Command{Transfer: &kms.TransferCmd{Peer: kmeB, BlockIDs: give, To: kmeB}})
	if !slices.Equal(r.Transferred, give) {
		t.Fatalf("transferred %v, want %v", r.Transferred, give)
	}
	if p := pool(t, l.a); p.Available != 32 || !slices.Equal(p.Owned, aOwned[:1]) {
		t.Fatalf("giver pool %+v", p)
	}
	bBefore := pool(t, l.b).Available
	l.must(l.b, &kms.Command{Transfer: &kms.TransferCmd{Peer: kmeA, BlockIDs: give, To: kmeB}})
	if p := pool(t, l.b); p.Available != bBefore+int64(64*len(give)) {
		t.Fatalf("receiver available %d, want %d", p.Available, bBefore+int64(64*len(give)))
	}
	// Repeats are no-ops at both ends.
	for _, s := range []*site{l.a, l.b} {
		before := s.tx.Dump()
		r := l.must(s, &kms.Command{Transfer: &kms.TransferCmd{Peer: s.peer(), BlockIDs: give, To: kmeB}})
		if len(r.Transferred) != 0 || s.tx.Dump() != before {
			t.Fatalf("%s: repeated transfer moved %v", s.id, r.Transferred)
		}
	}
	// B issues from all its blocks, in Seq order, transferred ones included; A cannot.
	r = l.issue(l.b, "SAE-B1", []string{"SAE-A1"}, 10, 256)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	wantErr(t, l.issue(l.a, "SAE-A1", []string{"SAE-B1"}, 2, 256).Err, kms.ErrNotEnoughKey)
	var order []string
	for _, rs := range r.Reservations {
		for _, rg := range rs.Ranges {
			if len(order) == 0 || order[len(order)-1] != rg.Block {
				order = append(order, rg.Block)
			}
		}
	}
	if !slices.IsSorted(order) || len(order) != 6-1 {
		t.Fatalf("B issued from blocks %v", order)
	}
	l.must(l.a, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeB, Reservations: r.Reservations}})
	// A block B reserved from cannot move back.
	wantErr(t, l.apply(l.a, &kms.Command{Transfer: &kms.TransferCmd{Peer: kmeB, BlockIDs: give[:1], To: kmeA}}).Err, kms.ErrBadRequest)
}
