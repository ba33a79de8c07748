package qkdsim

import (
	"bytes"
	"context"
	"errors"
	"syscall"
	"testing"
)

// The whole chain with the real stages: identical, reproducible blocks; a rate under the
// asymptotic one and PLOB.
func TestRealChain(t *testing.T) {
	p, _ := Preset("apd")
	run := func(seed uint64) ([]Block, []RunStats) {
		l, err := NewLink(LinkConfig{Name: "ab", Params: p, Distance: 20, PulsesPerBlock: 1e8, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		a, b, reps, err := collect(t, l, 2)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v (reports %+v)", err, reps)
		}
		if len(a) != 2 || len(b) != 2 {
			t.Fatalf("%d/%d blocks; reports %+v", len(a), len(b), reps)
		}
		for i := range a {
			if !bytes.Equal(a[i].Key, b[i].Key) || a[i].ID != b[i].ID {
				t.Fatal("ends differ")
			}
		}
		return a, reps
	}
	x, reps := run(11)
	y, _ := run(11)
	if !bytes.Equal(x[0].Key, y[0].Key) || !bytes.Equal(x[1].Key, y[1].Key) {
		t.Error("same seed, different keys")
	}
	asym := AnalyticRate(p, 20)
	for _, r := range reps {
		if r.SecretKeyRatePerPulse <= 0 || r.SecretKeyRatePerPulse >= asym || r.EfficiencyF < 1 || r.EfficiencyF > 1.5 || r.AuthBitsConsumed == 0 {
			t.Errorf("report: rate %g (asymptotic %g), f %g, auth %d", r.SecretKeyRatePerPulse, asym, r.EfficiencyF, r.AuthBitsConsumed)
		}
	}
}

// BenchmarkChain measures the whole chain (physics, sifting, estimation, Cascade, verification,
// amplification, authentication) at about 2% QBER; the figure is sifted Mbit/s on one Link.
func BenchmarkChain(b *testing.B) {
	p, _ := Preset("apd")
	p.Ed = 0.02
	l, err := NewLink(LinkConfig{Params: p, Distance: 10, PulsesPerBlock: 1e9, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	var sifted int64
	var qber float64
	cpu0 := cpuSeconds()
	b.ResetTimer()
	for range b.N {
		_, st, err := l.runBlock(context.Background(), 1e9)
		if err != nil || st.Aborted {
			b.Fatalf("%v %s", err, st.AbortReason)
		}
		sifted += st.SiftedBits
		qber = st.QBER
	}
	b.ReportMetric(float64(sifted)/b.Elapsed().Seconds()/1e6, "sifted-Mbit/s")
	b.ReportMetric(qber, "qber")
	// The cores are shared with other work; CPU time says what one core would do alone.
	b.ReportMetric(float64(sifted)/(cpuSeconds()-cpu0)/1e6, "sifted-Mbit/cpu-s")
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}
