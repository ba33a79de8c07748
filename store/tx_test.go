package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/qkms/qkms/kms"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

func reservation(id string, expires time.Time, state kms.KeyState) *kms.Reservation {
	return &kms.Reservation{
		KeyID: id, Peer: "KME-B", Owner: "KME-A", Master: "SAE-A1", Slaves: []string{"SAE-B1"},
		Bits: 256, Ranges: []kms.Range{{Block: "b1", Off: 32, Len: 32}}, Provenance: kms.ProvenanceQKD,
		Issued: t0, Expires: expires, State: state,
	}
}

func TestRecordsRoundTrip(t *testing.T) {
	db, _ := openTestDB(t)
	pool := &kms.Pool{Peer: "KME-B", NextSeq: 7, Owned: []string{"b1", "b3"}, Available: 100, Pending: 5, Reserved: 64}
	block := &kms.Block{Peer: "KME-B", ID: "b1", Seq: 3, Bytes: 4096, Owner: "KME-A", State: kms.BlockVerified,
		Tag: []byte{1, 2, 3}, Next: 64, Released: 32, QBER: 0.021, Ingested: t0}
	resv := reservation("k1", t0.Add(time.Minute), kms.KeyIssued)
	resv.Provenance, resv.Epoch = kms.ProvenanceHybrid, "epoch-7" // the epoch must survive the codec
	mustUpdate(t, db, 1, func(tx kms.Tx) error {
		return errors.Join(tx.PutPool(pool), tx.PutBlock(block), tx.PutReservation(resv),
			tx.PutRequest("r1", &kms.RequestRecord{Kind: "issue", At: t0, Keys: []kms.RecordedKey{{ID: "k1", Bytes: []byte{9, 8, 7}, Provenance: kms.ProvenanceQKD}}}),
			tx.PutRequest("r-empty", &kms.RequestRecord{Kind: "verify", At: t0}))
	})
	mustView(t, db, func(tx kms.Tx) error {
		p, err := tx.Pool("KME-B")
		if err != nil || !reflect.DeepEqual(p, pool) {
			t.Errorf("pool = %+v, %v; want %+v", p, err, pool)
		}
		b, err := tx.Block("KME-B", "b1")
		if err != nil || !b.Ingested.Equal(block.Ingested) {
			t.Fatalf("block = %+v, %v", b, err)
		}
		b.Ingested = block.Ingested
		if !reflect.DeepEqual(b, block) {
			t.Errorf("block = %+v, want %+v", b, block)
		}
		r, err := tx.Reservation("k1")
		if err != nil || !r.Expires.Equal(resv.Expires) || !r.Issued.Equal(resv.Issued) {
			t.Fatalf("reservation = %+v, %v", r, err)
		}
		r.Expires, r.Issued = resv.Expires, resv.Issued
		if !reflect.DeepEqual(r, resv) {
			t.Errorf("reservation = %+v, want %+v", r, resv)
		}
		if got, err := tx.Request("r1"); err != nil || got.Kind != "issue" || !got.At.Equal(t0) || len(got.Keys) != 1 ||
			got.Keys[0].ID != "k1" || string(got.Keys[0].Bytes) != "\x09\x08\x07" {
			t.Errorf("request r1 = %+v, %v", got, err)
		}
		if got, err := tx.Request("r-empty"); err != nil || got == nil || got.Kind != "verify" || len(got.Keys) != 0 {
			t.Errorf("request without keys = %+v, %v", got, err)
		}
		// Absent records are (nil, nil).
		p, err = tx.Pool("nobody")
		if p != nil || err != nil {
			t.Errorf("absent pool = %v, %v", p, err)
		}
		b, err = tx.Block("KME-B", "nope")
		if b != nil || err != nil {
			t.Errorf("absent block = %v, %v", b, err)
		}
		r, err = tx.Reservation("nope")
		if r != nil || err != nil {
			t.Errorf("absent reservation = %v, %v", r, err)
		}
		res, err := tx.Request("nope")
		if res != nil || err != nil {
			t.Errorf("absent request = %v, %v", res, err)
		}
		return nil
	})
}

