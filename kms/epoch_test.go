package kms_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pq"
)

// epochs runs one X-Wing exchange and records its epoch at both sites (the material is
// "sealed" as plaintext: kmstest's store keeps what it is given).
func (l *link) epochs() string {
	l.t.Helper()
	in, offer, err := pq.NewExchange(kmeA, kmeB)
	if err != nil {
		l.t.Fatal(err)
	}
	rs, reply, err := pq.Respond(kmeA, kmeB, offer)
	if err != nil {
		l.t.Fatal(err)
	}
	epA, conf, err := in.Finish(reply, l.now)
	if err != nil {
		l.t.Fatal(err)
	}
	epB, err := rs.Confirm(conf, l.now)
	if err != nil {
		l.t.Fatal(err)
	}
	for _, x := range []struct {
		s  *site
		ep *pq.Epoch
	}{{l.a, epA}, {l.b, epB}} {
		b := x.ep.Marshal()
		l.must(x.s, &kms.Command{Epoch: &kms.EpochCmd{Peer: x.s.peer(), ID: x.ep.ID, Created: l.now, Sealed: b, Size: len(b)}})
	}
	return epA.ID
}

func TestPostQuantumProvenance(t *testing.T) {
	for _, tc := range []struct {
		prov   kms.Provenance
		paused bool
		want   error // from Issue
	}{
		{kms.ProvenanceQKD, false, nil},
		{kms.ProvenanceHybrid, false, nil},
		{kms.ProvenancePQC, false, nil},
		{kms.ProvenancePQC, true, nil},
		{kms.ProvenanceQKD, true, kms.ErrNotEnoughKey},
		{kms.ProvenanceHybrid, true, kms.ErrNotEnoughKey},
	} {
		t.Run(string(tc.prov)+map[bool]string{true: "-paused"}[tc.paused], func(t *testing.T) {
			l := newLink(t, kms.Limits{})
			l.ingest(4096, true)
			epoch := l.epochs()
			if tc.paused {
				l.must(l.a, &kms.Command{Link: &kms.LinkCmd{Peer: kmeB, Paused: true, Actor: "op"}})
			}
			before := pool(t, l.a).Available
			c := l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1"}, 3, 256)
			c.Issue.Provenance = tc.prov
			res := l.apply(l.a, c)
			if tc.want != nil {
				wantErr(t, res.Err, tc.want)
				if got := pool(t, l.a).Available; got != before {
					t.Fatalf("refused issue consumed key: available %d -> %d", before, got)
				}
				return
			}
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: res.Reservations}})
			got := l.fetch(l.b, "SAE-A1", "SAE-B1", ids(res.Keys)...)
			if got.Err != nil {
				t.Fatal(got.Err)
			}
			for i, k := range res.Keys {
				r := res.Reservations[i]
				if r.Provenance != tc.prov || (tc.prov != kms.ProvenanceQKD) != (r.Epoch == epoch) {
					t.Fatalf("reservation provenance %q epoch %q", r.Provenance, r.Epoch)
				}
				if !bytes.Equal(k.Bytes, got.Keys[i].Bytes) || len(k.Bytes) != 32 {
					t.Fatalf("key %d differs between the sites", i)
				}
				qkd := l.expected(&r)
				if (tc.prov == kms.ProvenanceQKD) != bytes.Equal(k.Bytes, qkd) {
					t.Fatalf("key %d: %s key equal to its QKD bytes: %v", i, tc.prov, bytes.Equal(k.Bytes, qkd))
				}
				if got.Keys[i].Res.Provenance != tc.prov {
					t.Fatalf("fetched provenance %q", got.Keys[i].Res.Provenance)
				}
			}
			used := before - pool(t, l.a).Available
			if (tc.prov == kms.ProvenancePQC) != (used == 0) {
				t.Fatalf("%s issue used %d bytes of link key", tc.prov, used)
			}
			fallback := 0
			for _, e := range l.a.tx.AuditTrail() {
				if e.Event == kms.EventFallbackUsed {
					fallback += len(e.KeyIDs)
				}
			}
			if (tc.prov == kms.ProvenancePQC) != (fallback == 3) {
				t.Fatalf("%d fallback_used keys audited for %s", fallback, tc.prov)
			}
		})
	}
}

func TestEpochRequiredAndRetired(t *testing.T) {
	l := newLink(t, kms.Limits{})
	l.ingest(4096, true)
	c := l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1"}, 1, 256)
	c.Issue.Provenance = kms.ProvenanceHybrid
	wantErr(t, l.apply(l.a, c).Err, kms.ErrNotEnoughKey)

	first := l.epochs()
	c = l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1"}, 1, 256)
	c.Issue.Provenance = kms.ProvenancePQC
	res := l.must(l.a, c)
	l.must(l.b, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: kmeA, Reservations: res.Reservations}})
	second := l.epochs()
	if p := pool(t, l.b); first == second || p.CurrentEpoch().ID != second {
		t.Fatal("second epoch is not current")
	}
	// The first epoch stays while a key derived from it waits at B, even past the grace time.
	l.now = l.now.Add(30 * time.Second)
	l.must(l.b, &kms.Command{Expire: &kms.ExpireCmd{}})
	if len(pool(t, l.b).Epochs) != 2 {
		t.Fatal("epoch retired while a key still needs it")
	}
	got := l.fetch(l.b, "SAE-A1", "SAE-B1", res.Keys[0].ID)
	if got.Err != nil || !bytes.Equal(got.Keys[0].Bytes, res.Keys[0].Bytes) {
		t.Fatalf("fetch after a new epoch: %v", got.Err)
	}
	l.now = l.now.Add(2 * time.Minute)
	l.must(l.b, &kms.Command{Expire: &kms.ExpireCmd{}})
	if p := pool(t, l.b); len(p.Epochs) != 1 || p.Epochs[0].ID != second || l.b.tx.HasMaterial(kmeA, kms.EpochBlockID(first)) {
		t.Fatalf("old epoch not retired: %+v", p.Epochs)
	}
}

func TestPeerReserveEpochChecks(t *testing.T) {
	l := newLink(t, kms.Limits{})
	l.ingest(4096, true)
	l.epochs()
	c := l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1"}, 1, 256)
	c.Issue.Provenance = kms.ProvenancePQC
	res := l.must(l.a, c)
	for _, tc := range []struct {
		name string
		edit func(r *kms.Reservation)
		want error
	}{
		{"unknown epoch", func(r *kms.Reservation) { r.Epoch = "00ff" }, kms.ErrNotConfirmed},
		{"pqc without epoch", func(r *kms.Reservation) { r.Epoch = "" }, kms.ErrBadRequest},
		{"pqc with ranges", func(r *kms.Reservation) { r.Ranges = []kms.Range{{Block: "blk-0001", Len: 32}} }, kms.ErrBadRequest},
		{"qkd with epoch", func(r *kms.Reservation) { r.Provenance = kms.ProvenanceQKD }, kms.ErrBadRequest},
		{"unknown provenance", func(r *kms.Reservation) { r.Provenance = "magic" }, kms.ErrBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := res.Reservations[0]
			tc.edit(&r)
			wantErr(t, l.push(l.a, l.b, []kms.Reservation{r}).Err, tc.want)
		})
	}
}
