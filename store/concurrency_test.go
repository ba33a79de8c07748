package store

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/qkms/qkms/kms"
)

// TestConcurrentUse runs readers, a writer and snapshot/restore at once (meaningful under -race):
// readers must see either a block's bytes or a clean error, never a panic or wrong bytes.
func TestConcurrentUse(t *testing.T) {
	db, _ := openTestDB(t)
	material := randomBytes(t, 64<<10)
	putSealed(t, db, 1, "b1", material, DefaultSegmentSize)
	var snap bytes.Buffer
	if _, err := db.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := 0; ; off = (off + 32) % len(material) {
				select {
				case <-stop:
					return
				default:
				}
				err := db.View(func(tx kms.Tx) error {
					got, err := tx.ReadMaterial(peerB, "b1", off, 32)
					if err == nil && !bytes.Equal(got, material[off:off+32]) {
						t.Errorf("wrong bytes at %d", off)
					}
					return err
				})
				if err != nil && !errors.Is(err, ErrErased) {
					t.Errorf("read at %d: %v", off, err)
					return
				}
			}
		}()
	}
	for i := 0; i < 3; i++ {
		for off := 0; off < 4096; off += 32 {
			if err := db.Update(0, func(tx kms.Tx) error { return tx.EraseMaterial(peerB, "b1", off, 32) }); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Restore(bytes.NewReader(snap.Bytes())); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}