func TestViewIsReadOnly(t *testing.T) {
	db, _ := openTestDB(t)
	writes := map[string]func(kms.Tx) error{
		"PutPool":           func(tx kms.Tx) error { return tx.PutPool(&kms.Pool{Peer: "p"}) },
		"PutBlock":          func(tx kms.Tx) error { return tx.PutBlock(&kms.Block{Peer: "p", ID: "b"}) },
		"PutReservation":    func(tx kms.Tx) error { return tx.PutReservation(reservation("k", t0, kms.KeyIssued)) },
		"DeleteReservation": func(tx kms.Tx) error { return tx.DeleteReservation("k") },
		"PutRequest":        func(tx kms.Tx) error { return tx.PutRequest("r", &kms.RequestRecord{Kind: "issue"}) },
		"ExpireRequests":    func(tx kms.Tx) error { _, err := tx.ExpireRequests(t0, 1); return err },
		"PutMaterial":       func(tx kms.Tx) error { return tx.PutMaterial("p", "b", []byte{1}) },
		"EraseMaterial":     func(tx kms.Tx) error { return tx.EraseMaterial("p", "b", 0, 1) },
		"DropMaterial":      func(tx kms.Tx) error { return tx.DropMaterial("p", "b") },
	}
	for name, w := range writes {
		t.Run(name, func(t *testing.T) {
			if err := db.View(w); !errors.Is(err, ErrReadOnly) {
				t.Fatalf("err = %v, want ErrReadOnly", err)
			}
		})
	}
}

