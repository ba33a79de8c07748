package store

import (
	"bytes"
	"fmt"
	"os"
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
