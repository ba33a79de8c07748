package audit_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/qkms/qkms/audit"
	"github.com/qkms/qkms/identity"
	"github.com/qkms/qkms/kms"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// chain builds a trail of n key entries the way the core does, with a checkpoint signed by
// signer after every `every` entries.
type chain struct {
	entries []*kms.AuditEntry
	head    []byte
}

func (c *chain) add(e *kms.AuditEntry) {
	if c.head == nil {
		c.head = make([]byte, kms.AuditHashSize)
	}
	e.Seq, e.Prev = uint64(len(c.entries)+1), c.head
	if e.Time.IsZero() {
		e.Time = t0.Add(time.Duration(e.Seq) * time.Millisecond)
	}
	e.Hash = kms.HashAuditEntry(e, nil)
	c.head = e.Hash
	c.entries = append(c.entries, e)
}

func (c *chain) checkpoint(t testing.TB, s *identity.Signer, kme string) {
	t.Helper()
	last := c.entries[len(c.entries)-1]
	sig, err := s.Sign(audit.CheckpointMessage(kme, last.Seq, last.Hash), audit.CheckpointContext)
	if err != nil {
		t.Fatal(err)
	}
	c.add(&kms.AuditEntry{Event: kms.EventCheckpoint, Checkpoint: &kms.AuditCheckpoint{
		KME: kme, Seq: last.Seq, Head: last.Hash, Signer: s.KeyID(), Signature: sig}})
}

func buildChain(t testing.TB, n, every int, s *identity.Signer, fk *kms.AuditKey) *chain {
	t.Helper()
	c := &chain{}
	for i := range n {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		c.add(&kms.AuditEntry{Event: kms.EventKeyIssued, Peer: "KME-B", Owner: "KME-A", KeyIDs: []string{id},
			Master: "SAE-A1", Slaves: []string{"SAE-B1"}, Bits: 256, Bytes: 32, Provenance: kms.ProvenanceQKD,
			Fingerprints: [][]byte{fk.Fingerprint(id, keyBytes(i))}})
		if every > 0 && (i+1)%every == 0 {
			c.checkpoint(t, s, "KME-A")
		}
	}
	return c
}

func keyBytes(i int) []byte {
	h := sha256.Sum256([]byte(fmt.Sprint("key", i)))
	return h[:]
}

