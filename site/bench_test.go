package site

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qkms/qkms/api/etsi014"
	"github.com/qkms/qkms/internal/cputime"
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

// BenchmarkDeliver is the bench command in-process: 32 SAE clients, each getting 256-bit keys
// at one site and fetching them at the other over ETSI 014 and mutual TLS, half in each
// direction, with 1, 16 or 64 keys per request. It reports verified keys per second, the CPU
// a key costs and the latency of both requests.
func BenchmarkDeliver(b *testing.B) {
	for _, mode := range []string{"fsync", "os"} {
		b.Run(mode, func(b *testing.B) { benchDeliver(b, deliverSetup{mode: mode, number: 1, nodes: 1, clients: 32}) })
		for _, n := range []int{8, 16, 64} {
			b.Run(fmt.Sprintf("%s-n%d", mode, n), func(b *testing.B) {
				benchDeliver(b, deliverSetup{mode: mode, number: n, nodes: 1, clients: 32})
			})
		}
	}
	// A site that has run for a while holds many blocks: 4096 of 32 KiB, 4 million keys.
	b.Run("os-n8-blocks4096", func(b *testing.B) {
		benchDeliver(b, deliverSetup{mode: "os", number: 8, nodes: 1, clients: 32, blocks: 4096, blockBytes: 32 << 10})
	})
}

// BenchmarkDeliver3 is BenchmarkDeliver for two 3-node sites (all six nodes in this process)
// and 64 clients, as issue 4 measures them; os-n8-spread spreads the clients over the nodes,
// as encryptors behind a load balancer would be.
func BenchmarkDeliver3(b *testing.B) {
	for _, mode := range []string{"fsync", "os"} {
		for _, n := range []int{1, 8, 16} {
			b.Run(fmt.Sprintf("%s-n%d", mode, n), func(b *testing.B) {
				benchDeliver(b, deliverSetup{mode: mode, number: n, nodes: 3, clients: 64})
			})
		}
	}
	b.Run("os-n8-spread", func(b *testing.B) {
		benchDeliver(b, deliverSetup{mode: "os", number: 8, nodes: 3, clients: 64, spread: true})
	})
}

// deliverSetup is one configuration of benchDeliver.
type deliverSetup struct {
	mode                   string // durability
	number, nodes, clients int    // keys per request, nodes per site, concurrent SAE clients
	policy                 string // default key policy ("": qkd-only)
	pause                  bool   // pause the link at both sites first (pqc-fallback then serves pqc)
	want                   string // provenance every key must carry ("": not checked)
	blocks, blockBytes     int    // key ingested first (0: 8 blocks of 1 MiB)
	spread                 bool   // clients spread over every node of each site, not only the first
}

