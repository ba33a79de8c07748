package qkdsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// Physics of a decoy-state BB84 link over fibre: weak coherent pulses of three intensity classes
// (signal mu, weak decoy nu, vacuum), fibre loss, detector efficiency, dark counts and
// misalignment. The gain and error model is the standard one of GLLP (Gottesman, Lo, Lütkenhaus,
// Preskill, QIC 4, 325, 2004) as used by Lo, Ma, Chen, PRL 94, 230504 (2005):
//
//	Q_k = Y0 + 1 - exp(-eta k),  E_k Q_k = Y0/2 + e_d (1 - exp(-eta k)),
//	Y1 = Y0 + eta,  e1 = (Y0/2 + e_d eta) / Y1,  eta = eta_B 10^(-alpha L / 10).

// ErrInvalidParam is wrapped by every validation error; the message names the parameter (as the
// command-line flag spells it) and the allowed range.
var ErrInvalidParam = errors.New("qkdsim: invalid parameter")

// Intensity classes of the decoy-state protocol.
const (
	ClassSignal = 0
	ClassWeak   = 1
	ClassVacuum = 2
)

// Params are the physical and protocol parameters of a link. Distance is separate so one Params
// describes a whole sweep.
type Params struct {
	Preset string  `json:"preset"`
	Alpha  float64 `json:"alpha_db_per_km"` // fibre loss
	EtaB   float64 `json:"eta_det"`         // detector efficiency (Bob's side, incl. optics)
	Y0     float64 `json:"dark_count"`      // dark-count probability per pulse
	Ed     float64 `json:"misalignment"`    // probability that a photon hits the wrong detector
	F      float64 `json:"f"`               // error-correction efficiency used by the analytic formula

	Mu  float64 `json:"mu"`   // signal mean photon number
	Nu  float64 `json:"nu"`   // weak decoy mean photon number (vacuum decoy is 0)
	PMu float64 `json:"p_mu"` // probability that a pulse is a signal pulse
	PNu float64 `json:"p_nu"` // probability of a weak decoy; vacuum gets 1 - PMu - PNu
	PZ  float64 `json:"p_z"`  // probability of choosing the Z basis (both ends; 0.5 is plain BB84)

	PulseRate      float64 `json:"pulse_rate_hz"`
	EpsSec         float64 `json:"eps_sec"`
	EpsCor         float64 `json:"eps_cor"`
	QBERThreshold  float64 `json:"qber_threshold"`
	SampleFraction float64 `json:"sample_fraction"` // share of sifted signal bits sacrificed for the QBER
}

// presets hold alpha, eta_B, Y0, e_d, f from REFERENCES.md (the parameter sets of GYS,
// Gobby-Yuan-Shields 2004, and the APD/SNSPD sets used across the decoy-state literature).
var presets = map[string]Params{
	"gys":   {Preset: "gys", Alpha: 0.21, EtaB: 0.045, Y0: 1.7e-6, Ed: 0.033, F: 1.22},
	"apd":   {Preset: "apd", Alpha: 0.2, EtaB: 0.10, Y0: 1e-6, Ed: 0.015, F: 1.16},
	"snspd": {Preset: "snspd", Alpha: 0.2, EtaB: 0.60, Y0: 1e-7, Ed: 0.01, F: 1.10},
}

// PresetNames lists the presets in a stable order.
func PresetNames() []string { return []string{"gys", "apd", "snspd"} }

// Preset returns the named parameter set with the protocol defaults filled in.
func Preset(name string) (Params, error) {
	p, ok := presets[name]
	if !ok {
		return Params{}, fmt.Errorf("%w: preset %q unknown; allowed: gys, apd, snspd", ErrInvalidParam, name)
	}
	// mu near 0.48 is the optimum of the GLLP rate for these detectors (Ma et al. 2005, Table I);
	// nu = 0.1 keeps the weak decoy's multi-photon part small, which is what exposes PNS.
	p.Mu, p.Nu = 0.48, 0.1
	p.PMu, p.PNu = 0.8, 0.1
	p.PZ = 0.5
	p.PulseRate = 1e9
	p.EpsSec, p.EpsCor = 1e-10, 1e-15
	p.QBERThreshold = 0.11 // one-way BB84 post-processing limit (Shor-Preskill)
	p.SampleFraction = 0.05
	return p, nil
}