func TestUpdateRollbackAndIndex(t *testing.T) {
	db, _ := openTestDB(t)
	mustUpdate(t, db, 5, func(tx kms.Tx) error { return tx.PutPool(&kms.Pool{Peer: "p", NextSeq: 1}) })
	boom := errors.New("boom")
	err := db.Update(6, func(tx kms.Tx) error {
		if err := tx.PutPool(&kms.Pool{Peer: "p", NextSeq: 2}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if idx, _ := db.AppliedIndex(); idx != 5 {
		t.Fatalf("applied index after rollback = %d, want 5", idx)
	}
	mustView(t, db, func(tx kms.Tx) error {
		if p, _ := tx.Pool("p"); p.NextSeq != 1 {
			t.Errorf("rolled-back write visible: NextSeq %d", p.NextSeq)
		}
		return nil
	})
	for _, stale := range []uint64{5, 4} {
		if err := db.Update(stale, func(kms.Tx) error { return nil }); !errors.Is(err, ErrStaleIndex) {
			t.Errorf("Update(%d) err = %v, want ErrStaleIndex", stale, err)
		}
	}
	// Index 0 applies without touching the recorded index.
	mustUpdate(t, db, 0, func(tx kms.Tx) error { return tx.PutPool(&kms.Pool{Peer: "q"}) })
	if idx, _ := db.AppliedIndex(); idx != 5 {
		t.Fatalf("applied index = %d, want 5", idx)
	}
}

func TestExpiryIndex(t *testing.T) {
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	type step struct {
		put *kms.Reservation
		del string
	}
	tests := []struct {
		name  string
		steps []step
		query time.Time
		limit int
		want  []string
	}{
		{"issued due and not due", []step{{put: reservation("a", at(1), kms.KeyIssued)}, {put: reservation("b", at(3), kms.KeyIssued)}},
			at(2), 10, []string{"a"}},
		{"inclusive bound", []step{{put: reservation("a", at(2), kms.KeyIssued)}}, at(2), 10, []string{"a"}},
		{"expiry order", []step{{put: reservation("z", at(1), kms.KeyIssued)}, {put: reservation("a", at(2), kms.KeyIssued)}, {put: reservation("m", at(0), kms.KeyIssued)}},
			at(5), 10, []string{"m", "z", "a"}},
		{"limit", []step{{put: reservation("a", at(1), kms.KeyIssued)}, {put: reservation("b", at(2), kms.KeyIssued)}}, at(5), 1, []string{"a"}},
		{"zero limit", []step{{put: reservation("a", at(1), kms.KeyIssued)}}, at(5), 0, nil},
		{"expiry moved later", []step{{put: reservation("a", at(1), kms.KeyIssued)}, {put: reservation("a", at(9), kms.KeyIssued)}}, at(5), 10, nil},
		{"expiry moved earlier", []step{{put: reservation("a", at(9), kms.KeyIssued)}, {put: reservation("a", at(1), kms.KeyIssued)}}, at(5), 10, []string{"a"}},
		// Tombstones stay indexed: the core deletes them through ExpiredBefore.
		{"fetched tombstone stays indexed", []step{{put: reservation("a", at(1), kms.KeyIssued)}, {put: reservation("a", at(1), kms.KeyFetched)}}, at(5), 10, []string{"a"}},
		{"tombstone moved later", []step{{put: reservation("a", at(1), kms.KeyIssued)}, {put: reservation("a", at(7), kms.KeyExpired)}}, at(5), 10, nil},
		{"deleted leaves index", []step{{put: reservation("a", at(1), kms.KeyIssued)}, {del: "a"}}, at(5), 10, nil},
		{"zero expiry never due", []step{{put: reservation("a", time.Time{}, kms.KeyIssued)}}, at(5), 10, nil},
		{"before 1970", []step{{put: reservation("old", time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), kms.KeyIssued)}, {put: reservation("a", at(1), kms.KeyIssued)}},
			at(0), 10, []string{"old"}},
		{"far future", []step{{put: reservation("far", time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), kms.KeyIssued)}}, at(5), 10, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db, _ := openTestDB(t)
			for i, s := range tc.steps {
				mustUpdate(t, db, uint64(i+1), func(tx kms.Tx) error {
					if s.put != nil {
						return tx.PutReservation(s.put)
					}
					return tx.DeleteReservation(s.del)
				})
			}
			mustView(t, db, func(tx kms.Tx) error {
				got, err := tx.ExpiredBefore(tc.query, tc.limit)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("ExpiredBefore = %v, want %v", got, tc.want)
				}
				return nil
			})
		})
	}
}

func TestBlocksInSeqOrder(t *testing.T) {
	db, _ := openTestDB(t)
	seqs := map[string]uint64{"zz": 1, "aa": 3, "mm": 2, "q": 10}
	mustUpdate(t, db, 1, func(tx kms.Tx) error {
		for id, s := range seqs {
			if err := tx.PutBlock(&kms.Block{Peer: "KME-B", ID: id, Seq: s}); err != nil {
				return err
			}
		}
		// Another pool, and a peer whose name is a prefix of the first, must not leak in.
		return errors.Join(tx.PutBlock(&kms.Block{Peer: "KME-C", ID: "c1", Seq: 0}),
			tx.PutBlock(&kms.Block{Peer: "KME-", ID: "x", Seq: 0}))
	})
	// Re-putting a block with a new Seq moves it.
	mustUpdate(t, db, 2, func(tx kms.Tx) error { return tx.PutBlock(&kms.Block{Peer: "KME-B", ID: "q", Seq: 0}) })
	var got []string
	mustView(t, db, func(tx kms.Tx) error {
		return tx.Blocks("KME-B", func(b *kms.Block) bool { got = append(got, b.ID); return true })
	})
	if want := []string{"q", "zz", "mm", "aa"}; !slices.Equal(got, want) {
		t.Fatalf("Blocks = %v, want %v", got, want)
	}
	got = nil
	mustView(t, db, func(tx kms.Tx) error {
		return tx.Blocks("KME-B", func(b *kms.Block) bool { got = append(got, b.ID); return len(got) < 2 })
	})
	if len(got) != 2 {
		t.Fatalf("Blocks did not stop: %v", got)
	}
}

