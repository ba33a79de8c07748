package qkdsim

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestPresetsValid(t *testing.T) {
	want := map[string]float64{"gys": 142, "apd": 190, "snspd": 283} // REFERENCES.md
	for _, name := range PresetNames() {
		p, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if d := MaxDistance(p); math.Abs(d-want[name]) > 0.05*want[name] {
			t.Errorf("%s: max distance %.1f km, want about %.0f", name, d, want[name])
		}
	}
	if _, err := Preset("nope"); !errors.Is(err, ErrInvalidParam) {
		t.Errorf("unknown preset: %v", err)
	}
}

func TestValidateRefuses(t *testing.T) {
	base, _ := Preset("apd")
	cases := []struct {
		name string
		mod  func(*Params)
	}{
		{"mu", func(p *Params) { p.Mu = 0 }},
		{"mu", func(p *Params) { p.Mu = -1 }},
		{"nu", func(p *Params) { p.Nu = p.Mu }},
		{"eta-det", func(p *Params) { p.EtaB = 0 }},
		{"eta-det", func(p *Params) { p.EtaB = 1.5 }},
		{"misalignment", func(p *Params) { p.Ed = 0.5 }},
		{"dark-count", func(p *Params) { p.Y0 = math.NaN() }},
		{"p-nu", func(p *Params) { p.PNu = 0.3 }},
		{"p-z", func(p *Params) { p.PZ = 1 }},
		{"eps-sec", func(p *Params) { p.EpsSec = 0 }},
		{"qber-threshold", func(p *Params) { p.QBERThreshold = 0.5 }},
		{"alpha", func(p *Params) { p.Alpha = -0.2 }},
	}
	for _, c := range cases {
		p := base
		c.mod(&p)
		err := p.Validate()
		if !errors.Is(err, ErrInvalidParam) || !strings.Contains(err.Error(), c.name+" =") || !strings.Contains(err.Error(), "allowed") {
			t.Errorf("%s: got %v", c.name, err)
		}
	}
	if err := ValidateDistance(-1); err == nil || !strings.Contains(err.Error(), "distance") {
		t.Errorf("negative distance: %v", err)
	}
	if err := (Eve{InterceptFraction: 2}).Validate(); err == nil {
		t.Error("eve fraction 2 accepted")
	}
}

// With ideal decoy estimation and very large blocks the sampled rate agrees with the analytic
// formula, is zero past the maximal distance and never exceeds PLOB.
func TestAsymptoticAgreesWithAnalytic(t *testing.T) {
	for _, name := range PresetNames() {
		p, _ := Preset(name)
		maxD := MaxDistance(p)
		for d := 0.0; d <= maxD+40; d += 10 {
			s, err := SimulateAsymptotic(p, d, Eve{}, 1e16, uint64(d))
			if err != nil {
				t.Fatal(err)
			}
			a := AnalyticRate(p, d)
			r := s.SecretKeyRatePerPulse
			if r > PLOB(p, d) {
				t.Errorf("%s %g km: rate %g above PLOB %g", name, d, r, PLOB(p, d))
			}
			switch {
			case d > maxD+1 && r != 0:
				t.Errorf("%s %g km: rate %g past max distance %.1f", name, d, r, maxD)
			case a > 0 && d < maxD-1 && math.Abs(r-a) > 0.1*a:
				t.Errorf("%s %g km: simulated %g, analytic %g", name, d, r, a)
			}
		}
	}
}

func TestBinomialMoments(t *testing.T) {
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	for _, c := range []struct {
		n int64
		p float64
	}{{100, 0.3}, {1e6, 1e-4}, {1e9, 0.02}, {50, 0.9}} {
		const runs = 2000
		var s, s2 float64
		for range runs {
			x := float64(binomial(rng, c.n, c.p))
			if x < 0 || x > float64(c.n) {
				t.Fatalf("out of range %g", x)
			}
			s += x
			s2 += x * x
		}
		mean, vr := s/runs, s2/runs-(s/runs)*(s/runs)
		wm, wv := float64(c.n)*c.p, float64(c.n)*c.p*(1-c.p)
		if math.Abs(mean-wm) > 5*math.Sqrt(wv/runs) || math.Abs(vr-wv) > 0.15*wv {
			t.Errorf("Bin(%d,%g): mean %g var %g, want %g %g", c.n, c.p, mean, vr, wm, wv)
		}
	}
}

