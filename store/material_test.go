package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/qkms/qkms/kms"
	bolt "go.etcd.io/bbolt"
)

const peerB = "KME-B"

func putSealed(t testing.TB, db *DB, index uint64, blockID string, material []byte, segSize int) {
	t.Helper()
	blob, err := db.sealSegments(peerB, blockID, material, segSize)
	if err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, db, index, func(tx kms.Tx) error { return tx.PutMaterial(peerB, blockID, blob) })
}

func TestMaterialRoundTrip(t *testing.T) {
	for _, segSize := range []int{16, 100, DefaultSegmentSize} {
		for _, size := range []int{1, 15, 16, 17, 511, 512, 513, 3000} {
			t.Run(fmt.Sprintf("seg%d/size%d", segSize, size), func(t *testing.T) {
				db, _ := openTestDB(t)
				material := randomBytes(t, size)
				putSealed(t, db, 1, "b1", material, segSize)
				ranges := [][2]int{{0, size}, {0, 0}, {size, 0}, {0, 1}, {size - 1, 1}}
				for _, p := range []int{segSize - 1, segSize, segSize + 1, 2*segSize - 3} {
					if p < size {
						ranges = append(ranges, [2]int{p, min(7, size-p)}, [2]int{p, size - p})
					}
				}
				mustView(t, db, func(tx kms.Tx) error {
					for _, r := range ranges {
						got, err := tx.ReadMaterial(peerB, "b1", r[0], r[1])
						if err != nil {
							t.Fatalf("read [%d,+%d): %v", r[0], r[1], err)
						}
						if !bytes.Equal(got, material[r[0]:r[0]+r[1]]) {
							t.Fatalf("read [%d,+%d) returned different bytes", r[0], r[1])
						}
					}
					for _, r := range [][2]int{{-1, 1}, {0, size + 1}, {size, 1}, {1, -1}} {
						if _, err := tx.ReadMaterial(peerB, "b1", r[0], r[1]); !errors.Is(err, ErrOutOfRange) {
							t.Errorf("read [%d,+%d) err = %v, want ErrOutOfRange", r[0], r[1], err)
						}
					}
					if _, err := tx.ReadMaterial(peerB, "other", 0, 1); !errors.Is(err, ErrNoMaterial) {
						t.Errorf("read of absent block err = %v, want ErrNoMaterial", err)
					}
					return nil
				})
			})
		}
	}
}

