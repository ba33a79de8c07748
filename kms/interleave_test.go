package kms_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/qkms/qkms/kms"
)

// byteAt names one byte of one block.
type byteAt struct {
	block string
	off   int
}

// model is what the test knows independently of the machines: who was handed which bytes.
type model struct {
	t       *testing.T
	l       *link
	issuer  map[byteAt]string            // byte -> site that issued it (cross-site overlap check)
	handed  map[string]map[byteAt]string // site -> byte -> key ID handed out there
	issued  map[string][]byte            // key ID -> bytes given to the master
	res     map[string]kms.Reservation   // key ID -> reservation as issued
	fetched map[string][]string          // key ID -> slaves that got it
	outbox  map[string][]kms.Reservation
	pendVer map[string][]string // site -> blocks it has yet to verify
	xfers   map[string][]*kms.TransferCmd
}

func (md *model) hand(s *site, id string, r *kms.Reservation) {
	md.t.Helper()
	for _, rg := range r.Ranges {
		for o := rg.Off; o < rg.Off+rg.Len; o++ {
			b := byteAt{rg.Block, o}
			if prev, ok := md.handed[s.id][b]; ok && prev != id {
				md.t.Fatalf("%s handed byte %v to key %s and to key %s", s.id, b, prev, id)
			}
			md.handed[s.id][b] = id
		}
	}
}

func (md *model) other(s *site) *site {
	if s == md.l.a {
		return md.l.b
	}
	return md.l.a
}

// TestInterleavings drives both sites through random interleavings of ingest, late
// verification, concurrent issuing, delayed and repeated pushes, fetches, expiry and ownership
// transfers, and checks after every step that no byte is handed out twice on a side, that the
// two sites never issue the same byte, and that every slave gets exactly the master's bytes.
func TestInterleavings(t *testing.T) {
	seeds, steps := 40, 400
	if testing.Short() {
		seeds, steps = 8, 200
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			l := newLink(t, kms.Limits{MaxSAEIDCount: 2, KeySize: 256, MinKeySize: 8})
			l.rng = rand.New(rand.NewPCG(uint64(seed), 7))
			md := &model{t: t, l: l, issuer: map[byteAt]string{},
				handed: map[string]map[byteAt]string{kmeA: {}, kmeB: {}}, issued: map[string][]byte{},
				res: map[string]kms.Reservation{}, fetched: map[string][]string{},
				outbox: map[string][]kms.Reservation{}, pendVer: map[string][]string{}, xfers: map[string][]*kms.TransferCmd{}}
			for range 4 {
				md.ingest()
			}
			for range steps {
				md.step()
				md.checkCounters(l.a)
				md.checkCounters(l.b)
			}
			md.drain()
			md.checkCounters(l.a)
			md.checkCounters(l.b)
		})
	}
}

func (md *model) ingest() {
	l := md.l
	id := l.ingest(8+l.rng.IntN(120), false)
	for _, s := range []*site{l.a, l.b} {
		md.pendVer[s.id] = append(md.pendVer[s.id], id)
	}
}

func (md *model) sites() (*site, *site) {
	if md.l.rng.IntN(2) == 0 {
		return md.l.a, md.l.b
	}
	return md.l.b, md.l.a
}

