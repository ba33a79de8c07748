package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/qkms/qkms/kms"
)

// Request records expire in time order, and the key bytes they hold are sealed on disk.
func TestRequestRecords(t *testing.T) {
	db, _ := openTestDB(t)
	secret := bytes.Repeat([]byte("K3y!"), 8)
	mustUpdate(t, db, 1, func(tx kms.Tx) error {
		for i := 0; i < 5; i++ {
			rec := &kms.RequestRecord{Kind: "fetch", At: t0.Add(time.Duration(i) * time.Second),
				Keys: []kms.RecordedKey{{ID: fmt.Sprint("k", i), Bytes: secret}}}
			if err := tx.PutRequest(fmt.Sprint("r", i), rec); err != nil {
				return err
			}
		}
		return nil
	})
	var n int
	mustUpdate(t, db, 2, func(tx kms.Tx) error {
		var err error
		n, err = tx.ExpireRequests(t0.Add(2500*time.Millisecond), 10) // r0, r1, r2
		return err
	})
	if n != 3 {
		t.Fatalf("expired %d records, want 3", n)
	}
	mustView(t, db, func(tx kms.Tx) error {
		for i := 0; i < 5; i++ {
			rec, err := tx.Request(fmt.Sprint("r", i))
			if err != nil {
				t.Fatal(err)
			}
			if (rec == nil) != (i < 3) {
				t.Errorf("r%d present = %v after expiry", i, rec != nil)
			}
			if rec != nil && !bytes.Equal(rec.Keys[0].Bytes, secret) {
				t.Errorf("r%d key bytes changed", i)
			}
		}
		return nil
	})
	path := db.Path()
	db.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, secret[:16]) {
		t.Fatal("a request record's key bytes are in the file in the clear")
	}
}

// Records sealed as JSON (version 2, before the binary body) are still read; the binary ones
// hold the same record.
func TestRequestRecordVersions(t *testing.T) {
	db, _ := openTestDB(t)
	want := &kms.RequestRecord{Kind: "issue", At: t0, Keys: []kms.RecordedKey{
		{ID: "k1", Bytes: bytes.Repeat([]byte{1}, 32), Provenance: kms.ProvenanceQKD},
		{ID: "k2", Bytes: bytes.Repeat([]byte{2}, 64), Provenance: kms.ProvenanceHybrid}}}
	mustUpdate(t, db, 1, func(ktx kms.Tx) error {
		if err := ktx.PutRequest("binary", want); err != nil {
			return err
		}
		// "json" as the store wrote it before.
		st := ktx.(*tx)
		plain, err := json.Marshal(want)
		if err != nil {
			return err
		}
		ns := db.master.NonceSize()
		v := make([]byte, 9+ns, 9+ns+len(plain)+db.master.Overhead())
		v[0] = requestVersionJSON
		binary.BigEndian.PutUint64(v[1:9], expiryNanos(want.At))
		v = db.master.Seal(v, v[9:9+ns], plain, append(append([]byte(nil), requestAADJSON...), "json"...))
		return st.bucket(bucketRequests).Put([]byte("json"), v)
	})
	mustView(t, db, func(tx kms.Tx) error {
		for _, id := range []string{"binary", "json"} {
			got, err := tx.Request(id)
			if err != nil || got == nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: %+v, %v; want %+v", id, got, err, want)
			}
		}
		return nil
	})
}
