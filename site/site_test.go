package site

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/qkms/qkms/api/etsi014"
	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/peer"
	"github.com/qkms/qkms/pki"
)

// testPair is two sites on loopback with no simulated link: tests ingest identical random blocks
// at both ends themselves, which is what a link does.
type testPair struct {
	*Pair
	t   testing.TB
	seq uint64
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

func newTestPair(t testing.TB, mod func(*PairConfig)) *testPair {
	t.Helper()
	cfg := PairConfig{
		Dir:    t.TempDir(),
		KMEs:   [2]string{"KME-A", "KME-B"},
		SAEs:   [2][]string{{"SAE-A1", "SAE-A2"}, {"SAE-B1", "SAE-B2", "SAE-B3"}},
		Logger: quietLogger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := StartPair(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return &testPair{Pair: p, t: t}
}

// ingest gives both sites the same n blocks of size bytes, like the two ends of a link.
func (tp *testPair) ingest(n, size int) {
	tp.t.Helper()
	a, b := tp.Sites[0], tp.Sites[1]
	for i := 0; i < n; i++ {
		blk := make([]byte, size)
		rand.Read(blk)
		id := fmt.Sprintf("blk-%d", tp.seq)
		if err := a.Ingest(context.Background(), b.KMEID(), id, tp.seq, bytes.Clone(blk), 0.02); err != nil {
			tp.t.Fatal(err)
		}
		if err := b.Ingest(context.Background(), a.KMEID(), id, tp.seq, blk, 0.02); err != nil {
			tp.t.Fatal(err)
		}
		tp.seq++
	}
}

// keyedPair starts two sites of nodes nodes each, ingests blocks blocks of size bytes and
// waits until an eighth of it can be issued.
func keyedPair(t *testing.T, nodes, blocks, size int) *testPair {
	t.Helper()
	tp := newTestPair(t, func(c *PairConfig) { c.NodesPerSite = nodes })
	tp.ingest(blocks, size)
	tp.waitKey(int64(blocks * size / 8))
	return tp
}

func (tp *testPair) waitKey(min int64) {
	tp.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tp.WaitForKey(ctx, min); err != nil {
		tp.t.Fatal(err)
	}
}

// waitApplied waits, re-checking after every entry node n applies, until done reports true.
func waitApplied(t testing.TB, n *Node, what string, done func() (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		changed := n.rn.AppliedChanged()
		ok, err := done()
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("%s: not after 30 s", what)
		}
	}
}

// waitReservations waits until node n stores the reservations of ids (pushed to it).
func waitReservations(t testing.TB, n *Node, ids ...string) {
	t.Helper()
	waitApplied(t, n, "reservations pushed", func() (bool, error) {
		missing, err := n.db.MissingReservations(ids)
		return len(missing) == 0, err
	})
}

// issueUnpushed issues keys with these IDs at site a (a one-node site) for SAE-B1, proposed
// directly while a does not know it leads, so that nothing is queued for the push loop: as
// when a leader commits an Issue just before raft tells it that it leads, or crashes right
// after committing.
func issueUnpushed(t testing.TB, a, b *Node, ids []string) *kms.Result {
	t.Helper()
	if !a.leading.Swap(false) {
		t.Fatal("issueUnpushed: site a's node is not its leader")
	}
	defer a.leading.Store(true)
	res, err := a.propose(context.Background(), &kms.Command{Issue: &kms.IssueCmd{
		Self: a.KMEID(), Peer: b.KMEID(), Master: "SAE-A1", Slaves: []string{"SAE-B1"},
		Bits: 256, KeyIDs: ids, Expires: time.Now().Add(time.Minute), Provenance: kms.ProvenanceQKD,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func newKeyIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = newKeyID()
	}
	return ids
}

// client is an ETSI 014 client of site i as the SAE sae.
func (tp *testPair) client(i int, sae string) *etsi014.Client {
	tp.t.Helper()
	return tp.clientAt(tp.Sites[i].ETSI014Addr(), sae)
}

// clientAt is an ETSI 014 client of the node listening at addr, as the SAE sae.
func (tp *testPair) clientAt(addr, sae string) *etsi014.Client {
	tp.t.Helper()
	e, ok := tp.Layout.Find(sae)
	if !ok {
		tp.t.Fatalf("no certificate for %s", sae)
	}
	cfg, err := pki.ClientConfig(e.Cert, e.Key, tp.Layout.CACert)
	if err != nil {
		tp.t.Fatal(err)
	}
	return etsi014.NewClient("https://"+addr, cfg)
}

func statusCode(err error) int {
	var ae *etsi014.APIError
	if errors.As(err, &ae) {
		return ae.StatusCode
	}
	return 0
}

func TestKeyDeliveredAcrossSites(t *testing.T) {
	tp := newTestPair(t, nil)
	tp.ingest(4, 4096)
	tp.waitKey(1024)
	ctx := context.Background()
	a1, b1 := tp.client(0, "SAE-A1"), tp.client(1, "SAE-B1")

	// Both directions: each site issues from the blocks it owns.
	for _, dir := range []struct {
		enc, dec      *etsi014.Client
		master, slave string
	}{{a1, b1, "SAE-A1", "SAE-B1"}, {b1, a1, "SAE-B1", "SAE-A1"}} {
		keys, err := dir.enc.GetKey(ctx, dir.slave, etsi014.KeyRequest{Number: 3, Size: 512})
		if err != nil {
			t.Fatalf("%s enc_keys: %v", dir.master, err)
		}
		if len(keys) != 3 || len(keys[0].Bytes) != 64 {
			t.Fatalf("got %d keys of %d bytes, want 3 of 64", len(keys), len(keys[0].Bytes))
		}
		ids := []string{keys[0].ID, keys[1].ID, keys[2].ID}
		got, err := dir.dec.GetKeyWithIDs(ctx, dir.master, ids)
		if err != nil {
			t.Fatalf("%s dec_keys: %v", dir.slave, err)
		}
		for i := range keys {
			if got[i].ID != keys[i].ID || !bytes.Equal(got[i].Bytes, keys[i].Bytes) {
				t.Fatalf("key %d differs between the sites", i)
			}
			if bytes.Equal(keys[i].Bytes, make([]byte, 64)) {
				t.Fatal("all-zero key")
			}
		}
		// A second fetch of the same IDs fails with 400, as the keys were removed.
		if _, err := dir.dec.GetKeyWithIDs(ctx, dir.master, ids[:1]); statusCode(err) != http.StatusBadRequest {
			t.Fatalf("second fetch: %v, want 400", err)
		}
	}
}

func TestOnlyNamedSlavesFetch(t *testing.T) {
	tp := newTestPair(t, nil)
	tp.ingest(2, 4096)
	tp.waitKey(512)
	ctx := context.Background()
	a1, b1, b2, b3 := tp.client(0, "SAE-A1"), tp.client(1, "SAE-B1"), tp.client(1, "SAE-B2"), tp.client(1, "SAE-B3")

	keys, err := a1.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 1})
	if err != nil {
		t.Fatal(err)
	}
	// A third SAE is refused (401) and that consumes nothing: the named slave still gets it.
	if _, err := b2.GetKeyWithIDs(ctx, "SAE-A1", []string{keys[0].ID}); statusCode(err) != http.StatusUnauthorized {
		t.Fatalf("third SAE: %v, want 401", err)
	}
	got, err := b1.GetKeyWithIDs(ctx, "SAE-A1", []string{keys[0].ID})
	if err != nil || !bytes.Equal(got[0].Bytes, keys[0].Bytes) {
		t.Fatalf("named slave after a refused third SAE: %v", err)
	}

	// Multicast: each additional slave fetches the same key once.
	keys, err = a1.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 1, AdditionalSlaveSAEIDs: []string{"SAE-B2"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*etsi014.Client{b1, b2} {
		got, err := c.GetKeyWithIDs(ctx, "SAE-A1", []string{keys[0].ID})
		if err != nil || !bytes.Equal(got[0].Bytes, keys[0].Bytes) {
			t.Fatalf("multicast slave: %v", err)
		}
	}
	if _, err := b3.GetKeyWithIDs(ctx, "SAE-A1", []string{keys[0].ID}); err == nil {
		t.Fatal("an SAE not named in the multicast fetched the key")
	}
}

func TestRejectedRequestsConsumeNothing(t *testing.T) {
	tp := newTestPair(t, nil)
	tp.ingest(2, 4096)
	tp.waitKey(512)
	ctx := context.Background()
	a1, b1 := tp.client(0, "SAE-A1"), tp.client(1, "SAE-B1")
	stored := func() int {
		st, err := a1.Status(ctx, "SAE-B1")
		if err != nil {
			t.Fatal(err)
		}
		return st.StoredKeyCount
	}
	before := stored()
	if before == 0 {
		t.Fatal("no stored keys before the test")
	}
	bad := []struct {
		name string
		call func() error
		code int
	}{
		{"size not multiple of 8", func() error {
			_, err := a1.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 1, Size: 255})
			return err
		}, 400},
		{"size above max", func() error {
			_, err := a1.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 1, Size: 1 << 20})
			return err
		}, 400},
		{"too many keys", func() error {
			_, err := a1.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 100000})
			return err
		}, 400},
		{"unknown slave", func() error {
			_, err := a1.GetKey(ctx, "SAE-Z9", etsi014.KeyRequest{Number: 1})
			return err
		}, 400},
		{"more key than stored", func() error {
			_, err := a1.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 128, Size: 8192})
			return err
		}, 503},
		{"unknown key ID", func() error {
			_, err := b1.GetKeyWithIDs(ctx, "SAE-A1", []string{"7b9c5f8e-0000-4000-8000-000000000000"})
			return err
		}, 400},
	}
	for _, tc := range bad {
		if code := statusCode(tc.call()); code != tc.code {
			t.Errorf("%s: status %d, want %d", tc.name, code, tc.code)
		}
		if after := stored(); after != before {
			t.Fatalf("%s: stored_key_count %d -> %d", tc.name, before, after)
		}
	}
}

