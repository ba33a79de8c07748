package site

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qkms/qkms/api/etsi014"
)

// BenchmarkIngest measures link key taken into a site: fingerprint, sealing, the replicated
// log and the state store, for 1 MiB blocks. b.SetBytes makes -bench report MB/s of key.
func BenchmarkIngest(b *testing.B) {
	tp := newTestPair(b, nil)
	a := tp.Sites[0]
	blk := make([]byte, 1<<20)
	rand.Read(blk)
	buf := make([]byte, len(blk))
	b.SetBytes(int64(len(blk)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		copy(buf, blk)
		if err := a.Ingest(context.Background(), "KME-B", fmt.Sprintf("bench-%d", i), uint64(i), buf, 0.02); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIngestParallel is BenchmarkIngest with 8 blocks in flight, as the link sources
// ingest: concurrent blocks share raft entries and fsyncs (group commit).
func BenchmarkIngestParallel(b *testing.B) {
	tp := newTestPair(b, nil)
	a := tp.Sites[0]
	blk := make([]byte, 1<<20)
	rand.Read(blk)
	var seq atomic.Uint64
	b.SetBytes(int64(len(blk)))
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, len(blk))
		for pb.Next() {
			copy(buf, blk)
			i := seq.Add(1)
			if err := a.Ingest(context.Background(), "KME-B", fmt.Sprintf("bench-%d", i), i, buf, 0.02); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDeliver is the bench command in-process: 32 SAE clients, each getting a 256-bit key
// at one site and fetching it at the other over ETSI 014 and mutual TLS, half in each
// direction. It reports verified keys per second.
func BenchmarkDeliver(b *testing.B) {
	for _, mode := range []string{"fsync", "os"} {
		b.Run(mode, func(b *testing.B) { benchDeliver(b, mode, 1) })
		b.Run(mode+"/n64", func(b *testing.B) { benchDeliver(b, mode, 64) })
	}
}

// benchDeliver counts keys, not requests: with number keys per request, b.N keys take b.N/number
// round trips.
func benchDeliver(b *testing.B, mode string, number int) {
	tp := newTestPair(b, func(c *PairConfig) { c.Durability = mode })
	tp.ingest(8, 1<<20)
	tp.waitKey(2 << 20)
	type dir struct {
		enc, dec      *etsi014.Client
		master, slave string
	}
	dirs := []dir{
		{tp.client(0, "SAE-A1"), tp.client(1, "SAE-B1"), "SAE-A1", "SAE-B1"},
		{tp.client(1, "SAE-B2"), tp.client(0, "SAE-A2"), "SAE-B2", "SAE-A2"},
	}
	var next atomic.Uint64
	b.SetParallelism(16) // 32 clients on 2 cores
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		d := dirs[next.Add(1)%2]
		ctx := context.Background()
		for more := true; more; {
			n := 0
			for n < number && more {
				if more = pb.Next(); more {
					n++
				}
			}
			if n == 0 {
				return
			}
			keys, err := d.enc.GetKey(ctx, d.slave, etsi014.KeyRequest{Number: n})
			if err != nil {
				b.Error(err)
				return
			}
			ids := make([]string, len(keys))
			for i, k := range keys {
				ids[i] = k.ID
			}
			got, err := d.dec.GetKeyWithIDs(ctx, d.master, ids)
			if err != nil {
				b.Error(err)
				return
			}
			for i := range keys {
				if got[i].ID != keys[i].ID || !bytes.Equal(got[i].Bytes, keys[i].Bytes) {
					b.Error("key mismatch")
					return
				}
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "keys/s")
}
