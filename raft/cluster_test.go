package raft

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/qkms/qkms/kms"
)

// startSite starts a 3-node site on loopback with real mutual TLS and returns its nodes,
// the first being the bootstrap leader.
func startSite(t testing.TB, ca *testCA, tune func(*Config)) []*testNode {
	t.Helper()
	var nodes []*testNode
	for i := range 3 {
		cfg := testConfig(t, ca, fmt.Sprintf("n%d", i+1))
		cfg.Bootstrap = i == 0
		if tune != nil {
			tune(&cfg)
		}
		nodes = append(nodes, open(t, cfg, newMemStore(), &countApplier{}))
	}
	nodes[0].awaitLeadership(t)
	for _, n := range nodes[1:] {
		// Joining through a follower exercises forwarding of membership changes.
		via := nodes[0]
		if n.cfg.ID == "n3" {
			via = nodes[1]
		}
		if err := via.Join(ctxT(t), n.cfg.ID, n.Addr()); err != nil {
			t.Fatalf("join %s via %s: %v", n.cfg.ID, via.cfg.ID, err)
		}
	}
	readAvailable(t, nodes[2].Node) // linearizable: n3 has applied its own join
	members, err := nodes[2].Members()
	if err != nil || len(members) != 3 {
		t.Fatalf("members = %v, %v", members, err)
	}
	return nodes
}

func leaderOf(t testing.TB, nodes []*testNode) *testNode {
	t.Helper()
	for _, n := range nodes {
		if n.IsLeader() {
			return n
		}
	}
	t.Fatal("no leader")
	return nil
}

func mustPropose(t *testing.T, n *Node, id string, bytes int) *kms.Result {
	t.Helper()
	res, err := n.Propose(ctxT(t), ingest(id, bytes))
	if err != nil {
		t.Fatalf("propose %s on %s: %v", id, n.ID(), err)
	}
	return res
}

func TestClusterReplicationAndForwarding(t *testing.T) {
	ca := newTestCA(t, "site-A CA")
	nodes := startSite(t, ca, nil)
	leader := nodes[0]
	follower := nodes[2]
	if follower.IsLeader() {
		t.Fatal("n3 should be a follower right after joining")
	}

	var want int64
	tests := []struct {
		name    string
		via     *testNode
		bytes   int
		wantErr error
	}{
		{"on leader", leader, 5, nil},
		{"forwarded from follower", follower, 7, nil},
		{"forwarded rejection keeps its kind", follower, -1, kms.ErrBadRequest},
		{"rejection on leader", leader, -1, kms.ErrBadRequest},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("r%d", i)
			res := mustPropose(t, tc.via.Node, id, tc.bytes)
			if !errors.Is(res.Err, tc.wantErr) || (tc.wantErr == nil) != (res.Err == nil) {
				t.Fatalf("res.Err = %v, want %v", res.Err, tc.wantErr)
			}
			if tc.wantErr == nil {
				want += int64(tc.bytes)
				if len(res.Keys) != 1 || res.Keys[0].ID != id || string(res.Keys[0].Bytes) != fmt.Sprint(want) {
					t.Fatalf("result keys = %+v, want %s with total %d", res.Keys, id, want)
				}
			}
			for _, n := range nodes {
				if got := readAvailable(t, n.Node); got != want {
					t.Fatalf("linearizable read on %s = %d, want %d", n.cfg.ID, got, want)
				}
			}
		})
	}
	// A retry of a forwarded request with the same ReqID is deduplicated by the machine.
	res := mustPropose(t, follower.Node, "r1", 7)
	if res.Err != nil || string(res.Keys[0].Bytes) != "12" {
		t.Fatalf("retry result = %+v", res)
	}
	if got := readAvailable(t, leader.Node); got != want {
		t.Fatalf("retry applied twice: %d, want %d", got, want)
	}
	// Removal through a follower is forwarded to the leader.
	if err := nodes[1].Remove(ctxT(t), "n3"); err != nil {
		t.Fatal(err)
	}
	members, err := leader.Members()
	if err != nil || len(members) != 2 {
		t.Fatalf("members after removing n3: %v, %v", members, err)
	}
	for _, m := range members {
		if m.ID == "n3" {
			t.Fatalf("n3 still a member: %v", members)
		}
	}
}

func TestClusterLeaderKilled(t *testing.T) {
	ca := newTestCA(t, "site-A CA")
	nodes := startSite(t, ca, nil)
	mustPropose(t, nodes[1].Node, "before", 10)
	old := leaderOf(t, nodes)
	// Kill: shut raft down without handing over leadership, as a crash would.
	if err := old.raft.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	var survivors []*testNode
	for _, n := range nodes {
		if n != old {
			survivors = append(survivors, n)
		}
	}
	start := time.Now()
	// Propose waits for the new leader through the survivors' leader observations.
	mustPropose(t, survivors[0].Node, "after", 5)
	t.Logf("new leader served %v after the old one died", time.Since(start))
	for _, n := range survivors {
		if got := readAvailable(t, n.Node); got != 15 {
			t.Fatalf("%s available = %d, want 15", n.cfg.ID, got)
		}
	}
	if id, _ := survivors[1].Leader(); id == old.cfg.ID || id == "" {
		t.Fatalf("leader after kill = %q", id)
	}
}

