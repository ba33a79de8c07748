package qkdsim

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/qkms/qkms/internal/cputime"
)

// seedReader is a deterministic io.Reader of random bytes for tests.
type seedReader struct{ r *rand.Rand }

func (s seedReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(s.r.Uint32())
	}
	return len(p), nil
}

type amplifyResult struct {
	out Bits
	err error
}

func runAmplify(t *testing.T, keyA, keyB Bits, mA, mB int, seed uint64) (a, b amplifyResult) {
	t.Helper()
	ca, cb, _, _, closeFn := Pipe()
	defer closeFn()
	done := make(chan amplifyResult, 1)
	go func() {
		out, err := AmplifyBob(cb, keyB, mB)
		if err != nil {
			closeFn() // Alice is waiting for a reply that will not come.
		}
		done <- amplifyResult{out, err}
	}()
	out, err := AmplifyAlice(ca, keyA, mA, seedReader{rand.New(rand.NewPCG(seed, 1))})
	return amplifyResult{out, err}, <-done
}

func TestAmplifyBothEndsAgree(t *testing.T) {
	cases := []struct{ n, m int }{{1, 1}, {100, 0}, {100, 37}, {4096, 2048}, {100_003, 50_001}, {1_000_000, 500_000}}
	r := rand.New(rand.NewPCG(11, 12))
	for _, c := range cases {
		key := randBits(r, c.n)
		a, b := runAmplify(t, key, key.Clone(), c.m, c.m, uint64(c.n))
		if a.err != nil || b.err != nil {
			t.Fatalf("n=%d m=%d: alice %v, bob %v", c.n, c.m, a.err, b.err)
		}
		if a.out.N != c.m || b.out.N != c.m {
			t.Fatalf("n=%d m=%d: output lengths %d and %d", c.n, c.m, a.out.N, b.out.N)
		}
		if !equalBits(a.out, b.out) {
			t.Fatalf("n=%d m=%d: ends differ in %d bits", c.n, c.m, Diff(a.out, b.out))
		}
	}
}

func TestAmplifySeedsChangeOutput(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	key := randBits(r, 20_000)
	a1, _ := runAmplify(t, key, key, 10_000, 10_000, 1)
	a2, _ := runAmplify(t, key, key, 10_000, 10_000, 2)
	if a1.err != nil || a2.err != nil {
		t.Fatal(a1.err, a2.err)
	}
	if equalBits(a1.out, a2.out) {
		t.Fatal("two seeds gave the same output")
	}
	// Half the bits should differ for independent seeds; allow a wide margin.
	if d := Diff(a1.out, a2.out); d < 4_000 || d > 6_000 {
		t.Fatalf("outputs under two seeds differ in %d of 10000 bits", d)
	}
}

func TestAmplifyRejectsMismatch(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	key := randBits(r, 1000)
	cases := []struct {
		name   string
		keyB   Bits
		mA, mB int
	}{
		{"output length", key, 500, 400},
		{"key length", key.Slice(0, 999), 500, 500},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, b := runAmplify(t, key, c.keyB, c.mA, c.mB, 3)
			if !errors.Is(b.err, ErrAmplifyRejected) {
				t.Fatalf("bob: got %v, want ErrAmplifyRejected", b.err)
			}
			if a.err == nil {
				t.Fatal("alice returned a key although Bob rejected the seed")
			}
		})
	}
	if _, err := AmplifyAlice(nil, key, 1001, seedReader{}); err == nil {
		t.Fatal("m > n accepted")
	}
}

func TestDecodeAmplifyRejectsMalformed(t *testing.T) {
	seed := NewBits(ToeplitzSeedLen(20))
	seed.Set(3, 1)
	good := encodeAmplify(20, 10, seed)
	cases := []struct {
		name string
		body []byte
	}{
		{"empty", nil},
		{"short header", good[:15]},
		{"truncated seed", good[:len(good)-1]},
		{"extra byte", append(append([]byte(nil), good...), 0)},
		{"m > n", encodeAmplify(20, 21, seed)},
		{"huge n", append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}, good[16:]...)},
		{"padding bits set", func() []byte { b := bytes.Clone(good); b[len(b)-1] |= 0x80; return b }()},
	}
	if _, _, _, err := decodeAmplify(good); err != nil {
		t.Fatalf("good body rejected: %v", err)
	}
	for _, c := range cases {
		if _, _, _, err := decodeAmplify(c.body); !errors.Is(err, ErrAmplifyRejected) {
			t.Errorf("%s: got %v, want ErrAmplifyRejected", c.name, err)
		}
	}
}

func FuzzDecodeAmplify(f *testing.F) {
	seed := NewBits(ToeplitzSeedLen(100))
	seed.Set(7, 1)
	f.Add(encodeAmplify(100, 50, seed))
	f.Add(encodeAmplify(0, 0, Bits{}))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, body []byte) {
		n, m, s, err := decodeAmplify(body)
		if err != nil {
			return
		}
		if m > n || s.N != ToeplitzSeedLen(n) {
			t.Fatalf("accepted n=%d m=%d seed=%d", n, m, s.N)
		}
		if !bytes.Equal(encodeAmplify(n, m, s), body) {
			t.Fatal("accepted body does not re-encode to itself")
		}
	})
}

func BenchmarkAmplify(b *testing.B) {
	const n = 10_000_000
	r := rand.New(rand.NewPCG(17, 18))
	key := randBits(r, n)
	seed := randBits(r, ToeplitzSeedLen(n))
	b.SetBytes(n / 8)
	cpu0 := cputime.Process()
	for b.Loop() {
		ToeplitzHash(seed, key, n/2)
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mbit/s")
	// The hash runs on one goroutine, so input bits per CPU-second is the rate per core even
	// when other processes share the cores (it includes the GC's share, so it is a lower bound).
	if cpu := cputime.Process() - cpu0; cpu > 0 {
		b.ReportMetric(float64(n)*float64(b.N)/cpu.Seconds()/1e6, "Mbit/cpu-s")
	}
}
