package qkdsim

import (
	"errors"
	"math/rand/v2"
	"testing"
)

// chachaReader is a deterministic io.Reader for tests and seeded runs.
func recTestRand(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	for i := 0; i < 8; i++ {
		s[i] = byte(seed >> (8 * i))
	}
	return rand.NewChaCha8(s)
}

func recRandomKey(r *rand.ChaCha8, n int) Bits {
	b := NewBits(n)
	for i := range b.W {
		b.W[i] = r.Uint64()
	}
	b.trim()
	return b
}

func TestGF64TableMatchesReference(t *testing.T) {
	r := recTestRand(1)
	for i := 0; i < 200; i++ {
		a, b := r.Uint64(), r.Uint64()
		if got, want := newPolyHash(b).mul(a), gf64Mul(a, b); got != want {
			t.Fatalf("mul(%#x, %#x) = %#x, want %#x", a, b, got, want)
		}
	}
	// x^63 * x = x^64 = x^4 + x^3 + x + 1.
	if got := gf64Mul(1<<63, 2); got != gf64Reduce {
		t.Fatalf("x^63*x = %#x, want %#x", got, gf64Reduce)
	}
}

func runVerify(t *testing.T, a, b Bits, seed uint64) (errA, errB error, leakA, leakB int) {
	t.Helper()
	ca, cb, _, _, closeFn := Pipe()
	defer closeFn()
	done := make(chan struct{})
	go func() {
		leakB, errB = VerifyBob(cb, b)
		close(done)
	}()
	leakA, errA = VerifyAlice(ca, a, recTestRand(seed))
	<-done
	return
}

func TestVerify(t *testing.T) {
	tests := []struct {
		name  string
		n     int
		flips []int // positions flipped in Bob's copy
	}{
		{"equal", 10000, nil},
		{"equal odd length", 1001, nil},
		{"one flipped bit", 10000, []int{4321}},
		{"last bit flipped", 1001, []int{1000}},
		{"first bit flipped", 64, []int{0}},
		{"two flips in one word", 4096, []int{100, 101}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for trial := 0; trial < 20; trial++ {
				r := recTestRand(uint64(100*i + trial))
				a := recRandomKey(r, tc.n)
				b := a.Clone()
				for _, p := range tc.flips {
					b.Flip(p)
				}
				errA, errB, la, lb := runVerify(t, a, b, uint64(trial))
				if la != VerifyTagBits || lb != VerifyTagBits {
					t.Fatalf("leaked %d/%d, want %d", la, lb, VerifyTagBits)
				}
				if len(tc.flips) == 0 {
					if errA != nil || errB != nil {
						t.Fatalf("equal keys rejected: %v / %v", errA, errB)
					}
					continue
				}
				if !errors.Is(errA, ErrVerifyFailed) || !errors.Is(errB, ErrVerifyFailed) {
					t.Fatalf("differing keys accepted: alice %v, bob %v", errA, errB)
				}
			}
		})
	}
}

func TestVerifyRejectsLengthMismatch(t *testing.T) {
	r := recTestRand(7)
	a := recRandomKey(r, 640)
	b := a.Slice(0, 639) // same words but one bit shorter
	errA, errB, _, _ := runVerify(t, a, b, 1)
	if !errors.Is(errA, ErrVerifyFailed) || !errors.Is(errB, ErrVerifyFailed) {
		t.Fatalf("length mismatch accepted: %v / %v", errA, errB)
	}
}

func TestVerifyEpsCor(t *testing.T) {
	if got := VerifyEpsCor(1_000_000); got <= 0 || got > 1e-15 {
		t.Fatalf("VerifyEpsCor(1e6) = %g, want in (0, 1e-15]", got)
	}
}

func FuzzDecodeVerify(f *testing.F) {
	f.Add(encodeVerify(1000, 1, 2))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, body []byte) {
		n, s, tag, err := decodeVerify(body)
		if err != nil {
			return
		}
		if got := encodeVerify(int(n), s, tag); string(got) != string(body) {
			t.Fatalf("round trip mismatch")
		}
	})
}

func FuzzDecodeVerdict(f *testing.F) {
	f.Add([]byte{1})
	f.Add([]byte{})
	f.Add([]byte{2, 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		ok, err := decodeVerdict(body)
		if err == nil && (len(body) != 1 || ok != (body[0] == verdictEqual)) {
			t.Fatalf("accepted malformed verdict %x", body)
		}
	})
}

func BenchmarkVerifyTag(b *testing.B) {
	key := recRandomKey(recTestRand(3), 1_000_000)
	b.SetBytes(int64(key.N / 8))
	for b.Loop() {
		verifyTag(key, 0x9e3779b97f4a7c15)
	}
}