func rangeErr(name string, v float64, allowed string) error {
	return fmt.Errorf("%w: %s = %g is out of range; allowed %s", ErrInvalidParam, name, v, allowed)
}

// Validate refuses impossible parameters, naming the parameter and its allowed range.
func (p Params) Validate() error {
	bad := func(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }
	checks := []struct {
		name    string
		v       float64
		ok      bool
		allowed string
	}{
		{"alpha", p.Alpha, p.Alpha >= 0 && p.Alpha <= 10, "[0, 10] dB/km"},
		{"eta-det", p.EtaB, p.EtaB > 0 && p.EtaB <= 1, "(0, 1]"},
		{"dark-count", p.Y0, p.Y0 >= 0 && p.Y0 < 0.5, "[0, 0.5)"},
		{"misalignment", p.Ed, p.Ed >= 0 && p.Ed < 0.5, "[0, 0.5)"},
		{"f", p.F, p.F >= 1 && p.F <= 10, "[1, 10]"},
		{"mu", p.Mu, p.Mu > 0 && p.Mu <= 10, "(0, 10]"},
		{"nu", p.Nu, p.Nu > 0 && p.Nu < p.Mu, fmt.Sprintf("(0, mu=%g)", p.Mu)},
		{"p-mu", p.PMu, p.PMu > 0 && p.PMu < 1, "(0, 1)"},
		{"p-nu", p.PNu, p.PNu > 0 && p.PNu < 1-p.PMu, fmt.Sprintf("(0, 1-p-mu=%g) so the vacuum decoy has positive probability", 1-p.PMu)},
		{"p-z", p.PZ, p.PZ > 0 && p.PZ < 1, "(0, 1)"},
		{"rate", p.PulseRate, p.PulseRate > 0 && p.PulseRate <= 1e12, "(0, 1e12] Hz"},
		{"eps-sec", p.EpsSec, p.EpsSec > 0 && p.EpsSec < 1, "(0, 1)"},
		{"eps-cor", p.EpsCor, p.EpsCor > 0 && p.EpsCor < 1, "(0, 1)"},
		{"qber-threshold", p.QBERThreshold, p.QBERThreshold > 0 && p.QBERThreshold < 0.5, "(0, 0.5)"},
		{"sample-fraction", p.SampleFraction, p.SampleFraction > 0 && p.SampleFraction <= 0.5, "(0, 0.5]"},
	}
	for _, c := range checks {
		if bad(c.v) || !c.ok {
			return rangeErr(c.name, c.v, c.allowed)
		}
	}
	return nil
}

// ValidateDistance refuses a negative or absurd distance.
func ValidateDistance(km float64) error {
	if math.IsNaN(km) || km < 0 || km > 10000 {
		return rangeErr("distance", km, "[0, 10000] km")
	}
	return nil
}

// Transmittance is the overall transmittance eta = eta_B 10^(-alpha L/10) of fibre and detector.
func (p Params) Transmittance(km float64) float64 {
	return p.EtaB * math.Pow(10, -p.Alpha*km/10)
}

// intensities returns mu, nu, 0 indexed by class.
func (p Params) intensities() [3]float64 { return [3]float64{p.Mu, p.Nu, 0} }

// classProbs returns the probability that a pulse belongs to each class.
func (p Params) classProbs() [3]float64 { return [3]float64{p.PMu, p.PNu, 1 - p.PMu - p.PNu} }

// SiftFraction is the probability that both ends chose the same basis.
func (p Params) SiftFraction() float64 { return p.PZ*p.PZ + (1-p.PZ)*(1-p.PZ) }

// h is the binary entropy in bits.
func h(x float64) float64 {
	if x <= 0 || x >= 1 {
		return 0
	}
	return -x*math.Log2(x) - (1-x)*math.Log2(1-x)
}