// A dec_keys that reaches the slave's site before the reservation was pushed pulls it.
func TestFetchBeforePush(t *testing.T) {
	tp := newTestPair(t, nil)
	tp.ingest(2, 4096)
	tp.waitKey(512)
	a, b := tp.Sites[0], tp.Sites[1]
	ctx := context.Background()
	id := "0e5a4c1e-7d1f-4f4e-9c55-0123456789ab"
	res := issueUnpushed(t, a, b, []string{id})
	got, err := tp.client(1, "SAE-B1").GetKeyWithIDs(ctx, "SAE-A1", []string{id})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[0].Bytes, res.Keys[0].Bytes) {
		t.Fatal("pulled reservation gave different bytes")
	}
}

// A block whose copies differ between the sites is discarded at both and never used.
func TestBlockMismatchDiscarded(t *testing.T) {
	tp := newTestPair(t, nil)
	a, b := tp.Sites[0], tp.Sites[1]
	ctx := context.Background()
	blk := make([]byte, 4096)
	rand.Read(blk)
	other := bytes.Clone(blk)
	other[100] ^= 1
	if err := a.Ingest(ctx, b.KMEID(), "bad", 0, blk, 0.02); err != nil {
		t.Fatal(err)
	}
	if err := b.Ingest(ctx, a.KMEID(), "bad", 0, other, 0.02); err != nil {
		t.Fatal(err)
	}
	tp.seq = 1
	tp.ingest(2, 4096) // good blocks after it, so waiting for key proves the loop ran
	tp.waitKey(512)
	// Run the verifier of both sites now rather than waiting for their loops.
	for _, n := range tp.Sites {
		n.verifyPending()
	}
	for i, n := range tp.Sites {
		var st kms.BlockState = 255
		n.db.View(func(tx kms.Tx) error {
			blk, err := tx.Block(tp.Sites[1-i].KMEID(), "bad")
			if blk != nil {
				st = blk.State
			}
			return err
		})
		if st != kms.BlockDiscarded {
			t.Fatalf("site %s: mismatching block in state %d, want discarded", n.KMEID(), st)
		}
	}
}