// BlocksNewestFirst walks a pool backwards across iteration chunks, without leaking into the
// pools whose keys sort right before or after it, and stops when told to.
func TestBlocksNewestFirst(t *testing.T) {
	db, _ := openTestDB(t)
	const n = 600 // more than two chunks of iterateDesc
	mustUpdate(t, db, 1, func(tx kms.Tx) error {
		for i := range n {
			if err := tx.PutBlock(&kms.Block{Peer: "KME-B", ID: fmt.Sprintf("b%d", i), Seq: uint64(i)}); err != nil {
				return err
			}
		}
		// Neighbours on both sides: "KME-" and "KME-C" (length-prefixed keys sort by length
		// first), and a peer whose prefix ends in 0xff bytes.
		return errors.Join(tx.PutBlock(&kms.Block{Peer: "KME-C", ID: "c1", Seq: 0}),
			tx.PutBlock(&kms.Block{Peer: "KME-", ID: "x", Seq: 1 << 62}),
			tx.PutBlock(&kms.Block{Peer: "KME-BB", ID: "y", Seq: 0}))
	})
	walk := func(peer string, stop int) (ids []string) {
		mustView(t, db, func(tx kms.Tx) error {
			return tx.BlocksNewestFirst(peer, func(b *kms.Block) bool { ids = append(ids, b.ID); return len(ids) != stop })
		})
		return ids
	}
	got := walk("KME-B", -1)
	if len(got) != n {
		t.Fatalf("%d blocks, want %d", len(got), n)
	}
	for i, id := range got {
		if want := fmt.Sprintf("b%d", n-1-i); id != want {
			t.Fatalf("block %d is %s, want %s", i, id, want)
		}
	}
	if got := walk("KME-B", 3); !slices.Equal(got, []string{"b599", "b598", "b597"}) {
		t.Fatalf("stopped walk: %v", got)
	}
	if got := walk("KME-C", -1); !slices.Equal(got, []string{"c1"}) {
		t.Fatalf("KME-C: %v", got)
	}
	if got := walk("KME-", -1); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("KME-: %v", got)
	}
	if got := walk("KME-BB", -1); !slices.Equal(got, []string{"y"}) { // the last keys of the bucket
		t.Fatalf("KME-BB: %v", got)
	}
	if got := walk("KME-D", -1); len(got) != 0 {
		t.Fatalf("KME-D: %v", got)
	}
	if got := prefixEnd([]byte{1, 0xff, 0xff}); !bytes.Equal(got, []byte{2}) {
		t.Fatalf("prefixEnd = %v", got)
	}
	if got := prefixEnd([]byte{0xff}); got != nil {
		t.Fatalf("prefixEnd of 0xff = %v", got)
	}
}

// TestIterationWhileWriting covers kms leader loops that update records as they walk them,
// across more records than one iteration chunk.
func TestIterationWhileWriting(t *testing.T) {
	db, _ := openTestDB(t)
	const n = 700
	mustUpdate(t, db, 1, func(tx kms.Tx) error {
		for i := range n {
			if err := tx.PutReservation(reservation(fmt.Sprintf("k%04d", i), t0, kms.KeyIssued)); err != nil {
				return err
			}
			if err := tx.PutPool(&kms.Pool{Peer: fmt.Sprintf("p%04d", i)}); err != nil {
				return err
			}
		}
		return nil
	})
	seen := 0
	mustUpdate(t, db, 2, func(tx kms.Tx) error {
		err := tx.Reservations(func(r *kms.Reservation) bool {
			seen++
			r.State = kms.KeyFetched
			if err := tx.PutReservation(r); err != nil {
				t.Error(err)
				return false
			}
			// Deleting a later record must make iteration skip it, not fail.
			var i int
			fmt.Sscanf(r.KeyID, "k%d", &i)
			if i%100 == 50 {
				if err := tx.DeleteReservation(fmt.Sprintf("k%04d", i+1)); err != nil {
					t.Error(err)
				}
			}
			return true
		})
		return err
	})
	if want := n - 7; seen != want { // k0051, k0151, ... k0651 were deleted ahead of the walk
		t.Fatalf("visited %d reservations, want %d", seen, want)
	}
	pools := 0
	mustView(t, db, func(tx kms.Tx) error {
		if ids, _ := tx.ExpiredBefore(t0.Add(time.Hour), n); len(ids) != seen {
			t.Errorf("expiry index lists %d reservations, want every one of the %d stored", len(ids), seen)
		}
		return tx.Pools(func(*kms.Pool) bool { pools++; return true })
	})
	if pools != n {
		t.Fatalf("Pools visited %d, want %d", pools, n)
	}
}

