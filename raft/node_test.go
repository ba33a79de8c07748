package raft

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/qkms/qkms/kms"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testNode is one node with its own store, applier and leadership events.
type testNode struct {
	*Node
	cfg      Config
	store    *memStore
	app      *countApplier
	leaderCh chan bool
}

func testConfig(t testing.TB, ca *testCA, id string) Config {
	return Config{
		ID: id, Dir: filepath.Join(t.TempDir(), id), Bind: "127.0.0.1:0",
		TLS: ca.nodeTLS(t, "KME-A"), Logger: quiet,
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
	}
}

// open starts (or restarts, keeping Dir, Bind address and store) a node.
func open(t testing.TB, cfg Config, store *memStore, app *countApplier) *testNode {
	t.Helper()
	tn := &testNode{store: store, app: app, leaderCh: make(chan bool, 64)}
	cfg.Store, cfg.Applier = store, app
	cfg.OnLeaderChange = func(l bool) { tn.leaderCh <- l }
	n, err := Open(cfg)
	if err != nil {
		t.Fatalf("open %s: %v", cfg.ID, err)
	}
	cfg.Bind = n.Addr() // a restart listens where the site knows it
	tn.Node, tn.cfg = n, cfg
	t.Cleanup(func() { _ = n.Close() })
	return tn
}

// singleLeader opens a bootstrapped one-node site on a memStore and waits until it leads.
func singleLeader(t testing.TB) *testNode {
	t.Helper()
	cfg := testConfig(t, newTestCA(t, "site-A CA"), "n1")
	cfg.Bootstrap = true
	n := open(t, cfg, newMemStore(), &countApplier{})
	n.awaitLeadership(t)
	return n
}

func (tn *testNode) awaitLeadership(t testing.TB) {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case l := <-tn.leaderCh:
			if l {
				return
			}
		case <-timeout.C:
			t.Fatalf("%s did not become leader", tn.cfg.ID)
		}
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// readAvailable reads KME-B's Available linearizably through n.
func readAvailable(t testing.TB, n *Node) int64 {
	t.Helper()
	var v int64
	err := n.Read(ctxT(t), func(tx kms.Tx) error {
		p, err := tx.Pool("KME-B")
		if p != nil {
			v = p.Available
		}
		return err
	})
	if err != nil {
		t.Fatalf("read on %s: %v", n.ID(), err)
	}
	return v
}

func TestSingleNodeApplyRestart(t *testing.T) {
	ca := newTestCA(t, "site-A CA")
	tests := []struct {
		name         string
		snapshot     bool // take a snapshot before the restart
		loseStore    bool // restart with an empty store (lost state file)
		wantRestores int64
	}{
		{name: "log replay skipped"},
		{name: "after snapshot", snapshot: true},
		{name: "store lost, recovered from snapshot", snapshot: true, loseStore: true, wantRestores: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store, app := newMemStore(), &countApplier{}
			cfg := testConfig(t, ca, "n1")
			cfg.Bootstrap = true
			n := open(t, cfg, store, app)
			n.awaitLeadership(t)

			const callers, each = 8, 25
			var wg sync.WaitGroup
			errs := make(chan error, callers*each)
			for c := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						id := fmt.Sprintf("req-%d-%d", c, i)
						res, err := n.Propose(ctxT(t), ingest(id, 3))
						switch {
						case err != nil:
							errs <- err
						case res.Err != nil:
							errs <- res.Err
						case len(res.Keys) != 1 || res.Keys[0].ID != id:
							errs <- fmt.Errorf("%s got result %+v of another command", id, res.Keys)
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			want := int64(callers * each * 3)
			if got := readAvailable(t, n.Node); got != want {
				t.Fatalf("available = %d, want %d", got, want)
			}
			if tc.snapshot {
				if err := n.Snapshot(); err != nil {
					t.Fatal(err)
				}
			}
			calls := app.calls.Load()
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}

			if tc.loseStore {
				store = newMemStore()
			}
			n = open(t, n.cfg, store, app)
			n.awaitLeadership(t)
			if got := readAvailable(t, n.Node); got != want {
				t.Fatalf("after restart available = %d, want %d", got, want)
			}
			if got := app.calls.Load(); got != calls {
				t.Fatalf("restart re-applied %d commands", got-calls)
			}
			if got := store.restores.Load(); got != tc.wantRestores {
				t.Fatalf("restores = %d, want %d", got, tc.wantRestores)
			}
			// A retry of an applied request is answered from the dedup record.
			res, err := n.Propose(ctxT(t), ingest("req-0-0", 3))
			if err != nil || res.Err != nil {
				t.Fatalf("retry: %v %v", err, res)
			}
			if got := readAvailable(t, n.Node); got != want {
				t.Fatalf("retry applied twice: available = %d, want %d", got, want)
			}
		})
	}
}