func TestClusterLaggingFollowerInstallsSnapshot(t *testing.T) {
	ca := newTestCA(t, "site-A CA")
	nodes := startSite(t, ca, func(c *Config) {
		c.TrailingLogs = 4
		c.SnapshotThreshold = 8
		c.MaxInflight = 1
	})
	lag := nodes[2]
	mustPropose(t, nodes[0].Node, "first", 1)
	if got := readAvailable(t, lag.Node); got != 1 {
		t.Fatalf("lagging node before stop: %d", got)
	}
	if err := lag.Close(); err != nil {
		t.Fatal(err)
	}
	const more = 40
	for i := range more {
		mustPropose(t, nodes[0].Node, fmt.Sprintf("m%d", i), 2)
	}
	leader := leaderOf(t, nodes[:2])
	if err := leader.Snapshot(); err != nil {
		t.Fatal(err)
	}
	first, _ := leader.logs.FirstIndex()
	if applied, _ := lag.store.AppliedIndex(); first <= applied+1 {
		t.Fatalf("log not compacted past the lagging node (first %d, its applied %d)", first, applied)
	}
	lag = open(t, lag.cfg, lag.store, lag.app)
	if got := readAvailable(t, lag.Node); got != 1+2*more {
		t.Fatalf("lagging node after catch-up: %d, want %d", got, 1+2*more)
	}
	if lag.store.restores.Load() == 0 {
		t.Fatal("the lagging node caught up without installing a snapshot")
	}
}

func TestForeignCARefused(t *testing.T) {
	site := newTestCA(t, "site-A CA")
	foreign := newTestCA(t, "site-B CA")
	cfg := testConfig(t, site, "n1")
	cfg.Bootstrap = true
	n := open(t, cfg, newMemStore(), &countApplier{})
	n.awaitLeadership(t)

	foreignCfg := foreign.nodeTLS(t, "KME-A")
	trustsSite := foreignCfg.Clone()
	trustsSite.RootCAs = site.pool
	tests := []struct {
		name string
		tls  *tls.Config
	}{
		{"foreign certificate, trusting the site CA", trustsSite},
		{"foreign certificate and CA", foreignCfg},
		{"no client certificate", &tls.Config{RootCAs: site.pool}},
		{"same CA, another site's KME", site.nodeTLS(t, "KME-B")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, proto := range []byte{protoRaft, protoForward} {
				c, err := tls.Dial("tcp", n.Addr(), tc.tls)
				if err != nil {
					continue // refused at handshake
				}
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, werr := c.Write([]byte{proto})
				if werr == nil {
					werr = writeFrame(c, &wireRequest{Op: opPropose, Batch: mustEncode(t, ingest("x", 1000))})
				}
				var resp wireResponse
				if werr == nil && readFrame(c, &resp) == nil {
					t.Fatalf("protocol %q: a node of another CA got an answer: %+v", proto, resp)
				}
				_ = c.Close()
			}
		})
	}
	// The node's own stream layer refuses to dial a node whose certificate it cannot verify.
	for _, intruder := range []*tls.Config{foreign.nodeTLS(t, "KME-A"), site.nodeTLS(t, "KME-B")} {
		icfg := testConfig(t, site, "intruder")
		icfg.TLS = intruder
		in := open(t, icfg, newMemStore(), &countApplier{})
		if c, err := n.sl.Dial(hraft.ServerAddress(in.Addr()), time.Second); err == nil {
			_ = c.Close()
			t.Fatal("dialled a node that is not of this site")
		}
		// Joining it is refused before the configuration changes.
		if err := n.Join(ctxT(t), "intruder", in.Addr()); !errors.Is(err, ErrJoinRefused) {
			t.Fatalf("join of a foreign node: %v, want ErrJoinRefused", err)
		}
	}
	if members, _ := n.Members(); len(members) != 1 {
		t.Fatalf("members after refused join: %v", members)
	}
	mustPropose(t, n.Node, "still-serving", 1)
	if got := readAvailable(t, n.Node); got != 1 {
		t.Fatalf("state = %d, want 1 (only our own proposal)", got)
	}
}

func mustEncode(t *testing.T, cmds ...*kms.Command) []byte {
	t.Helper()
	b, err := encodeBatch(cmds)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadWithoutQuorumFails checks a read on a node cut off from its site ends with
// ErrNoLeader at the caller's deadline rather than answering from a stale state.
func TestReadWithoutQuorumFails(t *testing.T) {
	ca := newTestCA(t, "site-A CA")
	nodes := startSite(t, ca, nil)
	for _, n := range nodes[:2] {
		if err := n.raft.Shutdown().Error(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	err := nodes[2].Read(ctx, func(kms.Tx) error { return nil })
	if !errors.Is(err, ErrNoLeader) && !errors.Is(err, hraft.ErrNotLeader) {
		t.Fatalf("read without quorum: %v", err)
	}
	_, err = nodes[2].Propose(ctx, ingest("q", 1))
	if err == nil {
		t.Fatal("propose without quorum succeeded")
	}
}

// Followers' proposals reach the leader's own group commit: a group forwarded from a follower
// stays consecutive even when it shares a log entry with the leader's proposals and those of
// the other follower, and every command is applied once.
func TestForwardedGroupsConsecutive(t *testing.T) {
	ca := newTestCA(t, "site-A CA")
	nodes := startSite(t, ca, nil)
	const callers, rounds, size = 6, 8, 4
	var wg sync.WaitGroup
	errs := make(chan error, callers*rounds)
	for c := range callers {
		via := nodes[c%len(nodes)].Node // the leader and both followers
		wg.Go(func() {
			for i := range rounds {
				cmds := make([]*kms.Command, size)
				for j := range cmds {
					cmds[j] = ingest(fmt.Sprintf("f-%d-%d-%d", c, i, j), 1)
				}
				res, err := via.ProposeAll(ctxT(t), cmds)
				if err == nil {
					err = consecutive(cmds, res)
				}
				if err != nil {
					errs <- fmt.Errorf("caller %d group %d: %w", c, i, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, n := range nodes {
		if got, want := readAvailable(t, n.Node), int64(callers*rounds*size); got != want {
			t.Fatalf("available on %s = %d, want %d", n.cfg.ID, got, want)
		}
	}
}
