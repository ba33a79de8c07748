package site

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qkms/qkms/api/etsi014"
	"github.com/qkms/qkms/identity"
	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/peer"
	"github.com/qkms/qkms/pki"
	"github.com/qkms/qkms/pq"
)

// pool reads site i's pool of the other site.
func (tp *testPair) pool(i int) kms.Pool {
	tp.t.Helper()
	n := tp.Sites[i]
	var p kms.Pool
	if err := n.rn.ReadStale(func(tx kms.Tx) error {
		var err error
		p, err = n.machine.PoolInfo(tx, tp.Sites[1-i].KMEID())
		return err
	}); err != nil {
		tp.t.Fatal(err)
	}
	return p
}

// waitEpoch waits until both sites hold the same current PQ epoch (the first-sorting site runs
// the exchange from its leader loop; there is no notification to wait on, so this polls).
func (tp *testPair) waitEpoch() string {
	tp.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		pa, pb := tp.pool(0), tp.pool(1)
		a, b := pa.CurrentEpoch(), pb.CurrentEpoch()
		if a != nil && b != nil && a.ID == b.ID {
			return a.ID
		}
		time.Sleep(20 * time.Millisecond)
	}
	tp.t.Fatal("no PQ epoch agreed within 20s")
	return ""
}

func provOf(k etsi014.DeliveredKey) string {
	s, _ := k.Extension["qkms_provenance"].(string)
	return s
}

func withPolicy(mode string) func(*PairConfig) {
	return func(c *PairConfig) { c.DefaultPolicy = mode }
}

// qkdBytes reads, at site i before the fetch, the QKD bytes a reservation names.
func (tp *testPair) qkdBytes(i int, keyID string) []byte {
	tp.t.Helper()
	n := tp.Sites[i]
	var out []byte
	err := n.db.View(func(tx kms.Tx) error {
		r, err := tx.Reservation(keyID)
		if err != nil || r == nil {
			return errors.Join(err, errors.New("no reservation"))
		}
		for _, rg := range r.Ranges {
			b, err := tx.ReadMaterial(r.Peer, rg.Block, rg.Off, rg.Len)
			if err != nil {
				return err
			}
			out = append(out, b...)
		}
		return nil
	})
	if err != nil {
		tp.t.Fatal(err)
	}
	return out
}

func TestHybridKeys(t *testing.T) {
	tp := newTestPair(t, withPolicy(PolicyHybrid))
	tp.ingest(4, 4096)
	tp.waitKey(1024)
	epoch := tp.waitEpoch()
	ctx := context.Background()
	a1, b1 := tp.client(0, "SAE-A1"), tp.client(1, "SAE-B1")
	keys, err := a1.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 4, Size: 256})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range keys {
		ids = append(ids, k.ID)
	}
	qkd := make([][]byte, len(ids))
	for i, id := range ids {
		tp.pushed(id)
		qkd[i] = tp.qkdBytes(1, id)
	}
	got, err := b1.GetKeyWithIDs(ctx, "SAE-A1", ids)
	if err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		if provOf(keys[i]) != "hybrid" || provOf(got[i]) != "hybrid" {
			t.Fatalf("provenance %q / %q, want hybrid", provOf(keys[i]), provOf(got[i]))
		}
		if !bytes.Equal(keys[i].Bytes, got[i].Bytes) {
			t.Fatalf("hybrid key %d differs between the sites", i)
		}
		if len(qkd[i]) != 32 || bytes.Equal(keys[i].Bytes, qkd[i]) {
			t.Fatalf("hybrid key %d equals the QKD bytes of its ranges", i)
		}
	}
	pa := tp.pool(0)
	if e := pa.CurrentEpoch(); e == nil || e.ID != epoch || e.Keys < 4 {
		t.Fatalf("epoch key count not kept: %+v", e)
	}
}

// pushed waits until site B stored the reservation of keyID (pushed by A).
func (tp *testPair) pushed(keyID string) {
	tp.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var r *kms.Reservation
		tp.Sites[1].db.View(func(tx kms.Tx) error { r, _ = tx.Reservation(keyID); return nil })
		if r != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	tp.t.Fatalf("reservation %s never reached site B", keyID)
}