func FuzzDecodeReservation(f *testing.F) {
	var fixed [9]byte
	f.Add(encodeReservation(fixed[:], reservation("k", t0, kms.KeyIssued)))
	full := reservation("4c2b9a1e-5d3f-4e6a-9b7c-000000000001", t0.Add(time.Hour), kms.KeyFetched)
	full.Slaves = append(full.Slaves, "SAE-B2")
	full.Fetched, full.Pushed = []string{"SAE-B1"}, true
	f.Add(encodeReservation(fixed[:], full))
	f.Add(encodeReservation(fixed[:], reservation("z", time.Time{}, kms.KeyIssued)))
	json, _ := encodeRecord(fixed[:], full)
	f.Add(json)
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var r kms.Reservation
		if err := decodeReservationRecord(raw, &r); err != nil {
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("decode error not ErrTampered: %v", err)
			}
			return
		}
		if raw[0] != reservationVersion {
			return
		}
		// What decodes survives a re-encoding unchanged (varints may be overlong in raw, so
		// compare records, not bytes).
		var again kms.Reservation
		if err := decodeReservationRecord(encodeReservation(raw[1:10], &r), &again); err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !reflect.DeepEqual(&again, &r) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", &r, &again)
		}
	})
}

func TestReservationCodec(t *testing.T) {
	var fixed [9]byte
	full := reservation("4c2b9a1e", t0.Add(90*time.Second+7), kms.KeyFetched)
	full.Slaves = []string{"SAE-B1", "SAE-B2", ""}
	full.Fetched, full.Pushed = []string{"SAE-B1"}, true
	full.Ranges = append(full.Ranges, kms.Range{Block: "b2", Off: 0, Len: 1 << 40})
	full.Bits = -1
	zero := &kms.Reservation{}
	local := reservation("l", t0.In(time.FixedZone("X", 3600)), kms.KeyIssued)
	for name, r := range map[string]*kms.Reservation{"full": full, "zero": zero, "zone": local} {
		t.Run(name, func(t *testing.T) {
			var got kms.Reservation
			if err := decodeReservationRecord(encodeReservation(fixed[:], r), &got); err != nil {
				t.Fatal(err)
			}
			if !got.Issued.Equal(r.Issued) || !got.Expires.Equal(r.Expires) || got.Issued.IsZero() != r.Issued.IsZero() {
				t.Fatalf("times: got %v %v, want %v %v", got.Issued, got.Expires, r.Issued, r.Expires)
			}
			got.Issued, got.Expires = r.Issued, r.Expires
			if !reflect.DeepEqual(&got, r) {
				t.Fatalf("got %+v\nwant %+v", &got, r)
			}
		})
	}
}