// rawSegment returns the stored value of segment i of a block (nil if absent).
func rawSegment(t testing.TB, db *DB, blockID string, i int) []byte {
	t.Helper()
	var v []byte
	err := db.bolt.View(func(btx *bolt.Tx) error {
		mb := btx.Bucket(bucketMaterial).Bucket(blockKey(nil, peerB, blockID))
		if mb == nil {
			return nil
		}
		v = bytes.Clone(mb.Get(segKey(nil, i)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestEraseMaterial erases random ranges and checks every byte against a model: erased bytes
// fail with ErrErased, others read back; wholly erased segments are deleted; rewritten segments
// carry fresh nonces and zeros in place of erased bytes.
func TestEraseMaterial(t *testing.T) {
	const size, segSize = 1000, 64
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0))
			db, _ := openTestDB(t)
			material := randomBytes(t, size)
			putSealed(t, db, 1, "b1", material, segSize)
			erased := make([]bool, size)
			for step := 0; step < 40; step++ {
				off := rng.IntN(size)
				n := rng.IntN(min(size-off, 3*segSize) + 1)
				before := make(map[int][]byte)
				for i := off / segSize; i <= (off+n)/segSize && i*segSize < size; i++ {
					if v := rawSegment(t, db, "b1", i); v != nil {
						before[i] = v
					}
				}
				mustUpdate(t, db, uint64(step+2), func(tx kms.Tx) error { return tx.EraseMaterial(peerB, "b1", off, n) })
				for i := off; i < off+n; i++ {
					erased[i] = true
				}
				// Segments touched: deleted if wholly erased, else re-nonced when it changed.
				for i, old := range before {
					v := rawSegment(t, db, "b1", i)
					whole := true
					for j := i * segSize; j < min((i+1)*segSize, size); j++ {
						whole = whole && erased[j]
					}
					if whole != (v == nil) {
						t.Fatalf("step %d: segment %d wholly erased=%v but stored=%v", step, i, whole, v != nil)
					}
					if v != nil && !bytes.Equal(v, old) {
						sNew, _ := parseSegment(v, min(segSize, size-i*segSize))
						sOld, _ := parseSegment(old, min(segSize, size-i*segSize))
						if bytes.Equal(sNew.nonce, sOld.nonce) {
							t.Fatalf("step %d: segment %d rewritten under the same nonce", step, i)
						}
					}
				}
				mustView(t, db, func(tx kms.Tx) error {
					for i := 0; i < size; i++ {
						got, err := tx.ReadMaterial(peerB, "b1", i, 1)
						if erased[i] {
							if !errors.Is(err, ErrErased) {
								t.Fatalf("step %d: byte %d erased but read gives %v", step, i, err)
							}
						} else if err != nil || got[0] != material[i] {
							t.Fatalf("step %d: byte %d: got %v, %v", step, i, got, err)
						}
					}
					return nil
				})
			}
			checkErasedBytesZero(t, db, "b1", size, segSize, erased)
			// Erasing twice is a no-op; erasing out of range is refused.
			mustUpdate(t, db, 100, func(tx kms.Tx) error { return tx.EraseMaterial(peerB, "b1", 0, size) })
			if err := db.Update(101, func(tx kms.Tx) error { return tx.EraseMaterial(peerB, "b1", 1, size) }); !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("erase out of range err = %v", err)
			}
		})
	}
}

// checkErasedBytesZero decrypts every stored segment with the block's data key (as an
// attacker holding the master key could) and checks erased bytes are zero.
func checkErasedBytesZero(t *testing.T, db *DB, blockID string, size, segSize int, erased []bool) {
	t.Helper()
	mustView(t, db, func(ktx kms.Tx) error {
		tx := ktx.(*tx)
		mb, h, err := tx.material(peerB, blockID)
		if err != nil {
			t.Fatal(err)
		}
		aead, err := db.dataKey(h, peerB, blockID)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < h.segments(); i++ {
			plain, _, err := tx.openSegment(mb, aead, h, peerB, blockID, i)
			if err != nil {
				t.Fatal(err)
			}
			for j, b := range plain {
				if erased[i*segSize+j] && b != 0 {
					t.Fatalf("erased byte %d still holds data under the data key", i*segSize+j)
				}
			}
		}
		return nil
	})
}