// AnalyticRate is the asymptotic secret key rate per sent pulse of GLLP with ideal decoy states
// (Lo, Ma, Chen 2005): R = P_mu q { -Q_mu f h(E_mu) + Q_1 [1 - h(e_1)] }, clamped at zero. With
// P_mu = 1 and p_z = 1/2 it is the formula of REFERENCES.md; P_mu accounts for the pulses spent
// on decoys and q = p_z^2 + (1-p_z)^2 for biased basis choice.
func AnalyticRate(p Params, km float64) float64 {
	eta := p.Transmittance(km)
	g := physicalClasses(p, eta, Eve{})
	r := p.PMu * p.SiftFraction() * (-g.Q[ClassSignal]*p.F*h(g.E[ClassSignal]) + g.Y1*p.Mu*math.Exp(-p.Mu)*(1-h(g.E1)))
	return max(r, 0)
}

// PLOB is the repeaterless bound of Pirandola, Laurenza, Ottaviani, Banchi (Nat. Commun. 8,
// 15043, 2017) in bits per channel use: -log2(1 - eta) for the fibre transmittance eta.
func PLOB(p Params, km float64) float64 {
	t := math.Pow(10, -p.Alpha*km/10)
	if t >= 1 {
		return math.Inf(1)
	}
	return -math.Log2(1 - t)
}

// Bound is a rate bound that may be unbounded (+Inf); JSON has no infinity, so it encodes
// as null there.
type Bound float64

// MarshalJSON writes the bound, or null when it is infinite.
func (b Bound) MarshalJSON() ([]byte, error) {
	if math.IsInf(float64(b), 0) || math.IsNaN(float64(b)) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(b))
}

// MaxDistance is the distance at which AnalyticRate reaches zero, found by bisection.
func MaxDistance(p Params) float64 {
	lo, hi := 0.0, 1000.0
	if AnalyticRate(p, lo) == 0 {
		return 0
	}
	for hi-lo > 1e-3 {
		m := (lo + hi) / 2
		if AnalyticRate(p, m) > 0 {
			lo = m
		} else {
			hi = m
		}
	}
	return lo
}

// classModel holds per-class gains Q and error rates E, and the true single-photon yield and
// error, for the channel as the pulses experience it (with Eve if present).
type classModel struct {
	Q, E   [3]float64
	Y1, E1 float64
}

// binomial draws from Binomial(n, p). Below a mean of 1000 it sums geometric waiting times
// (exact); above, the normal approximation's skewness is under 3% and is used with rounding.
// Sampling counts this way instead of looping over pulses is what lets a block of 10^10 pulses
// cost microseconds.
func binomial(r *rand.Rand, n int64, p float64) int64 {
	if n <= 0 || p <= 0 {
		return 0
	}
	if p >= 1 {
		return n
	}
	if p > 0.5 {
		return n - binomial(r, n, 1-p)
	}
	mean := float64(n) * p
	if mean < 1000 {
		lq := math.Log1p(-p)
		var k, pos int64
		for {
			g := math.Floor(math.Log(1-r.Float64()) / lq)
			if g >= float64(n) {
				return k
			}
			pos += int64(g) + 1
			if pos > n {
				return k
			}
			k++
		}
	}
	x := math.Round(mean + math.Sqrt(mean*(1-p))*r.NormFloat64())
	return int64(min(max(x, 0), float64(n)))
}

// rawAlice is what Alice knows after the quantum phase, restricted to the pulses Bob detected
// (undetected pulses play no further part, so they are counted, not materialised). Detection
// events are listed grouped by intensity class: the classes are independent and exchangeable,
// so the order carries no information in this model, and grouping lets every later stage work
// on whole words.
type rawAlice struct {
	Sent     [3]int64 // pulses sent per class
	Detected [3]int   // detection events per class (events 0..Detected[0]-1 are signal, ...)
	Basis    Bits     // 1 = X basis
	Bits     Bits
}

// rawBob is what Bob knows after the quantum phase: his basis and bit for each detection event.
type rawBob struct {
	Basis Bits
	Bits  Bits
}

