package store

import (
	"crypto/rand"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/qkms/qkms/internal/cputime"
	"github.com/qkms/qkms/kms"
)

// BenchmarkKeyLifecycle is the state machine's share of delivering keys, on real store files
// and without the network: two sites' machines and stores, and for every request of 16
// 256-bit keys the commands a delivery applies (Issue and MarkPushed at the master's site,
// PeerReserve and Fetch at the slave's), grouped into commits as a loaded site groups them
// (perCommit requests a commit). It varies far less between runs than BenchmarkDeliver,
// which carries the HTTP, TLS and peer-channel work besides, so it shows what a change to
// the store or the core saves; pages/key (pages written per key, both stores) does not vary at
// all. b.N counts keys.
func BenchmarkKeyLifecycle(b *testing.B) {
	for _, perCommit := range []int{1, 4} {
		b.Run(fmt.Sprintf("requests-per-commit=%d", perCommit), func(b *testing.B) {
			benchLifecycle(b, 16, perCommit)
		})
	}
	// As the sites run the store: 8 keys per request, four to a raft entry, and the entries'
	// updates committed 256 at a time (WithDeferredCommit).
	b.Run("deferred", func(b *testing.B) {
		benchLifecycle(b, 8, 4, func(self string) []Option {
			return []Option{WithSelf(self), WithDeferredCommit(256, time.Minute)}
		})
	})
}

func benchLifecycle(b *testing.B, number, perCommit int, opts ...func(self string) []Option) {
	reg, err := kms.NewRegistry(map[string]string{"SAE-A1": "KME-A", "SAE-B1": "KME-B"})
	if err != nil {
		b.Fatal(err)
	}
	audit := make([]byte, kms.AuditKeySize)
	rand.Read(audit)
	ak, err := kms.NewAuditKey(audit)
	if err != nil {
		b.Fatal(err)
	}
	type end struct {
		m     *kms.Machine
		db    *DB
		peer  string
		index uint64
	}
	mk := func(self, peer string) *end {
		cfg := kms.Config{Self: self, Registry: reg, KeyTTL: time.Hour, AuditKey: ak}
		db, err := Open(filepath.Join(b.TempDir(), self+".db"), randomBytes(b, MasterKeySize), siteOptions(self, opts)...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
		return &end{m: kms.NewMachine(cfg), db: db, peer: peer}
	}
	a, bb := mk("KME-A", "KME-B"), mk("KME-B", "KME-A")
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	apply := func(e *end, cmds ...*kms.Command) []*kms.Result {
		e.index++
		out := make([]*kms.Result, len(cmds))
		err := e.db.Update(e.index, func(tx kms.Tx) error {
			for i, c := range cmds {
				if c.Time.IsZero() {
					c.Time = now
				}
				if out[i] = e.m.Apply(tx, c); out[i].Err != nil {
					return out[i].Err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		return out
	}
	// Enough key for the run, owned by A, verified at both ends.
	const blockBytes = 1 << 20
	blocks := (b.N*32)/blockBytes + 2
	material := make([]byte, blockBytes)
	for i := range blocks {
		rand.Read(material)
		id := fmt.Sprintf("blk-%06d", i)
		for _, e := range []*end{a, bb} {
			sealed, err := e.db.Seal(e.peer, id, material)
			if err != nil {
				b.Fatal(err)
			}
			apply(e, &kms.Command{Ingest: &kms.IngestCmd{Peer: e.peer, BlockID: id, Bytes: blockBytes, Owner: "KME-A", Tag: []byte("tag"), Sealed: sealed}},
				&kms.Command{Verify: &kms.VerifyCmd{Peer: e.peer, BlockID: id, Match: true}})
		}
	}
	newID := func() string { return uuid.Must(uuid.NewV7()).String() }
	pages := func() int64 {
		sa, sb := a.db.bolt.Stats(), bb.db.bolt.Stats()
		return sa.TxStats.GetWrite() + sb.TxStats.GetWrite()
	}
	b.ResetTimer()
	cpu0, pages0 := cputime.Process(), pages()
	for done := 0; done < b.N; {
		var issues, fetches, marks []*kms.Command
		var pushed []kms.Reservation
		for r := 0; r < perCommit && done < b.N; r++ {
			n := min(number, b.N-done)
			done += n
			ids := make([]string, n)
			for i := range ids {
				ids[i] = newID()
			}
			issues = append(issues, &kms.Command{ReqID: "issue/" + ids[0], Issue: &kms.IssueCmd{
				Self: "KME-A", Peer: "KME-B", Master: "SAE-A1", Slaves: []string{"SAE-B1"},
				Bits: 256, KeyIDs: ids, Expires: now.Add(time.Hour)}})
			fetches = append(fetches, &kms.Command{ReqID: "fetch/SAE-B1/" + newID(),
				Fetch: &kms.FetchCmd{Master: "SAE-A1", Caller: "SAE-B1", KeyIDs: ids}})
			marks = append(marks, &kms.Command{MarkPushed: &kms.MarkPushedCmd{KeyIDs: ids}})
		}
		for _, res := range apply(a, issues...) {
			pushed = append(pushed, res.Reservations...)
		}
		// The push carries the reservations and the slave's waiting fetches in one entry.
		apply(bb, append([]*kms.Command{{PeerReserve: &kms.PeerReserveCmd{From: "KME-A", Reservations: pushed}}}, fetches...)...)
		var ids []string
		for _, m := range marks {
			ids = append(ids, m.MarkPushed.KeyIDs...)
		}
		apply(a, &kms.Command{MarkPushed: &kms.MarkPushedCmd{KeyIDs: ids}})
	}
	b.ReportMetric(float64(pages()-pages0)/float64(b.N), "pages/key")
	if cpu := cputime.Process() - cpu0; cpu0 > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-us/key")
	}
}

// siteOptions are the options of the store of site self: no fsync, and what extra gives.
func siteOptions(self string, extra []func(string) []Option) []Option {
	opts := []Option{WithoutFsync()}
	for _, f := range extra {
		opts = append(opts, f(self)...)
	}
	return opts
}