func TestDropMaterial(t *testing.T) {
	db, _ := openTestDB(t)
	putSealed(t, db, 1, "b1", randomBytes(t, 3000), DefaultSegmentSize)
	putSealed(t, db, 2, "b2", randomBytes(t, 100), DefaultSegmentSize)
	mustView(t, db, func(tx kms.Tx) error { _, err := tx.ReadMaterial(peerB, "b1", 0, 1); return err })
	if db.keys.len() != 2 {
		t.Fatalf("key cache holds %d keys, want 2", db.keys.len())
	}
	mustUpdate(t, db, 3, func(tx kms.Tx) error { return tx.DropMaterial(peerB, "b1") })
	if db.keys.len() != 1 {
		t.Fatalf("dropped data key still cached (%d keys)", db.keys.len())
	}
	err := db.bolt.View(func(btx *bolt.Tx) error {
		if btx.Bucket(bucketMaterial).Bucket(blockKey(nil, peerB, "b1")) != nil {
			t.Error("material bucket (segments and wrapped key) survives DropMaterial")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mustView(t, db, func(tx kms.Tx) error {
		if _, err := tx.ReadMaterial(peerB, "b1", 0, 1); !errors.Is(err, ErrNoMaterial) {
			t.Errorf("read after drop err = %v, want ErrNoMaterial", err)
		}
		if _, err := tx.ReadMaterial(peerB, "b2", 0, 1); err != nil {
			t.Errorf("other block unreadable after drop: %v", err)
		}
		return nil
	})
	// Erase and drop of dropped material are no-ops (kms may release a block's last bytes twice).
	mustUpdate(t, db, 4, func(tx kms.Tx) error {
		return errors.Join(tx.EraseMaterial(peerB, "b1", 0, 10), tx.DropMaterial(peerB, "b1"))
	})
}

func TestWrongMasterKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.db")
	key := randomBytes(t, MasterKeySize)
	db, err := Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	putSealed(t, db, 1, "b1", randomBytes(t, 100), DefaultSegmentSize)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	other := randomBytes(t, MasterKeySize)
	if _, err := Open(path, other); !errors.Is(err, ErrWrongMasterKey) {
		t.Fatalf("Open with another master key: err = %v, want ErrWrongMasterKey", err)
	}
	if _, err := Open(path, key[:16]); err == nil {
		t.Fatal("Open accepted a 16-byte master key")
	}

	// A blob sealed by a node with another master key is refused at PutMaterial.
	db, err = Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	foreign, _ := openTestDB(t)
	blob, err := foreign.Seal(peerB, "b2", randomBytes(t, 100))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(2, func(tx kms.Tx) error { return tx.PutMaterial(peerB, "b2", blob) }); !errors.Is(err, ErrWrongMasterKey) {
		t.Fatalf("PutMaterial of a foreign blob: err = %v, want ErrWrongMasterKey", err)
	}
	// A blob sealed for another block does not authenticate either.
	blob, err = db.Seal(peerB, "b3", randomBytes(t, 100))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(2, func(tx kms.Tx) error { return tx.PutMaterial(peerB, "b4", blob) }); !errors.Is(err, ErrWrongMasterKey) {
		t.Fatalf("PutMaterial under another block ID: err = %v, want ErrWrongMasterKey", err)
	}
}

func TestTamperedMaterial(t *testing.T) {
	tamper := map[string]func(mb *bolt.Bucket) error{
		"flipped ciphertext bit": func(mb *bolt.Bucket) error {
			v := bytes.Clone(mb.Get(segKey(nil, 1)))
			v[len(v)-20] ^= 1
			return mb.Put(segKey(nil, 1), v)
		},
		"swapped segments": func(mb *bolt.Bucket) error {
			a, b := bytes.Clone(mb.Get(segKey(nil, 0))), bytes.Clone(mb.Get(segKey(nil, 1)))
			return errors.Join(mb.Put(segKey(nil, 0), b), mb.Put(segKey(nil, 1), a))
		},
		"forged erased range": func(mb *bolt.Bucket) error {
			v := mb.Get(segKey(nil, 1))
			f := append([]byte{segmentVersion, 0, 1, 0, 0, 0, 1}, v[3:]...)
			return mb.Put(segKey(nil, 1), f)
		},
		"truncated segment": func(mb *bolt.Bucket) error {
			v := bytes.Clone(mb.Get(segKey(nil, 1)))
			return mb.Put(segKey(nil, 1), v[:len(v)-1])
		},
		"edited header length": func(mb *bolt.Bucket) error {
			h := bytes.Clone(mb.Get(headerKey))
			binary.BigEndian.PutUint64(h[5:13], 2*DefaultSegmentSize)
			return mb.Put(headerKey, h)
		},
	}
	for name, fn := range tamper {
		t.Run(name, func(t *testing.T) {
			db, _ := openTestDB(t)
			putSealed(t, db, 1, "b1", randomBytes(t, 3*DefaultSegmentSize), DefaultSegmentSize)
			db.keys.clear() // make the read unwrap the (possibly edited) header
			err := db.bolt.Update(func(btx *bolt.Tx) error {
				return fn(btx.Bucket(bucketMaterial).Bucket(blockKey(nil, peerB, "b1")))
			})
			if err != nil {
				t.Fatal(err)
			}
			err = db.View(func(tx kms.Tx) error {
				_, err := tx.ReadMaterial(peerB, "b1", DefaultSegmentSize+10, 10)
				return err
			})
			if !errors.Is(err, ErrTampered) && !errors.Is(err, ErrWrongMasterKey) {
				t.Fatalf("read of tampered segment: err = %v, want ErrTampered", err)
			}
		})
	}
}

// windows indexes every 16-byte window of secret.
func windows(secret []byte) map[[16]byte]bool {
	m := make(map[[16]byte]bool, len(secret))
	for i := 0; i+16 <= len(secret); i++ {
		m[[16]byte(secret[i:i+16])] = true
	}
	return m
}

func findWindow(m map[[16]byte]bool, data []byte) int {
	for i := 0; i+16 <= len(data); i++ {
		if m[[16]byte(data[i:i+16])] {
			return i
		}
	}
	return -1
}

// TestNoPlaintextOnDisk: after ingesting, reading, erasing and dropping material, no 16-byte
// window of it appears in the sealed blob, the store file or a snapshot (invariant 3).
func TestNoPlaintextOnDisk(t *testing.T) {
	db, _ := openTestDB(t)
	m1, m2 := randomBytes(t, 64<<10), randomBytes(t, 8<<10)
	secret := windows(append(bytes.Clone(m1), m2...))
	// The test must be able to fail: the windows are found in the plaintext itself.
	if findWindow(secret, m1) < 0 {
		t.Fatal("scanner does not find plaintext")
	}
	blob1, err := db.Seal(peerB, "b1", m1)
	if err != nil {
		t.Fatal(err)
	}
	blob2, err := db.Seal(peerB, "b2", m2)
	if err != nil {
		t.Fatal(err)
	}
	for name, blob := range map[string][]byte{"blob1": blob1, "blob2": blob2} {
		if i := findWindow(secret, blob); i >= 0 {
			t.Fatalf("%s holds plaintext at offset %d", name, i)
		}
	}
	mustUpdate(t, db, 1, func(tx kms.Tx) error {
		return errors.Join(tx.PutMaterial(peerB, "b1", blob1), tx.PutMaterial(peerB, "b2", blob2))
	})
	for i := 0; i < 200; i++ {
		mustUpdate(t, db, uint64(i+2), func(tx kms.Tx) error {
			if _, err := tx.ReadMaterial(peerB, "b1", i*32, 32); err != nil {
				return err
			}
			return tx.EraseMaterial(peerB, "b1", i*32, 32)
		})
	}
	mustUpdate(t, db, 300, func(tx kms.Tx) error { return tx.DropMaterial(peerB, "b2") })

	var snap bytes.Buffer
	if _, err := db.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}
	if i := findWindow(secret, snap.Bytes()); i >= 0 {
		t.Fatalf("snapshot holds plaintext at offset %d", i)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(db.Path())
	if err != nil {
		t.Fatal(err)
	}
	if i := findWindow(secret, file); i >= 0 {
		t.Fatalf("store file holds plaintext at offset %d", i)
	}
}

func FuzzParseSealed(f *testing.F) {
	key := make([]byte, MasterKeySize)
	db, err := Open(filepath.Join(f.TempDir(), "fuzz.db"), key)
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	for _, n := range []int{1, 100, 600} {
		blob, err := db.sealSegments(peerB, "b", make([]byte, n), 64)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(blob)
	}
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, blob []byte) {
		h, segs, err := parseSealed(blob)
		if err != nil {
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("error not ErrTampered: %v", err)
			}
			return
		}
		for i, s := range segs {
			if _, err := parseSegment(s, h.segLen(i)); err != nil {
				t.Fatalf("parseSealed accepted segment %d that parseSegment rejects", i)
			}
		}
		// Whatever parses must also be refused or stored without panicking.
		_ = db.Update(0, func(tx kms.Tx) error { return tx.PutMaterial(peerB, "b", blob) })
	})
}