// blockTruth is what only the simulator knows; tests compare the estimates against it.
type blockTruth struct {
	Model   classModel
	Matched [3]int64 // sifted events per class
	Errors  [3]int64 // sifted events in error per class
}

// sampleCounts draws the number of pulses sent and detected per class for a block.
func sampleCounts(p Params, m classModel, pulses int64, rng *rand.Rand) (sent, det [3]int64) {
	pr := p.classProbs()
	sent[ClassSignal] = binomial(rng, pulses, pr[ClassSignal])
	sent[ClassWeak] = binomial(rng, pulses-sent[ClassSignal], pr[ClassWeak]/(1-pr[ClassSignal]))
	sent[ClassVacuum] = pulses - sent[ClassSignal] - sent[ClassWeak]
	for k := range det {
		det[k] = binomial(rng, sent[k], m.Q[k])
	}
	return sent, det
}

// maxEventsPerBlock bounds the detection events of one block (memory: 4 bits per event per end).
const maxEventsPerBlock = 1 << 33

// ErrBlockTooLarge means a block would hold more detection events than fit in memory.
var ErrBlockTooLarge = errors.New("qkdsim: block too large: more than 2^33 detection events; use fewer pulses per block")

// simulateBlock runs the quantum phase of one block: counts per class are sampled, then each
// detection event gets real bases and bits. Alice's bits are uniformly random; Bob's equal
// Alice's where the bases match except on an error pattern whose size per class is drawn from
// Binomial(matched, E_k) and whose positions are uniform; where the bases differ Bob's bit is
// random.
func simulateBlock(p Params, km float64, eve Eve, pulses int64, rng *rand.Rand) (rawAlice, rawBob, blockTruth, error) {
	m := physicalClasses(p, p.Transmittance(km), eve)
	sent, det := sampleCounts(p, m, pulses, rng)
	total := det[0] + det[1] + det[2]
	if total > maxEventsPerBlock {
		return rawAlice{}, rawBob{}, blockTruth{}, ErrBlockTooLarge
	}
	n := int(total)
	a := rawAlice{Sent: sent, Basis: basisBits(n, p.PZ, rng), Bits: randomBits(n, rng)}
	for k := range det {
		a.Detected[k] = int(det[k])
	}
	b := rawBob{Basis: basisBits(n, p.PZ, rng), Bits: NewBits(n)}
	// Bob's bit: Alice's where the bases match, random where they differ.
	for i := range b.Bits.W {
		diff := a.Basis.W[i] ^ b.Basis.W[i]
		b.Bits.W[i] = a.Bits.W[i] ^ (diff & rng.Uint64())
	}
	b.Bits.trim()
	t := blockTruth{Model: m}
	flipped := NewBits(n)
	from := 0
	for k := range det {
		to := from + int(det[k])
		matched := int64(to - from - (countRange(a.Basis, from, to) + countRange(b.Basis, from, to) - 2*countAnd(a.Basis, b.Basis, from, to)))
		t.Matched[k] = matched
		e := binomial(rng, matched, m.E[k])
		t.Errors[k] = e
		// Uniform positions among the matched events of the class, by rejection: at most half of
		// them are flipped, so this costs O(e) draws.
		for placed := int64(0); placed < e; {
			i := from + rng.IntN(to-from)
			if a.Basis.Get(i) != b.Basis.Get(i) || flipped.Get(i) == 1 {
				continue
			}
			flipped.Flip(i)
			b.Bits.Flip(i)
			placed++
		}
		from = to
	}
	return a, b, t, nil
}

// randomBits returns n uniformly random bits.
func randomBits(n int, rng *rand.Rand) Bits {
	b := NewBits(n)
	for i := range b.W {
		b.W[i] = rng.Uint64()
	}
	b.trim()
	return b
}

// basisBits returns n basis choices, 1 (X) with probability 1 - pz.
func basisBits(n int, pz float64, rng *rand.Rand) Bits {
	if pz == 0.5 {
		return randomBits(n, rng)
	}
	b := NewBits(n)
	thr := uint64((1 - pz) * (1 << 53))
	for i := range n {
		if rng.Uint64()>>11 < thr {
			b.Set(i, 1)
		}
	}
	return b
}
