package store

import (
	"fmt"
	"testing"

	"github.com/qkms/qkms/kms"
)

// BenchmarkSeal measures sealing throughput (goal: >= 100 Mbit/s for 1-16 MB blocks).
func BenchmarkSeal(b *testing.B) {
	db, _ := openTestDB(b)
	for _, size := range []int{1 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("%dMB", size>>20), func(b *testing.B) {
			material := randomBytes(b, size)
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := db.Seal(peerB, "b", material); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIngest measures Seal plus PutMaterial in one committed Update (what a node does per
// ingested block).
func BenchmarkIngest(b *testing.B) {
	db, _ := openTestDB(b)
	const size = 4 << 20
	material := randomBytes(b, size)
	b.SetBytes(size)
	i := 0
	for b.Loop() {
		i++
		id := fmt.Sprint("b", i)
		blob, err := db.Seal(peerB, id, material)
		if err != nil {
			b.Fatal(err)
		}
		if err := db.Update(0, func(tx kms.Tx) error { return tx.PutMaterial(peerB, id, blob) }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdate100Reservations: one committed (fsynced) Update storing 100 reservations,
// as an Issue batch does.
func BenchmarkUpdate100Reservations(b *testing.B) {
	db, _ := openTestDB(b)
	var idx uint64
	for b.Loop() {
		idx++
		err := db.Update(idx, func(tx kms.Tx) error {
			for j := 0; j < 100; j++ {
				if err := tx.PutReservation(reservation(fmt.Sprintf("%d-%d", idx, j), t0, kms.KeyIssued)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "resv/s")
}

// noSync turns off fsync for benchmarks that measure CPU cost per operation rather than the
// disk's flush latency (which dominates every committed Update on this machine).
func noSync(db *DB) { db.bolt.NoSync = true }

// BenchmarkFetchReservation: the per-key work of a Fetch in batches of 100 per Update: read a
// reservation and put it back in another state (so the expiry index changes each time).
// Without fsync; ns/op is per key.
func BenchmarkFetchReservation(b *testing.B) {
	db, _ := openTestDB(b)
	noSync(db)
	const n = 10000
	ids := make([]string, n)
	for j := range ids {
		ids[j] = fmt.Sprint("4c2b9a1e-5d3f-4e6a-9b7c-", 100000000000+j) // UUID-sized
	}
	mustUpdate(b, db, 1, func(tx kms.Tx) error {
		for _, id := range ids {
			if err := tx.PutReservation(reservation(id, t0, kms.KeyIssued)); err != nil {
				return err
			}
		}
		return nil
	})
	j := 0
	for b.Loop() {
		err := db.Update(0, func(tx kms.Tx) error {
			for k := 0; k < 100; k++ {
				r, err := tx.Reservation(ids[j%n])
				if err != nil {
					return err
				}
				r.State = kms.KeyFetched - r.State
				if err := tx.PutReservation(r); err != nil {
					return err
				}
				j++
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/key")
}

// benchReadErase reads and erases 32-byte keys (a 256-bit key's material work), perKey keys
// per committed Update; sync selects whether commits fsync.
func benchReadErase(b *testing.B, perUpdate int, sync bool) {
	db, _ := openTestDB(b)
	if !sync {
		noSync(db)
	}
	const size = 16 << 20
	blob, err := db.Seal(peerB, "b1", randomBytes(b, size))
	if err != nil {
		b.Fatal(err)
	}
	mustUpdate(b, db, 0, func(tx kms.Tx) error { return tx.PutMaterial(peerB, "b1", blob) })
	off := 0
	for b.Loop() {
		if off+perUpdate*32 > size {
			b.StopTimer()
			mustUpdate(b, db, 0, func(tx kms.Tx) error { return tx.PutMaterial(peerB, "b1", blob) })
			off = 0
			b.StartTimer()
		}
		err := db.Update(0, func(tx kms.Tx) error {
			for k := 0; k < perUpdate; k++ {
				if _, err := tx.ReadMaterial(peerB, "b1", off, 32); err != nil {
					return err
				}
				if err := tx.EraseMaterial(peerB, "b1", off, 32); err != nil {
					return err
				}
				off += 32
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*perUpdate)/b.Elapsed().Seconds(), "keys/s")
}

// BenchmarkReadErase32: ReadMaterial+EraseMaterial of 32 bytes, 100 keys per Update.
func BenchmarkReadErase32(b *testing.B) {
	b.Run("nosync", func(b *testing.B) { benchReadErase(b, 100, false) })
	b.Run("fsync", func(b *testing.B) { benchReadErase(b, 100, true) })
	b.Run("fsync-1000", func(b *testing.B) { benchReadErase(b, 1000, true) })
}
