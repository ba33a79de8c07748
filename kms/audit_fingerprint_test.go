package kms

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"testing"
)

// TestFingerprintConstruction recomputes fingerprints from the construction's definition
// (audit_fingerprint.go) with the standard library's primitives, so a faster implementation
// cannot drift from what earlier trails hold.
func TestFingerprintConstruction(t *testing.T) {
	secret, ak := newTestAuditKey(t)
	macKey, _ := hkdf.Key(sha256.New, secret, nil, "qkms audit fingerprint mac v1", 32)
	encKey, _ := hkdf.Key(sha256.New, secret, nil, "qkms audit fingerprint enc v1", 32)
	block, _ := aes.NewCipher(encKey)
	for i, keyID := range []string{"", "k", "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", string(bytes.Repeat([]byte("x"), 300))} {
		key := make([]byte, []int{0, 1, 32, 1024}[i])
		rand.Read(key)
		prefix := binary.AppendUvarint(nil, uint64(len(keyID)))
		prefix = append(prefix, keyID...)
		h := sha256.New()
		h.Write([]byte("qkms audit key digest v1"))
		h.Write(prefix)
		h.Write(key)
		d := h.Sum(nil)
		m := hmac.New(sha256.New, macKey)
		m.Write(prefix)
		m.Write(d)
		iv := m.Sum(nil)[:16]
		want := append([]byte(nil), iv...)
		enc := make([]byte, len(d))
		cipher.NewCTR(block, iv).XORKeyStream(enc, d)
		want = append(want, enc...)

		got := ak.Fingerprint(keyID, key)
		if !bytes.Equal(got, want) {
			t.Fatalf("key ID of %d bytes: fingerprint %x, construction gives %x", len(keyID), got, want)
		}
		if !bytes.Equal(KeyDigest(keyID, key), d) {
			t.Fatalf("key ID of %d bytes: KeyDigest differs from the construction", len(keyID))
		}
		opened, err := ak.OpenFingerprint(keyID, got)
		if err != nil || !bytes.Equal(opened, d) {
			t.Fatalf("key ID of %d bytes: open = %x, %v; want the digest", len(keyID), opened, err)
		}
		if _, err := ak.OpenFingerprint(keyID+"x", got); err == nil {
			t.Fatal("a fingerprint opened under another key ID")
		}
	}
}

// TestXORCTR checks the fingerprint's CTR against cipher.NewCTR, with counters that carry
// across 64-bit and byte boundaries.
func TestXORCTR(t *testing.T) {
	_, ak := newTestAuditKey(t)
	st := ak.states.Get().(*fpState)
	ivs := [][]byte{
		bytes.Repeat([]byte{0xff}, 16),
		append(bytes.Repeat([]byte{0}, 8), bytes.Repeat([]byte{0xff}, 8)...),
		append(bytes.Repeat([]byte{0x11}, 15), 0xff),
		make([]byte, 16),
	}
	random := make([]byte, 16)
	rand.Read(random)
	for _, iv := range append(ivs, random) {
		src := make([]byte, 64)
		rand.Read(src)
		want := make([]byte, len(src))
		cipher.NewCTR(ak.enc, iv).XORKeyStream(want, src)
		got := make([]byte, len(src))
		ak.xorCTR(st, got, src, iv)
		if !bytes.Equal(got, want) {
			t.Fatalf("iv %x: got %x, want %x", iv, got, want)
		}
	}
}

func BenchmarkFingerprint(b *testing.B) {
	_, ak := newTestAuditKey(b)
	key := make([]byte, 32)
	rand.Read(key)
	b.ReportAllocs()
	for b.Loop() {
		ak.Fingerprint("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", key)
	}
}

// newTestAuditKey is an audit key from a random secret, and the secret.
func newTestAuditKey(t testing.TB) ([]byte, *AuditKey) {
	secret := make([]byte, AuditKeySize)
	rand.Read(secret)
	ak, err := NewAuditKey(secret)
	if err != nil {
		t.Fatal(err)
	}
	return secret, ak
}