func TestOpenRefusesInconsistentDirectory(t *testing.T) {
	ca := newTestCA(t, "site-A CA")
	store := newMemStore()
	if err := store.Update(42, func(kms.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, ca, "n1")
	cfg.Bootstrap, cfg.Store, cfg.Applier = true, store, &countApplier{}
	n, err := Open(cfg)
	if err == nil {
		_ = n.Close()
		t.Fatal("Open accepted a state store that is ahead of an empty raft directory")
	}
}

func TestProposeErrorKinds(t *testing.T) {
	n := singleLeader(t)
	res, err := n.Propose(ctxT(t), ingest("bad", -1))
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res.Err, kms.ErrBadRequest) {
		t.Fatalf("res.Err = %v, want ErrBadRequest", res.Err)
	}
	if got := n.store.available("KME-B"); got != 0 {
		t.Fatalf("a rejected command changed state: %d", got)
	}
	if _, err := n.Propose(ctxT(t), nil); !errors.Is(err, kms.ErrBadRequest) {
		t.Fatalf("nil command: %v", err)
	}
	// Close tells the wiring that leadership is gone (Close waits for the notification).
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-n.leaderCh:
		if l {
			t.Fatal("leadership gained on close")
		}
	default:
		t.Fatal("no loss of leadership reported on close")
	}
	if _, err := n.Propose(ctxT(t), ingest("late", 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("propose after close: %v, want ErrClosed", err)
	}
}

func TestGroupCommitBatches(t *testing.T) {
	n := singleLeader(t)
	before, _ := strconv.ParseUint(n.Stats()["last_log_index"], 10, 64)
	const callers, each = 64, 20
	var wg sync.WaitGroup
	var failed sync.Map
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("g-%d-%d", c, i)
				res, err := n.Propose(ctxT(t), ingest(id, 1))
				if err != nil || res.Err != nil || res.Keys[0].ID != id {
					failed.Store(id, fmt.Sprint(err, res))
				}
			}
		}()
	}
	wg.Wait()
	failed.Range(func(k, v any) bool { t.Errorf("%v: %v", k, v); return true })
	after, _ := strconv.ParseUint(n.Stats()["last_log_index"], 10, 64)
	entries := after - before
	t.Logf("%d proposals in %d log entries", callers*each, entries)
	if entries >= callers*each {
		t.Fatalf("no group commit: %d proposals took %d entries", callers*each, entries)
	}
	if got := readAvailable(t, n.Node); got != callers*each {
		t.Fatalf("available = %d, want %d", got, callers*each)
	}
}

// consecutive checks the results of a group of ingests of one byte each: every command
// applied, and their running totals consecutive.
func consecutive(cmds []*kms.Command, res []*kms.Result) error {
	if len(res) != len(cmds) {
		return fmt.Errorf("%d results for %d commands", len(res), len(cmds))
	}
	first, _ := strconv.Atoi(string(res[0].Keys[0].Bytes))
	for j, r := range res {
		if r.Err != nil || r.Keys[0].ID != cmds[j].ReqID {
			return fmt.Errorf("command %d: %v %v", j, r.Err, r.Keys)
		}
		if got, _ := strconv.Atoi(string(r.Keys[0].Bytes)); got != first+j {
			return fmt.Errorf("command %d saw total %d, want %d (not consecutive)", j, got, first+j)
		}
	}
	return nil
}

