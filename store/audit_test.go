package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/qkms/qkms/kms"
)

// TestAuditTrail runs the core on the store: every applied command's entries are stored in
// order, chained, survive a reopen and a failed transaction adds none.
func TestAuditTrail(t *testing.T) {
	db, key := openTestDB(t)
	reg, _ := kms.NewRegistry(map[string]string{"SAE-A1": "KME-A", "SAE-B1": "KME-B"})
	m := kms.NewMachine(kms.Config{Self: "KME-A", Registry: reg})
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	sealed, err := db.Seal("KME-B", "b0", randomBytes(t, 64))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []*kms.Command{
		{Ingest: &kms.IngestCmd{Peer: "KME-B", BlockID: "b0", Bytes: 64, Tag: []byte("t"), Sealed: sealed}},
		{Verify: &kms.VerifyCmd{Peer: "KME-B", BlockID: "b0", Match: true}},
		{Admin: &kms.AdminCmd{Action: "zeroize", Actor: "admin-KME-A"}},
	} {
		c.Time = now
		mustUpdate(t, db, uint64(i+1), func(tx kms.Tx) error { return m.Apply(tx, c).Err })
	}
	errBoom := errors.New("boom")
	err = db.Update(10, func(tx kms.Tx) error {
		m.Apply(tx, &kms.Command{Time: now, Admin: &kms.AdminCmd{Action: "x", Actor: "y"}})
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatal(err)
	}
	db.Close()
	db, err = Open(db.Path(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got []*kms.AuditEntry
	mustView(t, db, func(tx kms.Tx) error {
		return tx.Audit(0, func(e *kms.AuditEntry) bool { got = append(got, e); return true })
	})
	want := []kms.AuditEvent{kms.EventBlockIngested, kms.EventBlockVerified, kms.EventAdmin}
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	prev := make([]byte, kms.AuditHashSize)
	for i, e := range got {
		if e.Event != want[i] || e.Seq != uint64(i+1) || !bytes.Equal(e.Prev, prev) || !bytes.Equal(e.Hash, kms.HashAuditEntry(e, nil)) {
			t.Fatalf("entry %d: %+v", i+1, e)
		}
		prev = e.Hash
	}
	mustView(t, db, func(tx kms.Tx) error {
		al := kms.AuditTx(tx)
		seq, head, err := al.AuditHead()
		if err != nil || seq != 3 || !bytes.Equal(head, prev) {
			t.Fatalf("head %d %x %v", seq, head, err)
		}
		var from []uint64
		al.Audit(2, func(e *kms.AuditEntry) bool { from = append(from, e.Seq); return true })
		if len(from) != 2 || from[0] != 2 {
			t.Fatalf("Audit(2) visited %v", from)
		}
		if err := al.AppendAudit(got[0]); !errors.Is(err, ErrReadOnly) {
			t.Fatalf("append in a read-only tx: %v", err)
		}
		return nil
	})
	// Appending out of order is refused.
	err = db.Update(0, func(tx kms.Tx) error { return tx.AppendAudit(got[1]) })
	if err == nil {
		t.Fatal("entry 2 appended after entry 3")
	}
	// So it is within one transaction, which follows the end of the trail instead of reading it.
	err = db.Update(0, func(tx kms.Tx) error {
		next := *got[2]
		next.Seq = 4
		if err := tx.AppendAudit(&next); err != nil {
			return err
		}
		return tx.AppendAudit(&next)
	})
	if err == nil || !strings.Contains(err.Error(), "append audit entry 4 after entry 4") {
		t.Fatalf("entry 4 appended twice in one transaction: %v", err)
	}
}

func TestAuditEmpty(t *testing.T) {
	db, _ := openTestDB(t)
	mustView(t, db, func(tx kms.Tx) error {
		seq, head, err := tx.AuditHead()
		if seq != 0 || head != nil || err != nil {
			t.Fatalf("empty head: %d %x %v", seq, head, err)
		}
		return tx.Audit(1, func(*kms.AuditEntry) bool { t.Fatal("visited"); return false })
	})
}

// The first appends to a new store create the trail's bucket in the transaction that looked
// for it and found none; the head must then be the entry just appended.
func TestAuditHeadAfterCreate(t *testing.T) {
	db, _ := openTestDB(t)
	mustUpdate(t, db, 1, func(tx kms.Tx) error {
		al := kms.AuditTx(tx)
		prev := make([]byte, kms.AuditHashSize)
		for seq := uint64(1); seq <= 3; seq++ {
			head, _, err := al.AuditHead()
			if err != nil || head != seq-1 {
				t.Fatalf("before entry %d: head %d, %v", seq, head, err)
			}
			e := &kms.AuditEntry{Seq: seq, Hash: prev}
			if err := al.AppendAudit(e); err != nil {
				t.Fatalf("append %d: %v", seq, err)
			}
		}
		return nil
	})
}

// Entries written as JSON (record version 1, before the canonical encoding) are read as
// before, after and between new ones.
func TestAuditReadsJSONRecords(t *testing.T) {
	db, _ := openTestDB(t)
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	prev := make([]byte, kms.AuditHashSize)
	var want []*kms.AuditEntry
	for seq := uint64(1); seq <= 3; seq++ {
		e := &kms.AuditEntry{Seq: seq, Time: at, Event: kms.EventKeyFetched, KeyIDs: []string{"k1"}, SAE: "SAE-B1",
			Fingerprints: [][]byte{bytes.Repeat([]byte{byte(seq)}, kms.FingerprintSize)}, Prev: prev}
		e.Hash = kms.HashAuditEntry(e, nil)
		prev = e.Hash
		want = append(want, e)
	}
	mustUpdate(t, db, 1, func(ktx kms.Tx) error {
		st := ktx.(*tx)
		if err := st.AppendAudit(want[0]); err != nil {
			return err
		}
		// Entry 2 as the store wrote it before: JSON.
		body, err := json.Marshal(want[1])
		if err != nil {
			return err
		}
		var key [8]byte
		binary.BigEndian.PutUint64(key[:], 2)
		if err := st.bucket(bucketAudit).Put(key[:], append(append([]byte{recordVersion}, want[1].Hash...), body...)); err != nil {
			return err
		}
		return st.AppendAudit(want[2])
	})
	mustView(t, db, func(tx kms.Tx) error {
		var got []*kms.AuditEntry
		if err := tx.Audit(1, func(e *kms.AuditEntry) bool { got = append(got, e); return true }); err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 {
			t.Fatalf("read %d entries, want 3", len(got))
		}
		for i := range want {
			if !bytes.Equal(kms.HashAuditEntry(got[i], nil), want[i].Hash) || !bytes.Equal(got[i].Hash, want[i].Hash) || got[i].SAE != "SAE-B1" {
				t.Fatalf("entry %d read back as %+v", i+1, got[i])
			}
		}
		return nil
	})
}