func TestExpiredKeyErased(t *testing.T) {
	tp := newTestPair(t, nil)
	tp.ingest(2, 4096)
	tp.waitKey(512)
	ctx := context.Background()
	keys, err := tp.client(0, "SAE-A1").GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 1})
	if err != nil {
		t.Fatal(err)
	}
	b := tp.Sites[1]
	// Make sure the reservation reached B, then expire with a clock past the key's TTL.
	waitReservations(t, b, keys[0].ID)
	res, err := b.propose(ctx, &kms.Command{Time: time.Now().Add(24 * time.Hour), Expire: &kms.ExpireCmd{Limit: 100}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Expired) == 0 {
		t.Fatal("nothing expired")
	}
	if _, err := tp.client(1, "SAE-B1").GetKeyWithIDs(ctx, "SAE-A1", []string{keys[0].ID}); statusCode(err) != 400 {
		t.Fatalf("fetch of expired key: %v, want 400", err)
	}
}

// While the sites cannot reach each other, enc_keys still issues from owned blocks and
// dec_keys answers 503 without consuming anything; once the channel is back the same keys are
// delivered.
func TestPeerChannelOutage(t *testing.T) {
	tp := newTestPair(t, nil)
	tp.ingest(2, 4096)
	tp.waitKey(512)
	a, b := tp.Sites[0], tp.Sites[1]
	aPeer, bPeer := a.PeerAddr(), b.PeerAddr()
	dead := "127.0.0.1:1" // nothing listens on port 1
	a.SetPeer(b.KMEID(), []string{dead})
	b.SetPeer(a.KMEID(), []string{dead})
	ctx := context.Background()

	keys, err := tp.client(0, "SAE-A1").GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 2})
	if err != nil {
		t.Fatalf("enc_keys with the peer unreachable: %v", err)
	}
	ids := []string{keys[0].ID, keys[1].ID}
	b1 := tp.client(1, "SAE-B1")
	if _, err := b1.GetKeyWithIDs(ctx, "SAE-A1", ids); statusCode(err) != http.StatusServiceUnavailable {
		t.Fatalf("dec_keys before the reservation reached B: %v, want 503", err)
	}

	a.SetPeer(b.KMEID(), []string{bPeer})
	b.SetPeer(a.KMEID(), []string{aPeer})
	got, err := b1.GetKeyWithIDs(ctx, "SAE-A1", ids)
	if err != nil {
		t.Fatalf("dec_keys after the outage: %v", err)
	}
	for i := range keys {
		if !bytes.Equal(got[i].Bytes, keys[i].Bytes) {
			t.Fatalf("key %d differs after the outage", i)
		}
	}
}