// Pool serves Owned lists from a cache: what a caller does to the pool it got (callers
// replace Owned, never write its elements: kms.Pool) must not reach the next reader unless it
// is put, nor what it does to the pool it put.
func TestPoolReadsAreCopies(t *testing.T) {
	db, _ := openTestDB(t)
	// 17 blocks: a copy of the list has room to grow (Go rounds 17 strings up to 18).
	owned := make([]string, 17)
	for i := range owned {
		owned[i] = fmt.Sprintf("b%d", i+1)
	}
	want := &kms.Pool{Peer: "p", Owned: slices.Clone(owned), Available: 64,
		Epochs: []kms.EpochInfo{{ID: "e1", Size: 32, Live: 3}}}
	mustUpdate(t, db, 1, func(tx kms.Tx) error { return tx.PutPool(want) })
	want.Owned[0], want.Epochs[0].Live = "changed after put", 99
	for i := range 3 {
		mustUpdate(t, db, uint64(2+i), func(tx kms.Tx) error {
			p, err := tx.Pool("p")
			if err != nil {
				return err
			}
			if p.Owned[0] != "b1" || p.Epochs[0].Live != 3 || p.Available != 64 {
				t.Fatalf("read %d: %+v, want the pool as put", i, p)
			}
			// Two readers appending to the list they got must not write into one array.
			q, err := tx.Pool("p")
			if err != nil {
				return err
			}
			mine, theirs := append(p.Owned, "mine"), append(q.Owned, "theirs")
			if mine[len(mine)-1] != "mine" || theirs[len(theirs)-1] != "theirs" {
				t.Fatalf("read %d: appends of two readers share an array", i)
			}
			p.Owned, p.Epochs[0].Live, p.Available = mine[1:], 7, 0
			return nil
		})
	}
	// A put is seen by the next transaction, and a rolled-back put is not.
	mustUpdate(t, db, 10, func(tx kms.Tx) error {
		return tx.PutPool(&kms.Pool{Peer: "p", Owned: []string{"b2"}, Available: 32})
	})
	boom := errors.New("boom")
	if err := db.Update(11, func(tx kms.Tx) error {
		return errors.Join(tx.PutPool(&kms.Pool{Peer: "p", Available: 1}), boom)
	}); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	mustView(t, db, func(tx kms.Tx) error {
		p, err := tx.Pool("p")
		if err != nil || len(p.Owned) != 1 || p.Owned[0] != "b2" || p.Available != 32 {
			t.Errorf("after a committed and a rolled-back put: %+v, %v", p, err)
		}
		return nil
	})
}

// hasReservation agrees with Reservation: before a put, after it (tombstones too) and after a
// delete.
func TestHasReservation(t *testing.T) {
	db, _ := openTestDB(t)
	has := func(index uint64, id string) (bool, bool) {
		var ok, decoded bool
		mustUpdate(t, db, index, func(ktx kms.Tx) error {
			ok = ktx.(*tx).hasReservation(id)
			r, err := ktx.Reservation(id)
			decoded = r != nil
			return err
		})
		return ok, decoded
	}
	if ok, _ := has(1, "k1"); ok {
		t.Fatal("reservation reported before it was put")
	}
	mustUpdate(t, db, 2, func(tx kms.Tx) error {
		return tx.PutReservation(reservation("k1", t0.Add(time.Minute), kms.KeyFetched))
	})
	if ok, decoded := has(3, "k1"); !ok || !decoded {
		t.Fatalf("after put: has %v, read %v", ok, decoded)
	}
	mustUpdate(t, db, 4, func(tx kms.Tx) error { return tx.DeleteReservation("k1") })
	if ok, decoded := has(5, "k1"); ok || decoded {
		t.Fatalf("after delete: has %v, read %v", ok, decoded)
	}
}