func export(t testing.TB, entries []*kms.AuditEntry, s *identity.Signer) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := audit.NewWriter(&buf)
	for _, e := range entries {
		if err := w.Entry(e); err != nil {
			t.Fatal(err)
		}
	}
	err := w.Close("KME-A", t0.Add(time.Hour), func(msg []byte) (string, []byte, error) {
		sig, err := s.Sign(msg, audit.EndContext)
		return s.KeyID(), sig, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func mustSigner(t testing.TB) *identity.Signer {
	t.Helper()
	s, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustAuditKey(t testing.TB, b byte) *kms.AuditKey {
	t.Helper()
	k, err := kms.NewAuditKey(bytes.Repeat([]byte{b}, kms.AuditKeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func lines(b []byte) []string { return strings.SplitAfter(strings.TrimSuffix(string(b), "\n"), "\n") }

func TestVerifyGood(t *testing.T) {
	s := mustSigner(t)
	c := buildChain(t, 50, 10, s, mustAuditKey(t, 1))
	rep, err := audit.Verify(bytes.NewReader(export(t, c.entries, s)), s.Public())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 55 || rep.Checkpoints != 5 || rep.Signed != 55 || rep.KME != "KME-A" ||
		!bytes.Equal(rep.Head, c.head) || rep.Events[kms.EventKeyIssued] != 50 {
		t.Fatalf("report %+v", rep)
	}
	// An empty trail exports as a lone signed end line.
	if rep, err := audit.Verify(bytes.NewReader(export(t, nil, s)), s.Public()); err != nil || rep.Entries != 0 {
		t.Fatalf("empty export: %+v, %v", rep, err)
	}
}

// TestVerifyTampered: each way of altering an export fails at the position of the first bad
// entry (line and Seq are the same here: line n holds entry n).
func TestVerifyTampered(t *testing.T) {
	s, other := mustSigner(t), mustSigner(t)
	c := buildChain(t, 30, 10, s, mustAuditKey(t, 1))
	good := lines(export(t, c.entries, s)) // 33 entries then the end line
	join := func(ls []string) []byte { return []byte(strings.Join(ls, "")) }
	replace := func(i int, old, new string) []byte {
		ls := append([]string(nil), good...)
		if !strings.Contains(ls[i-1], old) {
			t.Fatalf("line %d has no %q", i, old)
		}
		ls[i-1] = strings.Replace(ls[i-1], old, new, 1)
		return join(ls)
	}
	// forged re-signs the checkpoint at line 11 with another key, keeping the key ID.
	forged := func() []byte {
		cc := &chain{}
		for _, e := range c.entries[:10] {
			cp := *e
			cc.add(&cp)
		}
		last := cc.entries[9]
		sig, err := other.Sign(audit.CheckpointMessage("KME-A", last.Seq, last.Hash), audit.CheckpointContext)
		if err != nil {
			t.Fatal(err)
		}
		cc.add(&kms.AuditEntry{Event: kms.EventCheckpoint, Checkpoint: &kms.AuditCheckpoint{
			KME: "KME-A", Seq: last.Seq, Head: last.Hash, Signer: s.KeyID(), Signature: sig}})
		for _, e := range c.entries[11:] {
			cp := *e
			cc.add(&cp)
		}
		return export(t, cc.entries, s)
	}
	// rehashed edits entry 5 and recomputes every hash after it: the chain is consistent but
	// the next checkpoint no longer signs it.
	rehashed := func() []byte {
		cc := &chain{}
		for i, e := range c.entries {
			cp := *e
			if i == 4 {
				cp.Master = "SAE-EVIL"
			}
			cc.add(&cp)
		}
		return export(t, cc.entries, s)
	}
	for _, tc := range []struct {
		name       string
		data       []byte
		keys       []*mldsa65.PublicKey
		line       int
		seq        uint64
		kind       error
		wantSigned uint64
	}{
		{"truncated at the end", join(good[:20]), []*mldsa65.PublicKey{s.Public()}, 21, 21, audit.ErrTruncated, 10},
		{"end line only removed", join(good[:33]), []*mldsa65.PublicKey{s.Public()}, 34, 34, audit.ErrTruncated, 32},
		{"entry deleted", join(append(append([]string{}, good[:6]...), good[7:]...)), []*mldsa65.PublicKey{s.Public()}, 7, 7, audit.ErrBroken, 0},
		{"first entry deleted", join(good[1:]), []*mldsa65.PublicKey{s.Public()}, 1, 1, audit.ErrBroken, 0},
		{"reordered", join(append(append(append([]string{}, good[:3]...), good[4], good[3]), good[5:]...)), []*mldsa65.PublicKey{s.Public()}, 4, 4, audit.ErrBroken, 0},
		{"edited bits", replace(17, `"bits":256`, `"bits":264`), []*mldsa65.PublicKey{s.Public()}, 17, 17, audit.ErrBroken, 10},
		{"edited slave", replace(3, `"SAE-B1"`, `"SAE-B2"`), []*mldsa65.PublicKey{s.Public()}, 3, 3, audit.ErrBroken, 0},
		{"edited time", replace(25, `12:00:00.025Z`, `12:00:00.026Z`), []*mldsa65.PublicKey{s.Public()}, 25, 25, audit.ErrBroken, 21},
		{"forged checkpoint", forged(), []*mldsa65.PublicKey{s.Public()}, 11, 11, audit.ErrSignature, 0},
		{"edit with hashes recomputed", rehashed(), []*mldsa65.PublicKey{s.Public()}, 11, 11, audit.ErrSignature, 0},
		{"unknown signer", join(good), []*mldsa65.PublicKey{other.Public()}, 11, 11, audit.ErrSignature, 0},
		{"added field", replace(2, `{"seq"`, `{"note":"x","seq"`), []*mldsa65.PublicKey{s.Public()}, 2, 2, audit.ErrMalformed, 0},
		{"garbage line", replace(8, `{`, `x`), []*mldsa65.PublicKey{s.Public()}, 8, 8, audit.ErrMalformed, 0},
		{"data after end", join(append(append([]string{}, good...), "\n", good[0])), []*mldsa65.PublicKey{s.Public()}, 35, 34, audit.ErrMalformed, 33},
	} {
		rep, err := audit.Verify(bytes.NewReader(tc.data), tc.keys...)
		var ve *audit.VerifyError
		if !errors.As(err, &ve) {
			t.Errorf("%s: err %v, want a VerifyError", tc.name, err)
			continue
		}
		if ve.Line != tc.line || ve.Seq != tc.seq || !errors.Is(err, tc.kind) {
			t.Errorf("%s: %v; want line %d, entry %d, %v", tc.name, err, tc.line, tc.seq, tc.kind)
		}
		if rep.Signed != tc.wantSigned {
			t.Errorf("%s: report says signed up to %d, want %d", tc.name, rep.Signed, tc.wantSigned)
		}
	}
}

func TestSameKey(t *testing.T) {
	kA, kB := mustAuditKey(t, 1), mustAuditKey(t, 2)
	key, otherKey := keyBytes(1), keyBytes(2)
	id := "00000000-0000-4000-8000-000000000001"
	for _, tc := range []struct {
		name     string
		fpA, fpB []byte
		want     bool
		wantErr  bool
	}{
		{"same key", kA.Fingerprint(id, key), kB.Fingerprint(id, key), true, false},
		{"different keys", kA.Fingerprint(id, key), kB.Fingerprint(id, otherKey), false, false},
		{"swapped sites", kB.Fingerprint(id, key), kA.Fingerprint(id, key), false, true},
		{"other key ID", kA.Fingerprint(id+"0", key), kB.Fingerprint(id, key), false, true},
		{"truncated", kA.Fingerprint(id, key)[:40], kB.Fingerprint(id, key), false, true},
	} {
		got, err := audit.SameKey(id, tc.fpA, kA, tc.fpB, kB)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: SameKey = %v, %v; want %v, error %v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
	if bytes.Equal(kA.Fingerprint(id, key), kB.Fingerprint(id, key)) {
		t.Error("two sites' fingerprints of one key are equal: they would link keys without the audit keys")
	}
}

func TestCompareSites(t *testing.T) {
	s := mustSigner(t)
	kA, kB := mustAuditKey(t, 1), mustAuditKey(t, 2)
	a := buildChain(t, 5, 0, s, kA)
	b := &chain{}
	for i := range 6 {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		k := keyBytes(i)
		if i == 2 {
			k = keyBytes(99)
		}
		b.add(&kms.AuditEntry{Event: kms.EventKeyFetched, KeyIDs: []string{id}, SAE: "SAE-B1",
			Fingerprints: [][]byte{kB.Fingerprint(id, k)}})
	}
	cmp, err := audit.CompareSites(bytes.NewReader(export(t, a.entries, s)), kA, bytes.NewReader(export(t, b.entries, s)), kB)
	if err != nil {
		t.Fatal(err)
	}
	if len(cmp.Same) != 4 || len(cmp.Different) != 1 || cmp.Different[0] != "00000000-0000-4000-8000-000000000002" ||
		len(cmp.OnlyA) != 0 || len(cmp.OnlyB) != 1 {
		t.Fatalf("comparison %+v", cmp)
	}
	if _, err := audit.CompareSites(bytes.NewReader(export(t, a.entries, s)), kB, bytes.NewReader(export(t, b.entries, s)), kB); err == nil {
		t.Fatal("fingerprints opened under the wrong audit key")
	}
}

func FuzzVerify(f *testing.F) {
	s := mustSigner(f)
	c := buildChain(f, 6, 3, s, mustAuditKey(f, 1))
	good := export(f, c.entries, s)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(`{"end":{"kme":"K","seq":0}}`))
	f.Add([]byte("{}\n"))
	pub := s.Public()
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := audit.Verify(bytes.NewReader(data), pub)
		if err == nil && !bytes.Equal(data, good) && rep.Entries > 0 && rep.Signed != rep.Entries {
			t.Fatalf("accepted an export whose end does not cover it: %+v", rep)
		}
		var ve *audit.VerifyError
		if err != nil && (!errors.As(err, &ve) || ve.Line < 1) {
			t.Fatalf("error without a position: %v", err)
		}
	})
}

// BenchmarkVerify reports verified entries per minute (goal: 1,000,000) on a trail of key
// entries with a checkpoint every 1000.
func BenchmarkVerify(b *testing.B) {
	s := mustSigner(b)
	const n = 100_000
	c := buildChain(b, n, 1000, s, mustAuditKey(b, 1))
	data := export(b, c.entries, s)
	pub := s.Public()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := audit.Verify(bytes.NewReader(data), pub); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(c.entries))*float64(b.N)/b.Elapsed().Minutes(), "entries/min")
}