// The decoy estimates bound the true single-photon yield from below and its error from above.
func TestDecoyEstimatesBoundTruth(t *testing.T) {
	for _, name := range PresetNames() {
		p, _ := Preset(name)
		for _, d := range []float64{0, 25, 50, 100} {
			for seed := range uint64(5) {
				rng := rand.New(rand.NewChaCha8(streamSeed(seed, 1, name)))
				m := physicalClasses(p, p.Transmittance(d), Eve{})
				in := sampledInput(p, m, 1e11, rng)
				e := EstimateDecoy(p, in)
				if e.Y1Lower > m.Y1 || e.Y1Lower <= 0 {
					t.Errorf("%s %g km: Y1 lower %g, true %g", name, d, e.Y1Lower, m.Y1)
				}
				if e.E1Upper < m.E1 {
					t.Errorf("%s %g km: e1 upper %g, true %g", name, d, e.E1Upper, m.E1)
				}
				// Tight enough to be useful: within a factor 2 at this block size.
				if e.Y1Lower < 0.5*m.Y1 {
					t.Errorf("%s %g km: Y1 lower %g loose against %g", name, d, e.Y1Lower, m.Y1)
				}
			}
		}
	}
}

func sampledInput(p Params, m classModel, pulses int64, rng *rand.Rand) EstimateInput {
	sent, det := sampleCounts(p, m, pulses, rng)
	in := EstimateInput{Sent: sent, Detected: det}
	for k := range det {
		in.Sifted[k] = binomial(rng, det[k], p.SiftFraction())
	}
	in.Sample = int64(sampleSize(p, int(in.Sifted[ClassSignal])))
	in.Errors[ClassSignal] = binomial(rng, in.Sample, m.E[ClassSignal])
	for k := 1; k < 3; k++ {
		in.Errors[k] = binomial(rng, in.Sifted[k], m.E[k])
	}
	return in
}

// Photon-number splitting keeps the signal gain as expected, but the decoy estimate of Y1
// collapses, so no single-photon key is claimed.
func TestPNSExposedByDecoys(t *testing.T) {
	p, _ := Preset("apd")
	for _, d := range []float64{30, 60, 100} {
		honest := physicalClasses(p, p.Transmittance(d), Eve{})
		pns := physicalClasses(p, p.Transmittance(d), Eve{PNS: true})
		if math.Abs(pns.Q[ClassSignal]-honest.Q[ClassSignal]) > 1e-12 {
			t.Errorf("%g km: PNS changes the signal gain %g -> %g", d, honest.Q[0], pns.Q[0])
		}
		rng := rand.New(rand.NewChaCha8([32]byte{byte(d)}))
		e := EstimateDecoy(p, sampledInput(p, pns, 1e11, rng))
		fk := FiniteKeyInput{N: 1e8, K: 1e7, SingleFraction: e.SingleFraction, E1Upper: e.E1Upper, EpsSec: p.EpsSec, EpsCor: p.EpsCor}
		if e.Y1Lower > 0.1*honest.Y1 && FiniteKeyLength(fk) > 0 {
			t.Errorf("%g km: PNS not exposed: Y1 lower %g (honest %g), key %d", d, e.Y1Lower, honest.Y1, FiniteKeyLength(fk))
		}
	}
}

func TestInterceptResendQBER(t *testing.T) {
	p, _ := Preset("apd")
	for _, f := range []float64{0.2, 0.5, 1} {
		s, err := SimulateAsymptotic(p, 20, Eve{InterceptFraction: f}, 1e12, 7)
		if err != nil {
			t.Fatal(err)
		}
		want := p.Ed + f/4
		if math.Abs(s.QBER-want) > 0.02 {
			t.Errorf("p=%g: QBER %g, want about %g", f, s.QBER, want)
		}
		if f >= 0.5 && (!s.Aborted || s.FinalBits != 0) {
			t.Errorf("p=%g: not aborted: %+v", f, s)
		}
	}
}

func TestFiniteKeyMonotone(t *testing.T) {
	base := FiniteKeyInput{N: 1e6, K: 5e4, SingleFraction: 0.6, E1Upper: 0.02, LeakEC: 1e5, TagBits: 64, EpsSec: 1e-10, EpsCor: 1e-15}
	l0 := FiniteKeyLength(base)
	if l0 <= 0 {
		t.Fatalf("no key for a good block: %d", l0)
	}
	asym := AsymptoticLength(base.N, base.SingleFraction, base.E1Upper, 0, 1) - base.LeakEC
	if l0 >= asym {
		t.Errorf("finite %d not below asymptotic %d", l0, asym)
	}
	big := base
	big.N, big.K, big.LeakEC = 1e9, 5e7, 1e8
	if float64(FiniteKeyLength(big))/1e9 <= float64(l0)/1e6 {
		t.Error("rate does not grow with block size")
	}
	small := base
	small.N, small.K = 1e3, 50
	if FiniteKeyLength(small) != 0 {
		t.Error("tiny block yields key")
	}
}