// A block record written as JSON, before the binary body, still reads the same; putting the
// block again rewrites it in the current form and keeps its one place in the Seq index.
func TestBlockRecordVersions(t *testing.T) {
	db, _ := openTestDB(t)
	old := &kms.Block{Peer: "KME-B", ID: "b1", Seq: 5, Bytes: 4096, Owner: "KME-A", State: kms.BlockVerified,
		Tag: []byte{7, 7}, Next: 128, Released: 64, QBER: 0.031, Ingested: t0}
	mustUpdate(t, db, 1, func(ktx kms.Tx) error {
		st := ktx.(*tx)
		var seq [8]byte
		binary.BigEndian.PutUint64(seq[:], old.Seq)
		v, err := encodeRecord(seq[:], old)
		if err != nil {
			return err
		}
		return errors.Join(st.bucket(bucketBlocks).Put(blockKey(nil, old.Peer, old.ID), v),
			st.bucket(bucketBlockSeq).Put(blockSeqKey(nil, old.Peer, old.Seq, old.ID), []byte{}))
	})
	read := func() (blocks []*kms.Block) {
		mustView(t, db, func(tx kms.Tx) error {
			return tx.Blocks("KME-B", func(b *kms.Block) bool { blocks = append(blocks, b); return true })
		})
		return blocks
	}
	got := read()
	if len(got) != 1 || !got[0].Ingested.Equal(t0) {
		t.Fatalf("legacy record read as %+v", got)
	}
	got[0].Ingested = t0
	if !reflect.DeepEqual(got[0], old) {
		t.Fatalf("legacy record read as %+v, want %+v", got[0], old)
	}
	renewed := *old
	renewed.Next = 256
	mustUpdate(t, db, 2, func(tx kms.Tx) error { return tx.PutBlock(&renewed) })
	mustView(t, db, func(ktx kms.Tx) error {
		if raw := ktx.(*tx).get(bucketBlocks, blockKey(nil, "KME-B", "b1")); raw[0] != blockVersion {
			t.Errorf("block rewritten in version %d, want %d", raw[0], blockVersion)
		}
		return nil
	})
	if got = read(); len(got) != 1 || got[0].Next != 256 {
		t.Fatalf("after the rewrite Blocks lists %+v", got)
	}
}

// Pool records written as JSON (Owned inline) by an earlier version still read, and the next
// put writes the binary record and the Owned list apart.
func TestPoolRecordVersions(t *testing.T) {
	db, _ := openTestDB(t)
	old := &kms.Pool{Peer: "KME-B", NextSeq: 9, Owned: []string{"b1", "b4"}, Available: 4096, Pending: 512,
		Reserved: 64, Paused: true, Epochs: []kms.EpochInfo{{ID: "e1", Created: t0, Size: 32, Keys: 7, Live: 2,
			Superseded: t0.Add(time.Hour)}, {ID: "e2", Created: t0.Add(time.Hour), Size: 32}}}
	mustUpdate(t, db, 1, func(ktx kms.Tx) error {
		v, err := encodeRecord(nil, old)
		if err != nil {
			return err
		}
		return ktx.(*tx).bucket(bucketPools).Put([]byte(old.Peer), v)
	})
	read := func() (p *kms.Pool) {
		mustView(t, db, func(tx kms.Tx) (err error) { p, err = tx.Pool("KME-B"); return err })
		return p
	}
	same := func(got, want *kms.Pool) bool {
		g, w := *got, *want
		g.Epochs, w.Epochs = nil, nil
		if !reflect.DeepEqual(g, w) || len(got.Epochs) != len(want.Epochs) {
			return false
		}
		for i, e := range got.Epochs {
			we := want.Epochs[i]
			if !e.Created.Equal(we.Created) || !e.Superseded.Equal(we.Superseded) || e.Superseded.IsZero() != we.Superseded.IsZero() {
				return false
			}
			e.Created, e.Superseded = we.Created, we.Superseded
			if e != we {
				return false
			}
		}
		return true
	}
	if got := read(); !same(got, old) {
		t.Fatalf("legacy record read as %+v, want %+v", got, old)
	}
	renewed := *old
	renewed.Available, renewed.Owned = 2048, []string{"b4"}
	mustUpdate(t, db, 2, func(tx kms.Tx) error { return tx.PutPool(&renewed) })
	mustView(t, db, func(ktx kms.Tx) error {
		st := ktx.(*tx)
		if raw := st.get(bucketPools, []byte("KME-B")); raw[0] != poolVersion {
			t.Errorf("pool rewritten in version %d, want %d", raw[0], poolVersion)
		}
		if owned, err := kms.DecodeOwned(st.get(bucketOwned, []byte("KME-B"))); err != nil || !slices.Equal(owned, []string{"b4"}) {
			t.Errorf("owned record %q, %v", owned, err)
		}
		return nil
	})
	if got := read(); !same(got, &renewed) {
		t.Fatalf("after the rewrite: %+v, want %+v", got, &renewed)
	}
	// A put that leaves Owned as it was writes the counters only.
	renewed.Available = 1024
	mustUpdate(t, db, 3, func(ktx kms.Tx) error {
		p, err := ktx.Pool("KME-B")
		if err != nil {
			return err
		}
		p.Available = 1024
		before := ktx.(*tx).get(bucketOwned, []byte("KME-B"))
		if err := ktx.PutPool(p); err != nil {
			return err
		}
		if after := ktx.(*tx).get(bucketOwned, []byte("KME-B")); &after[0] != &before[0] {
			t.Error("an unchanged Owned list was written again")
		}
		return nil
	})
	if got := read(); !same(got, &renewed) {
		t.Fatalf("after a counters-only put: %+v, want %+v", got, &renewed)
	}
}