func (md *model) step() {
	l, rng := md.l, md.l.rng
	s, o := md.sites()
	switch op := rng.IntN(10); op {
	case 0:
		md.ingest()
	case 1: // verify the oldest pending block at s
		if p := md.pendVer[s.id]; len(p) > 0 {
			l.must(s, &kms.Command{Verify: &kms.VerifyCmd{Peer: s.peer(), BlockID: p[0], Match: true}})
			md.pendVer[s.id] = p[1:]
		}
	case 2, 3: // issue at s
		slaves := map[string][]string{kmeA: {"SAE-A1", "SAE-A2"}, kmeB: {"SAE-B1", "SAE-B2", "SAE-B3"}}[o.id]
		rng.Shuffle(len(slaves), func(i, j int) { slaves[i], slaves[j] = slaves[j], slaves[i] })
		master := map[string]string{kmeA: "SAE-A1", kmeB: "SAE-B1"}[s.id]
		bits := 8 * (1 + rng.IntN(48))
		r := l.issue(s, master, slaves[:1+rng.IntN(len(slaves))], 1+rng.IntN(3), bits)
		if r.Err != nil {
			if !errors.Is(r.Err, kms.ErrNotEnoughKey) {
				md.t.Fatal(r.Err)
			}
			return
		}
		for i, k := range r.Keys {
			rs := r.Reservations[i]
			if !bytes.Equal(k.Bytes, l.expected(&rs)) {
				md.t.Fatalf("issued key %s is not the link's bytes", k.ID)
			}
			for _, rg := range rs.Ranges {
				for off := rg.Off; off < rg.Off+rg.Len; off++ {
					b := byteAt{rg.Block, off}
					if who, ok := md.issuer[b]; ok {
						md.t.Fatalf("byte %v issued by %s and again by %s", b, who, s.id)
					}
					md.issuer[b] = s.id
				}
			}
			md.hand(s, k.ID, &rs)
			md.issued[k.ID] = k.Bytes
			md.res[k.ID] = rs
		}
		md.outbox[o.id] = append(md.outbox[o.id], r.Reservations...)
	case 4, 5: // deliver (part of) the pushes to s, sometimes twice
		box := md.outbox[s.id]
		if len(box) == 0 {
			return
		}
		n := 1 + rng.IntN(len(box))
		r := l.push(o, s, box[:n])
		switch {
		case r.Err == nil:
			if rng.IntN(3) > 0 {
				md.outbox[s.id] = box[n:]
			}
		case errors.Is(r.Err, kms.ErrNotConfirmed):
		default:
			md.t.Fatal(r.Err)
		}
	case 6, 7: // a slave at s fetches a key issued at o
		var cands []string
		for id, rs := range md.res {
			if rs.Owner == o.id {
				cands = append(cands, id)
			}
		}
		if len(cands) == 0 {
			return
		}
		slices.Sort(cands)
		id := cands[rng.IntN(len(cands))]
		rs := md.res[id]
		caller := rs.Slaves[rng.IntN(len(rs.Slaves))]
		r := l.fetch(s, rs.Master, caller, id)
		if r.Err != nil {
			if !errors.Is(r.Err, kms.ErrKeyNotFound) {
				md.t.Fatal(r.Err)
			}
			return // fetched before, expired, or the push has not arrived yet
		}
		if slices.Contains(md.fetched[id], caller) {
			md.t.Fatalf("%s fetched key %s twice", caller, id)
		}
		if !rs.Expires.After(l.now) {
			md.t.Fatalf("key %s fetched after expiry", id)
		}
		if !bytes.Equal(r.Keys[0].Bytes, md.issued[id]) {
			md.t.Fatalf("slave %s got other bytes than the master for %s", caller, id)
		}
		md.hand(s, id, &rs)
		md.fetched[id] = append(md.fetched[id], caller)
	case 8: // time passes; expire
		l.now = l.now.Add(time.Duration(rng.IntN(20)) * time.Second)
		l.must(s, &kms.Command{Expire: &kms.ExpireCmd{Limit: 1 + rng.IntN(5)}})
	case 9: // s gives o some untouched blocks; o applies it later
		if x := md.xfers[o.id]; len(x) > 0 {
			l.must(o, &kms.Command{Transfer: x[0]})
			md.xfers[o.id] = x[1:]
			return
		}
		var give []string
		_ = s.tx.Blocks(s.peer(), func(b *kms.Block) bool {
			if b.Owner == s.id && b.Next == 0 && b.State == kms.BlockVerified && rng.IntN(2) == 0 {
				give = append(give, b.ID)
			}
			return true
		})
		if len(give) == 0 {
			return
		}
		r := l.must(s, &kms.Command{Transfer: &kms.TransferCmd{Peer: s.peer(), BlockIDs: give, To: o.id}})
		if len(r.Transferred) > 0 {
			md.xfers[o.id] = append(md.xfers[o.id], &kms.TransferCmd{Peer: o.peer(), BlockIDs: r.Transferred, To: o.id})
		}
	}
}

// drain delivers everything outstanding and checks every live key can be fetched by every
// slave that has not fetched it.
func (md *model) drain() {
	l := md.l
	for _, s := range []*site{l.a, l.b} {
		for _, id := range md.pendVer[s.id] {
			l.must(s, &kms.Command{Verify: &kms.VerifyCmd{Peer: s.peer(), BlockID: id, Match: true}})
		}
		for _, x := range md.xfers[s.id] {
			l.must(s, &kms.Command{Transfer: x})
		}
	}
	for _, s := range []*site{l.a, l.b} {
		if box := md.outbox[s.id]; len(box) > 0 {
			l.must(s, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: md.other(s).id, Reservations: box}})
		}
	}
	ids := make([]string, 0, len(md.res))
	for id := range md.res {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		rs := md.res[id]
		if !rs.Expires.After(l.now) {
			continue
		}
		s := l.a
		if rs.Owner == kmeA {
			s = l.b
		}
		for _, slave := range rs.Slaves {
			if slices.Contains(md.fetched[id], slave) {
				continue
			}
			r := l.fetch(s, rs.Master, slave, id)
			if r.Err != nil {
				md.t.Fatalf("final fetch of %s by %s: %v", id, slave, r.Err)
			}
			if !bytes.Equal(r.Keys[0].Bytes, md.issued[id]) {
				md.t.Fatalf("final fetch of %s: other bytes", id)
			}
			md.hand(s, id, &rs)
		}
	}
}

// checkCounters recomputes a site's pool counters from its blocks and reservations.
func (md *model) checkCounters(s *site) {
	var avail, pending int64
	var owned []string
	_ = s.tx.Blocks(s.peer(), func(b *kms.Block) bool {
		switch {
		case b.State == kms.BlockPending:
			pending += int64(b.Bytes)
		case b.State == kms.BlockVerified && b.Owner == s.id && b.Next < b.Bytes:
			avail += int64(b.Bytes - b.Next)
			owned = append(owned, b.ID)
		}
		return true
	})
	var reserved int64
	_ = s.tx.Reservations(func(r *kms.Reservation) bool {
		if r.Owner != s.id && r.State == kms.KeyIssued {
			reserved += int64(r.Bits / 8)
		}
		return true
	})
	p := pool(md.t, s)
	if p.Available != avail || p.Pending != pending || p.Reserved != reserved || !slices.Equal(p.Owned, owned) {
		md.t.Fatalf("%s pool %+v, recomputed available %d pending %d reserved %d owned %v",
			s.id, p, avail, pending, reserved, owned)
	}
}
