package raft

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qkms/qkms/store"
)

// BenchmarkProposeBoltStore is BenchmarkProposeSingleNode on the node's real bbolt state
// store (two fsyncs per FSM batch on top of the log store's), with 64 concurrent callers.
func BenchmarkProposeBoltStore(b *testing.B) {
	ca := newTestCA(b, "site-A CA")
	for _, inflight := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) {
			db, err := store.Open(filepath.Join(b.TempDir(), "state.db"), make([]byte, 32))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			cfg := testConfig(b, ca, "n1")
			cfg.Bootstrap, cfg.MaxInflight = true, inflight
			cfg.Store, cfg.Applier = db, &countApplier{}
			n, err := Open(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer n.Close()
			if err := n.Read(context.Background(), nil2); err != nil {
				b.Fatal(err)
			}
			var next atomic.Int64
			b.SetParallelism(max(1, 64/runtimeProcs()))
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					id := "b-" + strconv.FormatInt(next.Add(1), 10)
					if _, err := n.Propose(ctx, ingest(id, 1)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "proposals/s")
			last, _ := strconv.ParseUint(n.Stats()["last_log_index"], 10, 64)
			b.ReportMetric(float64(b.N)/float64(last), "cmds/entry")
		})
	}
}

// BenchmarkProposeCluster: 3 nodes on loopback with mutual TLS, 64 concurrent callers
// spread over all nodes (two thirds forwarded by followers) or all on the leader.
func BenchmarkProposeCluster(b *testing.B) {
	ca := newTestCA(b, "site-A CA")
	for _, bc := range []struct {
		spread   bool
		inflight int
	}{{false, 1}, {false, 2}, {false, 4}, {true, 2}} {
		spread := bc.spread
		b.Run(fmt.Sprintf("via-followers=%v/inflight=%d", spread, bc.inflight), func(b *testing.B) {
			nodes := startSite(b, ca, func(c *Config) { c.MaxInflight = bc.inflight })
			leader := leaderOf(b, nodes)
			var next atomic.Int64
			b.SetParallelism(max(1, 64/runtimeProcs()))
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				n := leader
				if spread {
					n = nodes[int(next.Add(1))%len(nodes)]
				}
				for pb.Next() {
					id := "b-" + strconv.FormatInt(next.Add(1), 10)
					if _, err := n.Propose(ctx, ingest(id, 1)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "proposals/s")
		})
	}
}
