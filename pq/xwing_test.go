package pq

import (
	"bytes"
	"crypto/sha3"
	"encoding/hex"
	"fmt"
	"testing"
)

// xwingVectorsChecksum is the SHAKE-128 checksum of spec/test-vectors.txt of the X-Wing draft
// (github.com/dconnolly/draft-connolly-cfrg-xwing-kem), as circl's kem/xwing test records it.
const xwingVectorsChecksum = "1bcd0057d861d6b866239936cadcaeee1ec0164dedc181c386e9e54fe46156fe"

// writeVector prints one field in the layout of the draft's test-vectors.txt: short values on
// one line after the name, long ones wrapped at 72 hex digits under it, indented by two.
func writeVector(w *bytes.Buffer, name string, v []byte) {
	const width, indent = 74, "  "
	h := hex.EncodeToString(v)
	if len(name)+len(h)+5 < width {
		fmt.Fprintf(w, "%s     %s\n", name, h)
		return
	}
	fmt.Fprintf(w, "%s\n", name)
	for len(h) > 0 {
		n := min(len(h), width-len(indent))
		fmt.Fprintf(w, "%s%s\n", indent, h[:n])
		h = h[n:]
	}
}

// TestXWingVectors regenerates the draft's test vectors (seeds drawn from SHAKE-128 of the empty
// string) and checks their checksum, so keygen, encapsulation and the combiner match the draft
// byte for byte.
func TestXWingVectors(t *testing.T) {
	rng := sha3.NewSHAKE128()
	var w bytes.Buffer
	for range 3 {
		seed := make([]byte, xwingSeedSize)
		rng.Read(seed)
		writeVector(&w, "seed", seed)
		sk, pk, err := xwingDeriveKeyPair(seed)
		if err != nil {
			t.Fatal(err)
		}
		writeVector(&w, "sk", seed) // X-Wing's private key is its seed
		writeVector(&w, "pk", pk)
		eseed := make([]byte, xwingEncapsSeedSize)
		rng.Read(eseed)
		writeVector(&w, "eseed", eseed)
		ss, ct, err := xwingEncapsulate(pk, eseed)
		if err != nil {
			t.Fatal(err)
		}
		writeVector(&w, "ct", ct)
		writeVector(&w, "ss", ss)
		w.WriteString("\n")
		ss2, err := sk.decapsulate(ct)
		if err != nil || !bytes.Equal(ss, ss2) {
			t.Fatalf("decapsulation: %v, equal %v", err, bytes.Equal(ss, ss2))
		}
	}
	if got := hex.EncodeToString(sha3.SumSHAKE128(w.Bytes(), 32)); got != xwingVectorsChecksum {
		t.Fatalf("test vectors checksum %s, want %s", got, xwingVectorsChecksum)
	}
}

func TestXWingRejects(t *testing.T) {
	sk, pk, err := xwingGenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	badModulus := bytes.Clone(pk)
	badModulus[0], badModulus[1] = 0xff, 0xff // a coefficient >= q: FIPS 203 §7.2 check fails
	for name, p := range map[string][]byte{"short": pk[:100], "long": append(bytes.Clone(pk), 0), "modulus": badModulus} {
		if _, _, err := xwingEncapsulate(p, nil); err == nil {
			t.Errorf("%s public key: encapsulation succeeded", name)
		}
	}
	_, ct, err := xwingEncapsulate(pk, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sk.decapsulate(ct[:len(ct)-1]); err == nil {
		t.Error("short ciphertext decapsulated")
	}
}
