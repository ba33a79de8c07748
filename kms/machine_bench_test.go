package kms_test

import (
	"fmt"
	"testing"

	"github.com/qkms/qkms/kms"
)

// BenchmarkApplyIssue measures Apply(Issue) of one 256-bit key over the in-memory Tx, pools
// refilled outside the timer. The figure bounds the core's share of an enc_keys call; the
// store's sealing and bbolt costs come on top.
func BenchmarkApplyIssue(b *testing.B) {
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			l := newLink(b, kms.Limits{})
			refill := func() {
				for range 16 {
					l.ingest(1<<16, true)
				}
			}
			refill()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				r := l.apply(l.a, l.issueCmd(l.a, "SAE-A1", []string{"SAE-B1"}, n, 256))
				if r.Err != nil {
					b.StopTimer()
					refill()
					b.StartTimer()
					continue
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "keys/s")
		})
	}
}
