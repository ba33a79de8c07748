package site

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/qkms/qkms/api/etsi014"
)

// Two 3-node sites: keys flow through any node, and survive the loss of a site's leader.
func TestThreeNodeSitesFailover(t *testing.T) {
	tp := threeNodePair(t, 4, 8192)
	ctx := context.Background()
	a, b := tp.Nodes[0], tp.Nodes[1]

	// Issue through a follower of A; fetch through a follower of B.
	enc := nodeClient(tp, a[2], "SAE-A1")
	before, err := enc.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 4})
	if err != nil {
		for i, n := range a {
			id, _ := n.rn.Leader()
			t.Logf("A node %d leader=%v sees leader %s available=%d applied=%d", i, n.rn.IsLeader(), id, n.Available("KME-B"), n.rn.AppliedIndex())
		}
		t.Fatal(err)
	}

	// Kill A's leader; the survivors elect a new one and keep serving.
	leader := leaderOf(t, a)
	a[leader].Close()
	survivor := a[(leader+1)%3]

	after, err := nodeClient(tp, survivor, "SAE-A1").GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 4})
	if err != nil {
		t.Fatalf("enc_keys after leader loss: %v", err)
	}
	dec := nodeClient(tp, b[1], "SAE-B1")
	for _, k := range append(before, after...) {
		got, err := dec.GetKeyWithIDs(ctx, "SAE-A1", []string{k.ID})
		if err != nil {
			t.Fatalf("dec_keys %s: %v", k.ID, err)
		}
		if !bytes.Equal(got[0].Bytes, k.Bytes) {
			t.Fatalf("key %s differs between the sites", k.ID)
		}
	}
	// All surviving nodes of B hold the same state once they have applied the same log.
	waitSameDigest(t, b)
}

// The site's leader pushes the reservations of every Issue it applies, also of those proposed
// through a follower: one push loop per site batches them all, and followers push nothing.
func TestLeaderPushesFollowersIssues(t *testing.T) {
	tp := threeNodePair(t, 2, 4096)
	a, b := tp.Nodes[0], tp.Nodes[1]
	leader := leaderOf(t, a)
	accepted := func(n *Node) float64 {
		return max(0, scrape(t, n, "qkms_peer_pushed_reservations_total", `peer="KME-B"`, `result="accepted"`))
	}
	var before [3]float64
	for i, n := range a {
		before[i] = accepted(n)
	}
	var ids []string
	for k := 1; k <= 2; k++ { // both followers
		follower := a[(leader+k)%3]
		keys, err := nodeClient(tp, follower, "SAE-A1").GetKey(context.Background(), "SAE-B1", etsi014.KeyRequest{Number: 3})
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range keys {
			ids = append(ids, key.ID)
		}
	}
	for _, n := range b {
		waitReservations(t, n, ids...)
	}
	for i, n := range a {
		got := accepted(n)
		switch {
		case i == leader && got < before[i]+float64(len(ids)):
			t.Errorf("leader: %g reservations accepted by the peer, want at least %g", got, before[i]+float64(len(ids)))
		case i != leader && got != before[i]:
			t.Errorf("follower %d pushed %g reservations itself", i, got-before[i])
		}
	}
}

// threeNodePair starts two 3-node sites (unless -short: six nodes take a while) with key, as
// keyedPair.
func threeNodePair(t *testing.T, blocks, size int) *testPair {
	t.Helper()
	if testing.Short() {
		t.Skip("starts six nodes")
	}
	return keyedPair(t, 3, blocks, size)
}

// leaderOf returns the index of the node of site that leads it, as raft last told the node.
func leaderOf(t *testing.T, site []*Node) int {
	t.Helper()
	for i, n := range site {
		if n.leading.Load() {
			return i
		}
	}
	t.Fatal("the site has no leader")
	return -1
}

func nodeClient(tp *testPair, n *Node, sae string) *etsi014.Client {
	tp.t.Helper()
	return tp.clientAt(n.ETSI014Addr(), sae)
}

// waitSameDigest waits until every node reports the same applied index and state digest.
func waitSameDigest(t *testing.T, nodes []*Node) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var first []byte
		same := true
		for _, n := range nodes {
			_, d, err := n.StateDigest()
			if err != nil {
				t.Fatal(err)
			}
			if first == nil {
				first = d
			} else if !bytes.Equal(first, d) {
				same = false
			}
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("nodes of a site did not converge to the same state")
		}
		time.Sleep(100 * time.Millisecond) // followers apply asynchronously; poll until they catch up
	}
}
