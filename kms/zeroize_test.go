package kms_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/qkms/qkms/kms"
)

// TestZeroizeRejected: a refused zeroize writes nothing at all (no record, no audit entry)
// and leaves the pool able to deliver.
func TestZeroizeRejected(t *testing.T) {
	tests := []struct {
		name string
		cmd  kms.ZeroizeCmd
	}{
		{"empty peer", kms.ZeroizeCmd{Peer: ""}},
		{"own KME", kms.ZeroizeCmd{Peer: kmeA}},
		{"no pool", kms.ZeroizeCmd{Peer: kmeC}},
		{"reason too long", kms.ZeroizeCmd{Peer: kmeB, Reason: strings.Repeat("x", 5000)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLink(t, kms.Limits{})
			l.ingest(400, true)
			l.ingest(400, true)
			before := pool(t, l.a)
			writes, trail := l.a.tx.Writes(), len(l.a.tx.AuditTrail())
			cmd := tc.cmd
			r := l.apply(l.a, &kms.Command{Zeroize: &cmd})
			wantErr(t, r.Err, kms.ErrBadRequest)
			if got := l.a.tx.Writes(); got != writes {
				t.Fatalf("rejected zeroize made %d writes", got-writes)
			}
			if got := len(l.a.tx.AuditTrail()); got != trail {
				t.Fatalf("rejected zeroize appended %d audit entries", got-trail)
			}
			after := pool(t, l.a)
			if before.Available != after.Available || before.Pending != after.Pending || len(before.Owned) != len(after.Owned) {
				t.Fatalf("pool changed: %+v -> %+v", before, after)
			}
			// The pool still delivers.
			l.must(l.a, l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1"}, 1, 256))
		})
	}
}

// TestZeroize erases a pool at the slave's site with keys in every state: issued and pushed
// (not yet fetched), fetched, and blocks pending verification. Afterwards no material of the
// pool is left, the counters are zero, the pushed key cannot be fetched, and neither a late
// verification nor a late push can make an erased block usable again.
func TestZeroize(t *testing.T) {
	for _, site := range []string{kmeA, kmeB} {
		t.Run("at "+site, func(t *testing.T) {
			l := newLink(t, kms.Limits{})
			var blocks []string
			for range 4 {
				blocks = append(blocks, l.ingest(400, true))
			}
			pending := l.ingest(400, false)
			blocks = append(blocks, pending)

			issued := l.must(l.a, l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1"}, 2, 256))
			l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: issued.Reservations}})
			l.must(l.b, &kms.Command{Fetch: &kms.FetchCmd{Master: "SAE-A1", Caller: "SAE-B1", KeyIDs: []string{issued.Reservations[0].KeyID}}})
			open := issued.Reservations[1].KeyID

			s := l.a
			if site == kmeB {
				s = l.b
			}
			r := l.must(s, &kms.Command{Zeroize: &kms.ZeroizeCmd{Peer: s.peer(), Actor: "admin-" + site, Reason: "link compromised"}})
			// The issuing site does not learn of fetches, so both keys are live there.
			wantVoided := []string{open}
			if site == kmeA {
				wantVoided = []string{issued.Reservations[0].KeyID, open}
			}
			if !slices.Equal(r.Expired, wantVoided) {
				t.Fatalf("voided %v, want %v", r.Expired, wantVoided)
			}
			if len(r.Zeroized) == 0 {
				t.Fatal("no block reported erased")
			}
			for _, id := range blocks {
				if s.tx.HasMaterial(s.peer(), id) {
					t.Errorf("material of block %s survived", id)
				}
			}
			p := pool(t, s)
			if p.Available != 0 || p.Pending != 0 || p.Reserved != 0 || len(p.Owned) != 0 {
				t.Fatalf("pool after zeroize: %+v", p)
			}
			st, err := s.m.Status(s.tx, map[string]string{kmeA: "SAE-A1", kmeB: "SAE-B1"}[site], map[string]string{kmeA: "SAE-B1", kmeB: "SAE-A1"}[site])
			if err != nil || st.StoredKeyCount != 0 {
				t.Fatalf("status after zeroize: %+v, %v", st, err)
			}
			if rec, err := s.tx.Reservation(open); err != nil || rec == nil || rec.State != kms.KeyExpired {
				t.Fatalf("open key after zeroize: %+v, %v", rec, err)
			}

			if site == kmeB {
				wantErr(t, l.fetch(l.b, "SAE-A1", "SAE-B1", open).Err, kms.ErrKeyNotFound)
			} else {
				wantErr(t, l.issue(l.a, "SAE-A1", []string{"SAE-B1"}, 1, 256).Err, kms.ErrNotEnoughKey)
			}
			// A late tag comparison cannot revive the pending block.
			wantErr(t, l.apply(s, &kms.Command{Verify: &kms.VerifyCmd{Peer: s.peer(), BlockID: pending, Match: true}}).Err, kms.ErrBadRequest)

			// The trail records the action and never the bytes.
			trail := s.tx.AuditTrail()
			var admin bool
			for _, e := range trail {
				if e.Event == kms.EventAdmin && e.Actor == "admin-"+site && strings.Contains(e.Detail, "link compromised") {
					admin = true
				}
				js, _ := json.Marshal(e)
				for _, b := range l.blocks {
					if bytes.Contains(js, b[:16]) {
						t.Fatalf("audit entry %d holds key bytes", e.Seq)
					}
				}
			}
			if !admin {
				t.Fatal("no admin entry for the zeroize")
			}
			// Zeroizing again is harmless: nothing is left to erase.
			r = l.must(s, &kms.Command{Zeroize: &kms.ZeroizeCmd{Peer: s.peer()}})
			if len(r.Zeroized) != 0 || len(r.Expired) != 0 {
				t.Fatalf("second zeroize erased %v, voided %v", r.Zeroized, r.Expired)
			}
		})
	}
}

// TestZeroizeBlocksLatePush: after the slave's site zeroized, a reservation pushed late for an
// erased block is refused, so no key can name bytes that are gone.
func TestZeroizeBlocksLatePush(t *testing.T) {
	l := newLink(t, kms.Limits{})
	l.ingest(400, true)
	l.ingest(400, true)
	issued := l.must(l.a, l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1"}, 1, 256))
	l.must(l.b, &kms.Command{Zeroize: &kms.ZeroizeCmd{Peer: kmeA}})
	wantErr(t, l.push(l.a, l.b, issued.Reservations).Err, kms.ErrBadRequest)
}