func TestPQCFallbackWhilePaused(t *testing.T) {
	tp := newTestPair(t, withPolicy(PolicyPQCFallback))
	tp.ingest(4, 4096)
	tp.waitKey(1024)
	tp.waitEpoch()
	ctx := context.Background()
	a1, b1 := tp.client(0, "SAE-A1"), tp.client(1, "SAE-B1")
	a, b := tp.Sites[0], tp.Sites[1]
	for _, step := range []struct {
		paused bool
		want   string
	}{{false, "qkd"}, {true, "pqc"}, {false, "qkd"}} {
		if err := a.SetLinkPaused(ctx, b.KMEID(), step.paused, "test", ""); err != nil {
			t.Fatal(err)
		}
		before := tp.pool(0).Available
		keys, err := a1.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 2, Size: 256})
		if err != nil {
			t.Fatalf("paused=%v: %v", step.paused, err)
		}
		got, err := b1.GetKeyWithIDs(ctx, "SAE-A1", []string{keys[0].ID, keys[1].ID})
		if err != nil {
			t.Fatalf("paused=%v dec_keys: %v", step.paused, err)
		}
		for i := range keys {
			if provOf(keys[i]) != step.want || provOf(got[i]) != step.want || !bytes.Equal(keys[i].Bytes, got[i].Bytes) {
				t.Fatalf("paused=%v key %d: provenance %q/%q (want %s), equal %v", step.paused, i,
					provOf(keys[i]), provOf(got[i]), step.want, bytes.Equal(keys[i].Bytes, got[i].Bytes))
			}
		}
		if used := before - tp.pool(0).Available; (step.want == "pqc") != (used == 0) {
			t.Fatalf("paused=%v: %d bytes of QKD key used", step.paused, used)
		}
	}
}

func TestQKDOnlyRefusesWhilePaused(t *testing.T) {
	tp := newTestPair(t, nil) // default policy: qkd-only
	tp.ingest(2, 4096)
	tp.waitKey(1024)
	ctx := context.Background()
	a1 := tp.client(0, "SAE-A1")
	st, err := a1.Status(ctx, "SAE-B1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Sites[0].SetLinkPaused(ctx, tp.Sites[1].KMEID(), true, "test", "maintenance"); err != nil {
		t.Fatal(err)
	}
	_, err = a1.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 1})
	var ae *etsi014.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusServiceUnavailable || !strings.Contains(ae.Message, "qkd-only") {
		t.Fatalf("paused qkd-only: %v, want 503 naming the policy", err)
	}
	after, err := a1.Status(ctx, "SAE-B1")
	if err != nil {
		t.Fatal(err)
	}
	if after.StoredKeyCount != st.StoredKeyCount {
		t.Fatalf("stored_key_count %d -> %d after a refused request", st.StoredKeyCount, after.StoredKeyCount)
	}
}

// rejectedAudits counts the refused peer messages in site i's audit trail.
func (tp *testPair) rejectedAudits(i int) int {
	tp.t.Helper()
	count := 0
	tp.Sites[i].db.View(func(tx kms.Tx) error {
		return tx.Audit(1, func(e *kms.AuditEntry) bool {
			if e.Event == kms.EventAdmin && strings.Contains(e.Detail, "rejected") && strings.HasPrefix(e.Actor, "kme:") {
				count++
			}
			return true
		})
	})
	return count
}