// The issuing site records in its log which reservations the peer acknowledged (markLoop),
// so a new leader does not push them again.
func TestPushRecorded(t *testing.T) {
	tp := keyedPair(t, 1, 2, 4096)
	keys, err := tp.client(0, "SAE-A1").GetKey(context.Background(), "SAE-B1", etsi014.KeyRequest{Number: 3})
	if err != nil {
		t.Fatal(err)
	}
	a := tp.Sites[0]
	waitApplied(t, a, "pushes recorded", func() (bool, error) {
		pushed := 0
		err := a.db.View(func(tx kms.Tx) error {
			for _, k := range keys {
				r, err := tx.Reservation(k.ID)
				if err != nil {
					return err
				}
				if r != nil && r.Pushed {
					pushed++
				}
			}
			return nil
		})
		return pushed == len(keys), err
	})
	// The peer holds them.
	waitReservations(t, tp.Sites[1], keys[0].ID, keys[1].ID, keys[2].ID)
}

// An Issue applied before its node knew it leads is not queued for push as it is applied; the
// node's leader loops push it once raft tells the node that it leads (leaderChanged).
func TestTakeoverPushesWhatWasAppliedBefore(t *testing.T) {
	tp := keyedPair(t, 1, 2, 4096)
	a, b := tp.Sites[0], tp.Sites[1]
	ids := newKeyIDs(2)
	issueUnpushed(t, a, b, ids) // applied while a did not know it leads
	if missing, err := b.db.MissingReservations(ids); err != nil || len(missing) != len(ids) {
		t.Fatalf("pushed before the takeover: missing %v (%v)", missing, err)
	}
	a.leaderChanged(true) // as raft tells a node that gains leadership
	waitReservations(t, b, ids...)
	waitApplied(t, a, "push recorded", func() (bool, error) {
		count, err := a.db.UnpushedCount()
		return count == 0, err
	})
}

// A leader pushes again what the peer has not acknowledged (requeueUnpushed), found through
// the store's index of unpushed reservations, and the index empties as the pushes are
// recorded.
func TestRequeueUnpushed(t *testing.T) {
	tp := keyedPair(t, 1, 2, 4096)
	a, b := tp.Sites[0], tp.Sites[1]
	ids := newKeyIDs(3)
	issueUnpushed(t, a, b, ids) // issued, never handed to the push loop
	unpushed := func() (got []string) {
		if err := a.db.Unpushed(func(r *kms.Reservation) bool { got = append(got, r.KeyID); return true }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := unpushed(); !slices.Equal(got, ids) {
		t.Fatalf("unpushed %v, want %v", got, ids)
	}
	if missing, err := b.db.MissingReservations(ids); err != nil || len(missing) != len(ids) {
		t.Fatalf("the peer holds reservations never pushed: missing %v (%v)", missing, err)
	}
	a.requeueUnpushed()
	if missing, err := b.db.MissingReservations(ids); err != nil || len(missing) != 0 {
		t.Fatalf("after the requeue the peer misses %v (%v)", missing, err)
	}
	if got := unpushed(); len(got) != 0 {
		t.Fatalf("after the requeue still unpushed: %v", got)
	}
}

// A push larger than the peer accepts in one call goes in several, and every reservation is
// acknowledged.
func TestPushMoreThanOneCall(t *testing.T) {
	tp := newTestPair(t, nil)
	tp.ingest(8, 1<<16)
	tp.waitKey(1 << 16)
	a, b := tp.Sites[0], tp.Sites[1]
	var rs []kms.Reservation
	for len(rs) <= peer.MaxReservations {
		rs = append(rs, issueUnpushed(t, a, b, newKeyIDs(128)).Reservations...)
	}
	acked := a.pushReservations(rs)
	if len(acked) != len(rs) {
		t.Fatalf("%d of %d reservations acknowledged", len(acked), len(rs))
	}
	ids := make([]string, len(rs))
	for i := range rs {
		ids[i] = rs[i].KeyID
	}
	missing, err := b.db.MissingReservations(ids)
	if err != nil || len(missing) != 0 {
		t.Fatalf("peer misses %d of %d reservations (%v)", len(missing), len(ids), err)
	}
}
