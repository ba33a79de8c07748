package pq

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func testContext() KeyContext {
	return KeyContext{
		KeyID:     "bc490419-7d60-487f-adc1-4ddcc177c139",
		SourceKME: "KME-A",
		TargetKME: "KME-B",
		MasterSAE: "SAE-A1",
		SlaveSAEs: []string{"SAE-B1", "SAE-B2"},
	}
}

func mustEpochs(t testing.TB) (*Epoch, *Epoch) {
	t.Helper()
	ea, eb, err := runExchange(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ea, eb
}

// TestDeriveBothEnds: the master's site (initiator or responder of the epoch) and the slave's
// site derive the same key from their own copies of the epoch.
func TestDeriveBothEnds(t *testing.T) {
	ea, eb := mustEpochs(t)
	qkd := bytes.Repeat([]byte{0x5a}, 32)
	for _, kc := range []KeyContext{testContext(), {KeyID: "k", SourceKME: "KME-B", TargetKME: "KME-A", MasterSAE: "m", SlaveSAEs: []string{"s"}}} {
		for _, n := range []int{1, 16, 32, 64, 1024} {
			ha, err := HybridKey(qkd, ea, kc, n)
			if err != nil {
				t.Fatal(err)
			}
			hb, _ := HybridKey(qkd, eb, kc, n)
			pa, _ := PQCKey(ea, kc, n)
			pb, _ := PQCKey(eb, kc, n)
			if len(ha) != n || len(pa) != n {
				t.Fatalf("lengths %d, %d, want %d", len(ha), len(pa), n)
			}
			if !bytes.Equal(ha, hb) || !bytes.Equal(pa, pb) {
				t.Fatalf("the two sites derive different %d-byte keys", n)
			}
			if n >= 16 && bytes.Equal(ha, pa) {
				t.Fatal("hybrid and pqc keys of one key ID are equal")
			}
		}
	}
}

// TestDeriveConstruction recomputes both derivations with HMAC-SHA-256 by hand (RFC 5869 §2.2,
// §2.3) from the documented info layout, so the code does what derive.go says it does.
func TestDeriveConstruction(t *testing.T) {
	ea, _ := mustEpochs(t)
	kc := testContext()
	qkd := []byte("0123456789abcdef0123456789abcdef")
	mac := func(k []byte, parts ...[]byte) []byte {
		h := hmac.New(sha256.New, k)
		for _, p := range parts {
			h.Write(p)
		}
		return h.Sum(nil)
	}
	str16 := func(s string) []byte { return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...) }
	for _, tc := range []struct {
		label string
		ikm   []byte
		got   func(n int) ([]byte, error)
	}{
		{"qkms hybrid key v1", append(bytes.Clone(qkd), ea.Secret...), func(n int) ([]byte, error) { return HybridKey(qkd, ea, kc, n) }},
		{"qkms pqc key v1", bytes.Clone(ea.Secret), func(n int) ([]byte, error) { return PQCKey(ea, kc, n) }},
	} {
		for _, n := range []int{32, 70} {
			var info []byte
			info = append(info, tc.label...)
			info = binary.BigEndian.AppendUint32(info, uint32(n))
			for _, s := range []string{kc.KeyID, kc.SourceKME, kc.TargetKME, kc.MasterSAE} {
				info = append(info, str16(s)...)
			}
			info = binary.BigEndian.AppendUint16(info, uint16(len(kc.SlaveSAEs)))
			for _, s := range kc.SlaveSAEs {
				info = append(info, str16(s)...)
			}
			info = append(append(info, str16(ea.ID)...), ea.Transcript[:]...)
			prk := mac(make([]byte, sha256.Size), tc.ikm)
			var okm, block []byte
			for i := byte(1); len(okm) < n; i++ {
				block = mac(prk, block, info, []byte{i})
				okm = append(okm, block...)
			}
			got, err := tc.got(n)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, okm[:n]) {
				t.Fatalf("%s, %d bytes: derivation differs from the documented construction", tc.label, n)
			}
		}
	}
}

// TestDeriveBinding: changing any field of the transcript, the QKD key, the epoch or the length
// changes the key.
func TestDeriveBinding(t *testing.T) {
	ea, _ := mustEpochs(t)
	other, _ := mustEpochs(t)
	qkd := bytes.Repeat([]byte{1}, 32)
	base, _ := HybridKey(qkd, ea, testContext(), 32)
	basePQ, _ := PQCKey(ea, testContext(), 32)
	edit := func(f func(*KeyContext)) KeyContext { kc := testContext(); f(&kc); return kc }
	for _, tc := range []struct {
		name string
		qkd  []byte
		ep   *Epoch
		kc   KeyContext
		n    int
		pqc  bool // also check PQCKey
	}{
		{"key ID", qkd, ea, edit(func(k *KeyContext) { k.KeyID = "bc490419-7d60-487f-adc1-4ddcc177c13a" }), 32, true},
		{"master SAE", qkd, ea, edit(func(k *KeyContext) { k.MasterSAE = "SAE-A2" }), 32, true},
		{"slave SAE", qkd, ea, edit(func(k *KeyContext) { k.SlaveSAEs = []string{"SAE-B1", "SAE-B3"} }), 32, true},
		{"slave order", qkd, ea, edit(func(k *KeyContext) { k.SlaveSAEs = []string{"SAE-B2", "SAE-B1"} }), 32, true},
		{"slaves split differently", qkd, ea, edit(func(k *KeyContext) { k.SlaveSAEs = []string{"SAE-B1SAE-B2"} }), 32, true},
		{"direction (source/target)", qkd, ea, edit(func(k *KeyContext) { k.SourceKME, k.TargetKME = "KME-B", "KME-A" }), 32, true},
		{"epoch", qkd, other, testContext(), 32, true},
		{"length", qkd, ea, testContext(), 33, true},
		{"QKD key", bytes.Repeat([]byte{2}, 32), ea, testContext(), 32, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := HybridKey(tc.qkd, tc.ep, tc.kc, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(h[:32], base) {
				t.Fatal("hybrid key unchanged")
			}
			if tc.pqc {
				p, err := PQCKey(tc.ep, tc.kc, tc.n)
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Equal(p[:32], basePQ) {
					t.Fatal("pqc key unchanged")
				}
			}
		})
	}
}