// benchDeliver counts keys, not requests: with number keys per request, b.N keys take b.N/number
// round trips. The clients talk to the first node of each site.
func benchDeliver(b *testing.B, s deliverSetup) {
	setGCPercent(b, 400) // as cmd/qkms runs the sites
	tp := newTestPair(b, func(c *PairConfig) {
		c.Durability, c.NodesPerSite, c.DefaultPolicy = s.mode, s.nodes, s.policy
	})
	blocks, size := 8, 1<<20
	if s.blocks > 0 {
		blocks, size = s.blocks, s.blockBytes
	}
	tp.ingest(blocks, size)
	tp.waitKey(2 << 20)
	if s.policy != "" {
		tp.waitEpoch()
	}
	if s.pause {
		for i, n := range tp.Sites {
			if err := n.SetLinkPaused(context.Background(), tp.Sites[1-i].KMEID(), true, "bench", ""); err != nil {
				b.Fatal(err)
			}
		}
	}
	number, clients := s.number, s.clients
	type dir struct {
		enc, dec      *etsi014.Client
		master, slave string
	}
	// dirs[i] are the two directions through the i-th node of each site: the first only, or
	// every node with spread (client c then talks to node c/2 modulo the nodes).
	var dirs [][2]dir
	for k := range tp.Nodes[0] {
		if k > 0 && !s.spread {
			break
		}
		atA, atB := tp.Nodes[0][k].ETSI014Addr(), tp.Nodes[1][k].ETSI014Addr()
		dirs = append(dirs, [2]dir{
			{tp.clientAt(atA, "SAE-A1"), tp.clientAt(atB, "SAE-B1"), "SAE-A1", "SAE-B1"},
			{tp.clientAt(atB, "SAE-B2"), tp.clientAt(atA, "SAE-A2"), "SAE-B2", "SAE-A2"},
		})
	}
	dirOf := func(c uint64) dir { return dirs[(c/2)%uint64(len(dirs))][c%2] }
	// Encryptors keep their connections: open one per client before the clock starts, so the
	// figures are those of the steady state, not of 2*clients TLS handshakes at once.
	var warm sync.WaitGroup
	for i := range clients {
		d := dirOf(uint64(i))
		warm.Go(func() {
			keys, err := d.enc.GetKey(context.Background(), d.slave, etsi014.KeyRequest{Number: 1})
			if err == nil {
				_, err = d.dec.GetKeyWithIDs(context.Background(), d.master, []string{keys[0].ID})
			}
			if err != nil {
				b.Error(err)
			}
		})
	}
	warm.Wait()
	var next atomic.Uint64
	var mu sync.Mutex
	var encLat, decLat []time.Duration
	b.SetParallelism(clients / runtime.GOMAXPROCS(0))
	term0 := tp.terms()
	b.ResetTimer()
	start, cpu0 := time.Now(), cputime.Process()
	b.RunParallel(func(pb *testing.PB) {
		d := dirOf(next.Add(1) - 1)
		ctx := context.Background()
		var enc, dec []time.Duration
		defer func() {
			mu.Lock()
			encLat, decLat = append(encLat, enc...), append(decLat, dec...)
			mu.Unlock()
		}()
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
			t0 := time.Now()
			keys, err := d.enc.GetKey(ctx, d.slave, etsi014.KeyRequest{Number: n})
			if err != nil {
				b.Error(err)
				return
			}
			t1 := time.Now()
			enc = append(enc, t1.Sub(t0))
			ids := make([]string, len(keys))
			for i, k := range keys {
				ids[i] = k.ID
			}
			got, err := d.dec.GetKeyWithIDs(ctx, d.master, ids)
			if err != nil {
				b.Error(err)
				return
			}
			dec = append(dec, time.Since(t1))
			for i := range keys {
				if got[i].ID != keys[i].ID || !bytes.Equal(got[i].Bytes, keys[i].Bytes) {
					b.Error("key mismatch")
					return
				}
				if s.want != "" && (provOf(keys[i]) != s.want || provOf(got[i]) != s.want) {
					b.Errorf("provenance %q / %q, want %s", provOf(keys[i]), provOf(got[i]), s.want)
					return
				}
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "keys/s")
	if cpu := cputime.Process() - cpu0; cpu0 > 0 {
		// Both sites and the clients: the CPU a verified key costs, whatever else runs.
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/key")
	}
	reportLatency(b, "enc", encLat)
	reportLatency(b, "dec", decLat)
	// An election under load (a follower that missed heartbeats) stalls the site: count them.
	b.ReportMetric(float64(tp.terms()-term0), "elections")
}

// terms is the sum over both sites of the raft term of each site's first node: it grows by
// one for every election either site held.
func (tp *testPair) terms() uint64 {
	var sum uint64
	for _, n := range tp.Sites {
		t, err := strconv.ParseUint(n.rn.Stats()["term"], 10, 64)
		if err != nil {
			tp.t.Fatal(err)
		}
		sum += t
	}
	return sum
}

// setGCPercent sets the collector's target for one benchmark, like the GOGC default of
// cmd/qkms, unless GOGC is set in the environment.
func setGCPercent(b *testing.B, pct int) {
	if os.Getenv("GOGC") != "" {
		return
	}
	old := debug.SetGCPercent(pct)
	b.Cleanup(func() { debug.SetGCPercent(old) })
}

// reportLatency reports the median and 99th percentile of one kind of request in ms.
func reportLatency(b *testing.B, name string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	at := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))]) / 1e6 }
	b.ReportMetric(at(0.50), name+"-p50-ms")
	b.ReportMetric(at(0.99), name+"-p99-ms")
}
