package qkdsim

import (
	"bytes"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

func fakeLink(t *testing.T, cfg LinkConfig) *Link {
	t.Helper()
	if cfg.Params.Preset == "" {
		cfg.Params, _ = Preset("apd")
	}
	l, err := NewLink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l.st = fakeStages()
	return l
}

func TestCompressMatchesReference(t *testing.T) {
	active := pextWords
	defer func() { pextWords = active }()
	for _, kern := range []func(dst, src, mask []uint64){pextWordsGeneric, active} {
		pextWords = kern
		testCompress(t)
	}
}

func testCompress(t *testing.T) {
	t.Helper()
	rng := rand.New(rand.NewChaCha8([32]byte{3}))
	for _, n := range []int{0, 1, 63, 64, 65, 200, 1000, 64*256 - 1, 64*256 + 1, 40_000} {
		src, mask := randomBits(n, rng), randomBits(n, rng)
		for i := 0; i+64 <= n && i < 128; i++ { // a run of full words
			mask.Set(i, 1)
		}
		for _, r := range [][2]int{{0, n}, {n / 3, n}, {n / 5, 4 * n / 5}} {
			got := compress(src, mask, r[0], r[1])
			j := 0
			for i := r[0]; i < r[1]; i++ {
				if mask.Get(i) == 1 {
					if got.Get(j) != src.Get(i) {
						t.Fatalf("n=%d range %v: bit %d wrong", n, r, j)
					}
					j++
				}
			}
			if j != got.N || countRange(mask, r[0], r[1]) != j {
				t.Fatalf("n=%d: %d bits, want %d", n, got.N, j)
			}
		}
	}
}

// Sifting over a Pipe keeps exactly the matched events, and Bob's sifted bits differ from
// Alice's by exactly the error pattern the physics drew.
func TestSiftKeepsErrorPattern(t *testing.T) {
	p, _ := Preset("apd")
	rng := rand.New(rand.NewChaCha8([32]byte{4}))
	ra, rb, truth, err := simulateBlock(p, 10, Eve{}, 1e8, rng)
	if err != nil {
		t.Fatal(err)
	}
	a, b, _, _, closeFn := Pipe()
	defer closeFn()
	var sa siftResult
	var ea error
	var wg sync.WaitGroup
	wg.Go(func() { sa, ea = siftAlice(a, ra) })
	sb, eb := siftBob(b, rb)
	wg.Wait()
	if ea != nil || eb != nil {
		t.Fatal(ea, eb)
	}
	for k := range 3 {
		if int64(sa.Class[k].N) != truth.Matched[k] || sb.Class[k].N != sa.Class[k].N {
			t.Errorf("class %d: sifted %d/%d, matched %d", k, sa.Class[k].N, sb.Class[k].N, truth.Matched[k])
		}
		if int64(Diff(sa.Class[k], sb.Class[k])) != truth.Errors[k] {
			t.Errorf("class %d: %d differences, physics drew %d", k, Diff(sa.Class[k], sb.Class[k]), truth.Errors[k])
		}
	}
	q := float64(truth.Errors[0]) / float64(truth.Matched[0])
	if math.Abs(q-truth.Model.E[0]) > 0.005 {
		t.Errorf("signal error rate %g, model %g", q, truth.Model.E[0])
	}
}

func collect(t *testing.T, l *Link, blocks int) (a, b []Block, reports []RunStats, err error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.cfg.OnBlock = func(s RunStats) {
		reports = append(reports, s)
		if len(reports) >= blocks {
			cancel()
		}
	}
	err = l.Run(ctx,
		func(bl Block) error { a = append(a, bl); return nil },
		func(bl Block) error { b = append(b, bl); return nil })
	return a, b, reports, err
}

func TestLinkIdenticalBlocksAndReproducible(t *testing.T) {
	run := func(seed uint64) []Block {
		l := fakeLink(t, LinkConfig{Name: "L", Distance: 25, PulsesPerBlock: 2e8, Seed: seed})
		a, b, reps, err := collect(t, l, 3)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
		if len(a) != 3 || len(b) != 3 {
			t.Fatalf("got %d/%d blocks, reports %+v", len(a), len(b), reps)
		}
		for i := range a {
			if a[i].ID != b[i].ID || !bytes.Equal(a[i].Key, b[i].Key) || a[i].Bits != 8*len(a[i].Key) || a[i].Bits == 0 {
				t.Fatalf("block %d differs between ends or is empty", i)
			}
			if i > 0 && a[i].ID == a[i-1].ID {
				t.Fatal("duplicate block ID")
			}
		}
		for _, r := range reps {
			if r.FinalBits == 0 || r.Messages == 0 || r.AuthBitsConsumed == 0 || r.RevealedBits <= r.LeakedECBits {
				t.Errorf("report %+v", r)
			}
		}
		return a
	}
	x, y, z := run(1), run(1), run(2)
	for i := range x {
		if !bytes.Equal(x[i].Key, y[i].Key) {
			t.Errorf("block %d: same seed, different key", i)
		}
		if bytes.Equal(x[i].Key, z[i].Key) {
			t.Errorf("block %d: different seeds, same key", i)
		}
	}
}

func TestInterceptResendAborts(t *testing.T) {
	cfg := LinkConfig{Distance: 10, PulsesPerBlock: 5e7, Seed: 3, EveFraction: 1}
	cfg.Params, _ = Preset("apd")
	l, _ := NewLink(cfg)
	l.st = fakeStages()
	key, st, err := l.runBlock(context.Background(), cfg.PulsesPerBlock)
	if err != nil {
		t.Fatal(err)
	}
	if key != nil || !st.Aborted || math.Abs(st.QBER-0.25) > 0.03 {
		t.Errorf("intercept-resend: key %v, %+v", key != nil, st)
	}
	if !strings.HasPrefix(st.AbortReason, ErrQBERTooHigh.Error()) {
		t.Errorf("abort reason %q", st.AbortReason)
	}
}

func TestPNSAbortsLink(t *testing.T) {
	cfg := LinkConfig{Distance: 50, PulsesPerBlock: 2e9, Seed: 3, PNS: true}
	cfg.Params, _ = Preset("apd")
	l, _ := NewLink(cfg)
	l.st = fakeStages()
	key, st, err := l.runBlock(context.Background(), cfg.PulsesPerBlock)
	if err != nil {
		t.Fatal(err)
	}
	if key != nil || !st.Aborted || st.QBER > 0.05 {
		t.Errorf("PNS: key %v, %+v", key != nil, st)
	}
}

// Finite blocks lose the finite-key penalty against the asymptotic rate, and shrink it as they
// grow.
func TestFiniteBlocksBelowAsymptotic(t *testing.T) {
	p, _ := Preset("snspd")
	asym, _ := SimulateAsymptotic(p, 20, Eve{}, 1e15, 1)
	var prev float64
	for _, n := range []int64{2e7, 2e8} {
		l := fakeLink(t, LinkConfig{Params: p, Distance: 20, PulsesPerBlock: n, Seed: 5})
		_, st, err := l.runBlock(context.Background(), n)
		if err != nil {
			t.Fatal(err)
		}
		r := st.SecretKeyRatePerPulse
		if r >= asym.SecretKeyRatePerPulse || r <= prev {
			t.Errorf("%d pulses: rate %g, asymptotic %g, smaller block %g", n, r, asym.SecretKeyRatePerPulse, prev)
		}
		if r > PLOB(p, 20) {
			t.Errorf("above PLOB")
		}
		prev = r
	}
}

// tamperChannel flips one byte of the first message of a given type.
type tamperChannel struct {
	Channel
	typ  uint8
	done bool
}

func (c *tamperChannel) Send(m Message) error {
	if m.Type == c.typ && !c.done && len(m.Body) > 0 {
		c.done = true
		m.Body = append([]byte(nil), m.Body...)
		m.Body[len(m.Body)-1] ^= 0x5a
	}
	return c.Channel.Send(m)
}

// A tampered message ends the block with an error or an abort, never with a key that differs.
func TestTamperedMessageNeverYieldsKey(t *testing.T) {
	for _, typ := range []uint8{MsgSift, MsgSiftReply, MsgEstimate, MsgCascadeReply, MsgAmplify} {
		cfg := LinkConfig{Distance: 20, PulsesPerBlock: 1e8, Seed: 9}
		cfg.Params, _ = Preset("apd")
		cfg.Transport = func() (Channel, Channel, func(), error) {
			a, b, _, _, c := Pipe()
			return &tamperChannel{Channel: a, typ: typ}, &tamperChannel{Channel: b, typ: typ}, c, nil
		}
		l := fakeLink(t, cfg)
		var got []Block
		ctx, cancel := context.WithCancel(context.Background())
		l.cfg.OnBlock = func(RunStats) { cancel() }
		err := l.Run(ctx, func(b Block) error { got = append(got, b); return nil }, func(b Block) error { got = append(got, b); return nil })
		cancel()
		if len(got) == 2 && !bytes.Equal(got[0].Key, got[1].Key) {
			t.Errorf("type %#x: differing keys emitted", typ)
		}
		if typ == MsgAmplify && (err == nil || errors.Is(err, context.Canceled)) {
			t.Errorf("type %#x: tampered seed not caught: %v", typ, err)
		}
	}
}

func TestLinkOverNetChannel(t *testing.T) {
	l := fakeLink(t, LinkConfig{Distance: 25, PulsesPerBlock: 1e8, Seed: 1, Transport: NetPipe})
	a, b, _, err := collect(t, l, 2)
	if !errors.Is(err, context.Canceled) || len(a) != 2 || !bytes.Equal(a[1].Key, b[1].Key) {
		t.Fatalf("err %v, %d blocks", err, len(a))
	}
}