func TestDeriveRejects(t *testing.T) {
	ea, _ := mustEpochs(t)
	dead, _ := mustEpochs(t)
	dead.Destroy()
	qkd := []byte("qkd")
	edit := func(f func(*KeyContext)) KeyContext { kc := testContext(); f(&kc); return kc }
	for _, tc := range []struct {
		name string
		qkd  []byte
		ep   *Epoch
		kc   KeyContext
		n    int
		want error
	}{
		{"no QKD key", nil, ea, testContext(), 32, ErrKeyContext},
		{"zero length", qkd, ea, testContext(), 0, ErrKeyContext},
		{"too long", qkd, ea, testContext(), MaxKeyBytes + 1, ErrKeyContext},
		{"no key ID", qkd, ea, edit(func(k *KeyContext) { k.KeyID = "" }), 32, ErrKeyContext},
		{"no slaves", qkd, ea, edit(func(k *KeyContext) { k.SlaveSAEs = nil }), 32, ErrKeyContext},
		{"empty slave", qkd, ea, edit(func(k *KeyContext) { k.SlaveSAEs = []string{""} }), 32, ErrKeyContext},
		{"no epoch", qkd, nil, testContext(), 32, ErrEpochMismatch},
		{"destroyed epoch", qkd, dead, testContext(), 32, ErrEpochMismatch},
		{"epoch of another link", qkd, ea, edit(func(k *KeyContext) { k.TargetKME = "KME-C" }), 32, ErrEpochMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := HybridKey(tc.qkd, tc.ep, tc.kc, tc.n)
			if !errors.Is(err, tc.want) || k != nil {
				t.Fatalf("HybridKey = %d bytes, %v; want %v", len(k), err, tc.want)
			}
			if tc.qkd != nil {
				if k, err := PQCKey(tc.ep, tc.kc, tc.n); !errors.Is(err, tc.want) || k != nil {
					t.Fatalf("PQCKey = %d bytes, %v; want %v", len(k), err, tc.want)
				}
			}
		})
	}
}

func TestEpochStorage(t *testing.T) {
	ea, _ := mustEpochs(t)
	b := ea.Marshal()
	got, err := ParseEpoch(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b) // the parsed epoch owns its secret
	if got.ID != ea.ID || got.Initiator != ea.Initiator || got.Responder != ea.Responder ||
		!bytes.Equal(got.Secret, ea.Secret) || got.Transcript != ea.Transcript || !got.Created.Equal(ea.Created) {
		t.Fatalf("round trip: %v, want %v", got, ea)
	}
	k1, _ := PQCKey(ea, testContext(), 32)
	k2, _ := PQCKey(got, testContext(), 32)
	if !bytes.Equal(k1, k2) {
		t.Fatal("reloaded epoch derives other keys")
	}
	enc := ea.Marshal()
	for i := range enc {
		if _, err := ParseEpoch(enc[:i]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated to %d bytes: %v", i, err)
		}
	}
}

func TestEpochNeverPrintsSecret(t *testing.T) {
	ea, _ := mustEpochs(t)
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("epoch", "epoch", ea)
	secretHex := fmt.Sprintf("%x", ea.Secret)
	for _, out := range []string{fmt.Sprint(ea), fmt.Sprintf("%v %+v %#v %s", ea, ea, ea, ea), logged.String()} {
		if strings.Contains(out, secretHex) || strings.Contains(out, fmt.Sprint(ea.Secret)) || !strings.Contains(out, ea.ID) {
			t.Fatalf("printed epoch: %s", out)
		}
	}
}

func TestRefreshPolicy(t *testing.T) {
	ea, _ := mustEpochs(t)
	p := RefreshPolicy{MaxKeys: 100, MaxAge: time.Minute}
	for _, tc := range []struct {
		name string
		p    RefreshPolicy
		keys uint64
		age  time.Duration
		want bool
	}{
		{"fresh", p, 0, 0, false},
		{"just under both", p, 99, time.Minute - 1, false},
		{"key count", p, 100, 0, true},
		{"age", p, 0, time.Minute, true},
		{"no key limit", RefreshPolicy{MaxAge: time.Minute}, 1 << 40, 0, false},
		{"no age limit", RefreshPolicy{MaxKeys: 100}, 0, 1000 * time.Hour, false},
	} {
		if got := tc.p.Due(ea, tc.keys, ea.Created.Add(tc.age)); got != tc.want {
			t.Errorf("%s: Due = %v, want %v", tc.name, got, tc.want)
		}
	}
	ea.Destroy()
	if !p.Due(ea, 0, ea.Created) || !p.Due(nil, 0, t0) {
		t.Error("destroyed or missing epoch not due")
	}
}