func TestForgedPeerMessagesRejected(t *testing.T) {
	tp := newTestPair(t, nil)
	a, b := tp.Sites[0], tp.Sites[1]
	kmeCert, _ := tp.Layout.Find(a.KMEID())
	tlsCfg, err := pki.ClientConfig(kmeCert.Cert, kmeCert.Key, tp.Layout.CACert)
	if err != nil {
		t.Fatal(err)
	}
	mallory, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		opts []peer.ClientOption
	}{
		{"unsigned (mTLS only)", nil},
		{"signed by another ML-DSA key", []peer.ClientOption{peer.WithAuthenticator(&peer.Authenticator{
			Self: a.KMEID(), Signer: mallory, PeerKey: a.peerIdentity, Guard: pq.NewReplayGuard(pq.DefaultWindow, 16)})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tp.rejectedAudits(1)
			c, err := peer.Dial(b.PeerAddr(), tlsCfg, b.KMEID(), tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.PullReservations(ctx, []string{"6f2c1c44-54f4-4d5c-9b4e-2f0b9d1d1a01"})
			if status.Code(errors.Unwrap(err)) != codes.Unauthenticated && !strings.Contains(err.Error(), "Unauthenticated") {
				t.Fatalf("got %v, want Unauthenticated", err)
			}
			deadline := time.Now().Add(5 * time.Second) // the audit entry is proposed in the background
			for tp.rejectedAudits(1) == before {
				if time.Now().After(deadline) {
					t.Fatal("refused peer message not audited")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestTamperedEpochReplyYieldsNoEpoch(t *testing.T) {
	tp := newTestPair(t, withPolicy(PolicyHybrid))
	first := tp.waitEpoch()
	a, b := tp.Sites[0], tp.Sites[1]
	ctx := context.Background()
	in, offer, err := pq.NewExchange(a.KMEID(), b.KMEID())
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var replyB []byte
	if err := a.withPeer(b.KMEID(), func(c *peer.Client) error {
		replyB, err = c.OfferEpoch(ctx, offer.Marshal())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	reply, err := pq.ParseReply(replyB)
	if err != nil {
		t.Fatal(err)
	}
	reply.Ciphertext[len(reply.Ciphertext)/2] ^= 0x40
	err = a.finishExchange(ctx, b.KMEID(), in, reply.Marshal())
	if !errors.Is(err, pq.ErrConfirmation) {
		t.Fatalf("tampered reply: %v, want a confirmation failure", err)
	}
	for i := range 2 {
		if p := tp.pool(i); len(p.Epochs) != 1 || p.Epochs[0].ID != first {
			t.Fatalf("site %d epochs after a failed exchange: %+v", i, p.Epochs)
		}
	}
}

// TestPushesUnderMACKey: once both sites hold a PQ epoch recorded macSendAfter ago, pushes and
// their answers travel in MAC envelopes under its key (counted by qkms_peer_envelopes_total),
// and the keys arrive intact.
func TestPushesUnderMACKey(t *testing.T) {
	tp := keyedPair(t, 1, 2, 4096)
	id := tp.waitEpoch()
	a, b := tp.Sites[0], tp.Sites[1]
	// Sending under the key waits for the epoch's age, which nothing notifies: poll.
	deadline := time.Now().Add(macSendAfter + 20*time.Second)
	for a.macSendKey("KME-B") == nil || b.macSendKey("KME-A") == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no MAC key to send under %s after the epoch", macSendAfter+20*time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ka, kb := a.macSendKey("KME-B"), b.macSendKey("KME-A"); ka.ID != id || kb.ID != id || a.macKeyByID("KME-B", id) != ka {
		t.Fatalf("MAC keys of epochs %s and %s, want %s", ka.ID, kb.ID, id)
	}
	if a.macKeyByID("KME-B", "no-such-epoch") != nil || a.macKeyByID("KME-C", id) != nil {
		t.Fatal("a MAC key for an unknown epoch or KME")
	}
	macA0, _ := a.pq.auth.Sealed()
	macB0, _ := b.pq.auth.Sealed()
	ctx := context.Background()
	keys, err := tp.client(0, "SAE-A1").GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 3})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{keys[0].ID, keys[1].ID, keys[2].ID}
	waitReservations(t, b, ids...)
	got, err := tp.client(1, "SAE-B1").GetKeyWithIDs(ctx, "SAE-A1", ids)
	if err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		if got[i].ID != keys[i].ID || !bytes.Equal(got[i].Bytes, keys[i].Bytes) {
			t.Fatalf("key %d differs between the sites", i)
		}
	}
	macA1, _ := a.pq.auth.Sealed()
	macB1, _ := b.pq.auth.Sealed()
	if macA1 <= macA0 || macB1 <= macB0 {
		t.Fatalf("MAC envelopes: KME-A %d -> %d (pushes), KME-B %d -> %d (answers); want more at both", macA0, macA1, macB0, macB1)
	}
	if m := scrape(t, a, "qkms_peer_envelopes_total", `kind="mac"`); m < float64(macA1) {
		t.Fatalf("qkms_peer_envelopes_total{kind=\"mac\"} = %g, want at least %d", m, macA1)
	}
}
