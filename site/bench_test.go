package site

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync/atomic"
	"testing"
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