func FuzzDecodePool(f *testing.F) {
	full := &kms.Pool{Peer: "KME-B", NextSeq: 3, Available: 4096, Pending: -1, Reserved: 64, Paused: true,
		Epochs: []kms.EpochInfo{{ID: "e1", Created: t0, Size: 32, Keys: 9, Live: 1, Superseded: t0}}}
	f.Add(encodePool(full), kms.AppendOwned(nil, []string{"b1", "b2"}))
	f.Add(encodePool(&kms.Pool{}), kms.AppendOwned(nil, nil))
	json, _ := encodeRecord(nil, full)
	f.Add(json, []byte{})
	f.Add([]byte{poolVersion}, []byte{1})
	f.Fuzz(func(t *testing.T, raw, owned []byte) {
		var p kms.Pool
		if _, err := decodePoolRecord(raw, &p); err != nil {
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("decode error not ErrTampered: %v", err)
			}
		} else if raw[0] == poolVersion {
			var again kms.Pool
			if _, err := decodePoolRecord(encodePool(&p), &again); err != nil {
				t.Fatalf("re-encoded record does not decode: %v", err)
			}
			if !reflect.DeepEqual(&again, &p) {
				t.Fatalf("round trip changed the record:\n%+v\n%+v", &p, &again)
			}
		}
		ids, err := kms.DecodeOwned(owned)
		if err != nil {
			return
		}
		if again, err := kms.DecodeOwned(kms.AppendOwned(nil, ids)); err != nil || !slices.Equal(again, ids) {
			t.Fatalf("owned round trip: %q -> %q, %v", ids, again, err)
		}
	})
}

func FuzzDecodeBlock(f *testing.F) {
	var seq [8]byte
	f.Add(encodeBlock(seq[:], &kms.Block{Peer: "KME-B", ID: "b1", Seq: 3, Bytes: 4096, Owner: "KME-A",
		State: kms.BlockVerified, Tag: []byte{1, 2, 3}, Next: 64, Released: 32, QBER: 0.021, Ingested: t0}))
	f.Add(encodeBlock(seq[:], &kms.Block{}))
	json, _ := encodeRecord(seq[:], &kms.Block{Peer: "KME-B", ID: "b2", QBER: 0.5})
	f.Add(json)
	f.Add([]byte{blockVersion})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var b kms.Block
		if err := decodeBlockRecord(raw, &b); err != nil {
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("decode error not ErrTampered: %v", err)
			}
			return
		}
		if raw[0] != blockVersion {
			return
		}
		var again kms.Block
		if err := decodeBlockRecord(encodeBlock(raw[1:9], &b), &again); err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if math.IsNaN(b.QBER) && math.IsNaN(again.QBER) {
			b.QBER, again.QBER = 0, 0
		}
		if !reflect.DeepEqual(&again, &b) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", &b, &again)
		}
	})
}