// ProposeAll applies its commands one right after the other even while other proposals share
// the log entries: with every ingest adding 1, a group's running totals are consecutive.
func TestProposeAllConsecutive(t *testing.T) {
	n := singleLeader(t)
	const singles, groups, rounds, size = 16, 8, 10, 5
	var wg sync.WaitGroup
	errs := make(chan error, (singles+groups)*rounds)
	for c := range singles + groups {
		wg.Go(func() {
			for i := range rounds {
				if c < singles {
					if _, err := n.Propose(ctxT(t), ingest(fmt.Sprintf("s-%d-%d", c, i), 1)); err != nil {
						errs <- err
					}
					continue
				}
				cmds := make([]*kms.Command, size)
				for j := range cmds {
					cmds[j] = ingest(fmt.Sprintf("g-%d-%d-%d", c, i, j), 1)
				}
				res, err := n.ProposeAll(ctxT(t), cmds)
				if err == nil {
					err = consecutive(cmds, res)
				}
				if err != nil {
					errs <- fmt.Errorf("group %d-%d: %w", c, i, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got, want := readAvailable(t, n.Node), int64(singles*rounds+groups*rounds*size); got != want {
		t.Fatalf("available = %d, want %d", got, want)
	}
	if _, err := n.ProposeAll(ctxT(t), nil); !errors.Is(err, kms.ErrBadRequest) {
		t.Fatalf("empty group: %v, want ErrBadRequest", err)
	}
}

// BenchmarkProposeSingleNode measures group-committed tiny proposals on one node with 64
// concurrent callers (RunParallel with parallelism 64/GOMAXPROCS).
func BenchmarkProposeSingleNode(b *testing.B) {
	ca := newTestCA(b, "site-A CA")
	for _, inflight := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) {
			cfg := testConfig(b, ca, "n1")
			cfg.Bootstrap, cfg.MaxInflight = true, inflight
			n := open(b, cfg, newMemStore(), &countApplier{})
			n.awaitLeadership(b)
			var seq sync.Mutex
			next := 0
			b.SetParallelism(max(1, 64/runtimeProcs()))
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					seq.Lock()
					next++
					id := "b-" + strconv.Itoa(next)
					seq.Unlock()
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

// stuckFuture is a raft future that is never answered, as one left in raft's apply buffer
// when it shuts down.
type stuckFuture struct{ never chan struct{} }

func (f stuckFuture) Error() error { <-f.never; return nil }

type doneFuture struct{ err error }

func (f doneFuture) Error() error { return f.err }

// TestAwaitEndsWithRaft: an answered raft future gives its own error, and waiting on one raft
// never answers ends when raft has shut down.
func TestAwaitEndsWithRaft(t *testing.T) {
	n := &Node{raftDown: make(chan struct{})}
	want := errors.New("leadership lost")
	if err := n.await(doneFuture{want}); err != want {
		t.Fatalf("answered future: %v", err)
	}
	got := make(chan error, 1)
	go func() { got <- n.await(stuckFuture{make(chan struct{})}) }()
	close(n.raftDown)
	select {
	case err := <-got:
		if !errors.Is(err, hraft.ErrRaftShutdown) {
			t.Fatalf("unanswered future after shutdown: %v, want ErrRaftShutdown", err)
		}
	case <-time.After(10 * time.Second): // a hang, not a slow answer
		t.Fatal("await did not end when raft shut down")
	}
}

// OnApplied hears every applied command once, in log order, after the store committed it
// (what it is told about is already visible to readers), with the Result its proposer gets.
func TestOnAppliedAfterCommit(t *testing.T) {
	cfg := testConfig(t, newTestCA(t, "site-A CA"), "n1")
	cfg.Bootstrap = true
	store := newMemStore()
	var mu sync.Mutex
	var heard []string
	var early []string                  // commands heard before their effect was readable
	results := map[string]*kms.Result{} // what the hook was told each command did
	cfg.OnApplied = func(cmds []*kms.Command, res []*kms.Result) {
		mu.Lock()
		defer mu.Unlock()
		if len(res) != len(cmds) {
			t.Errorf("told %d results for %d commands", len(res), len(cmds))
			return
		}
		for i, c := range cmds {
			heard = append(heard, c.ReqID)
			results[c.ReqID] = res[i]
			_ = store.View(func(tx kms.Tx) error {
				if rec, _ := tx.Request(c.ReqID); rec == nil {
					early = append(early, c.ReqID)
				}
				return nil
			})
		}
	}
	n := open(t, cfg, store, &countApplier{})
	n.awaitLeadership(t)
	var want []string
	for i := range 5 {
		id := fmt.Sprintf("o-%d", i)
		want = append(want, id)
		res, err := n.Propose(ctxT(t), ingest(id, 1))
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		told := results[id]
		mu.Unlock()
		if told != res {
			t.Errorf("%s: the hook was told result %+v, the proposer got %+v", id, told, res)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(heard) != fmt.Sprint(want) || len(early) > 0 {
		t.Fatalf("heard %v (before commit: %v), want %v", heard, early, want)
	}
}
