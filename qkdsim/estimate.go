package qkdsim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// Parameter estimation.
//
// The QBER of the signal class is measured on a random sample of the sifted signal bits, which
// are then discarded (sacrificed). The decoy classes are used for estimation only: Alice reveals
// all of their sifted bits. From the gains and error rates, the vacuum + weak decoy method of
// Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), eqs. (34)-(37), bounds the single-photon yield from
// below and its error rate from above, with statistical fluctuations of u_alpha standard
// deviations (their Sec. IV; u_alpha chosen so the Gaussian tail is eps_sec).
//
// Messages (unsigned varints unless noted):
//
//	MsgEstimate:      sent[signal] sent[weak] sent[vacuum] sample | seed (32 bytes) |
//	                  Alice's sample bits | Alice's weak bits | Alice's vacuum bits (packed, each
//	                  starting on a byte boundary)
//	MsgEstimateReply: errors in sample, weak, vacuum
//
// Both ends then run EstimateDecoy on the same numbers and reach the same decision.

// Sentinel errors for an aborted block; both ends reach them at the same point of the protocol.
var (
	ErrQBERTooHigh       = errors.New("qkdsim: QBER above threshold")
	ErrNoSinglePhotonKey = errors.New("qkdsim: decoy estimates show no single-photon key")
	ErrKeyTooShort       = errors.New("qkdsim: finite-key bound leaves no key")
)

// EstimateInput is what both ends know after sifting and the estimation exchange.
type EstimateInput struct {
	Sent     [3]int64 // pulses sent per class (announced by Alice)
	Detected [3]int64 // detection events per class
	Sifted   [3]int64 // sifted events per class
	Sample   int64    // sifted signal bits sacrificed for the QBER
	Errors   [3]int64 // errors in the signal sample, in the weak and in the vacuum sifted bits
}

// Estimate holds measured values and decoy-state bounds.
type Estimate struct {
	QBER           float64    `json:"qber"` // of the signal sample
	Gain           [3]float64 `json:"gain"`
	ErrorRate      [3]float64 `json:"error_rate"`
	Y0Upper        float64    `json:"y0_upper"`
	Y1Lower        float64    `json:"y1_lower"`
	E1Upper        float64    `json:"e1_upper"`
	Q1Lower        float64    `json:"q1_lower"`
	SingleFraction float64    `json:"single_fraction"` // lower bound on Q1/Q_mu: share of signal bits from single photons
}

// fluctuationSigmas is u_alpha for a one-sided Gaussian tail of eps.
func fluctuationSigmas(eps float64) float64 {
	return math.Sqrt2 * math.Erfinv(1-2*eps)
}

// EstimateDecoy computes the QBER and the decoy-state bounds from counts. It is deterministic, so
// both ends get the same answer.
func EstimateDecoy(p Params, in EstimateInput) Estimate {
	var e Estimate
	u := fluctuationSigmas(p.EpsSec)
	if in.Sample > 0 {
		e.QBER = float64(in.Errors[ClassSignal]) / float64(in.Sample)
	}
	var qL, qU [3]float64
	for k := range in.Sent {
		if in.Sent[k] == 0 {
			continue
		}
		n := float64(in.Sent[k])
		q := float64(in.Detected[k]) / n
		e.Gain[k] = q
		d := u * math.Sqrt(max(float64(in.Detected[k]), 1)) / n
		qL[k], qU[k] = max(q-d, 0), min(q+d, 1)
		if in.Sifted[k] > 0 {
			e.ErrorRate[k] = float64(in.Errors[k]) / float64(in.Sifted[k])
		}
	}
	e.ErrorRate[ClassSignal] = e.QBER
	mu, nu := p.Mu, p.Nu
	y0U, y0L := qU[ClassVacuum], qL[ClassVacuum]
	e.Y0Upper = y0U
	// Ma et al. (2005) eq. (34) with Q_nu at its lower and Q_mu, Y0 at their upper bounds.
	y1 := mu / (mu*nu - nu*nu) * (qL[ClassWeak]*math.Exp(nu) - qU[ClassSignal]*math.Exp(mu)*nu*nu/(mu*mu) - (mu*mu-nu*nu)/(mu*mu)*y0U)
	e.Y1Lower = max(y1, 0)
	e.E1Upper = 0.5
	if e.Y1Lower > 0 && in.Sifted[ClassWeak] > 0 {
		// eq. (37): e1 <= (E_nu Q_nu e^nu - e0 Y0) / (Y1 nu), e0 = 1/2, with the error count at its
		// upper bound.
		errs := float64(in.Errors[ClassWeak])
		eNuU := (errs + u*math.Sqrt(max(errs, 1))) / float64(in.Sifted[ClassWeak])
		e1 := (eNuU*qU[ClassWeak]*math.Exp(nu) - y0L/2) / (e.Y1Lower * nu)
		e.E1Upper = min(max(e1, 0), 0.5)
	}
	e.Q1Lower = e.Y1Lower * mu * math.Exp(-mu)
	if e.Gain[ClassSignal] > 0 {
		e.SingleFraction = min(e.Q1Lower/e.Gain[ClassSignal], 1)
	}
	return e
}

// estimateMsg is Alice's estimation message.
type estimateMsg struct {
	Sent           [3]int64
	Sample         int64
	Seed           [32]byte
	SampleBits     Bits
	Weak, Vacuum   Bits
	weakN, vacuumN int
}

func encodeEstimate(m estimateMsg) []byte {
	var out []byte
	for _, s := range m.Sent {
		out = binary.AppendUvarint(out, uint64(s))
	}
	out = binary.AppendUvarint(out, uint64(m.Sample))
	out = append(out, m.Seed[:]...)
	out = append(out, m.SampleBits.Bytes()...)
	out = append(out, m.Weak.Bytes()...)
	return append(out, m.Vacuum.Bytes()...)
}

// decodeEstimate parses Alice's estimation message given what Bob knows: his sifted counts.
func decodeEstimate(body []byte, signal, weak, vacuum int) (estimateMsg, error) {
	var m estimateMsg
	for i := range m.Sent {
		v, k := binary.Uvarint(body)
		if k <= 0 || v > 1<<62 {
			return m, fmt.Errorf("qkdsim: estimate: bad pulse count")
		}
		m.Sent[i] = int64(v)
		body = body[k:]
	}
	v, k := binary.Uvarint(body)
	if k <= 0 || v > uint64(signal) {
		return m, fmt.Errorf("qkdsim: estimate: bad sample size")
	}
	m.Sample = int64(v)
	body = body[k:]
	if len(body) < 32 {
		return m, fmt.Errorf("qkdsim: estimate: short seed")
	}
	copy(m.Seed[:], body)
	body = body[32:]
	ns, nw, nv := (int(v)+7)/8, (weak+7)/8, (vacuum+7)/8
	if len(body) != ns+nw+nv {
		return m, fmt.Errorf("qkdsim: estimate: %d bytes of bits, want %d", len(body), ns+nw+nv)
	}
	m.SampleBits = BitsFromBytes(body[:ns], int(v))
	m.Weak = BitsFromBytes(body[ns:ns+nw], weak)
	m.Vacuum = BitsFromBytes(body[ns+nw:], vacuum)
	return m, nil
}

func encodeEstimateReply(errs [3]int64) []byte {
	var out []byte
	for _, e := range errs {
		out = binary.AppendUvarint(out, uint64(e))
	}
	return out
}

func decodeEstimateReply(body []byte, limits [3]int64) ([3]int64, error) {
	var errs [3]int64
	for i := range errs {
		v, k := binary.Uvarint(body)
		if k <= 0 || v > uint64(limits[i]) {
			return errs, fmt.Errorf("qkdsim: estimate reply: bad error count")
		}
		errs[i] = int64(v)
		body = body[k:]
	}
	if len(body) != 0 {
		return errs, fmt.Errorf("qkdsim: estimate reply: %d trailing bytes", len(body))
	}
	return errs, nil
}

// sampleMask marks k distinct positions out of n, drawn from seed (both ends derive the same).
func sampleMask(seed [32]byte, n, k int) Bits {
	mask := NewBits(n)
	if k > n/2 {
		// Few positions left out: mark all, then clear n-k.
		for i := range mask.W {
			mask.W[i] = ^uint64(0)
		}
		mask.trim()
	}
	rng := rand.New(rand.NewChaCha8(seed))
	want, val := k, uint8(1)
	if k > n/2 {
		want, val = n-k, 0
	}
	for placed := 0; placed < want; {
		i := rng.IntN(n)
		if mask.Get(i) == val {
			continue
		}
		mask.Set(i, val)
		placed++
	}
	return mask
}

func invert(b Bits) Bits {
	out := NewBits(b.N)
	for i, w := range b.W {
		out.W[i] = ^w
	}
	out.trim()
	return out
}

// sampleSize is the number of signal bits sacrificed for the QBER estimate.
func sampleSize(p Params, signal int) int {
	return min(int(math.Ceil(p.SampleFraction*float64(signal))), signal)
}

// estimateResult is one end's outcome: the estimate, and the signal bits left for the key.
type estimateResult struct {
	Input    EstimateInput
	Estimate Estimate
	Key      Bits
	Revealed int64 // bits revealed on the channel (sample and decoy bits)
}

// estimateAlice picks the sample, reveals her sample and decoy bits and learns Bob's error
// counts.
func estimateAlice(ch Channel, p Params, raw rawAlice, s siftResult, rnd interface{ Read([]byte) (int, error) }) (estimateResult, error) {
	sig := s.Class[ClassSignal]
	m := estimateMsg{Sent: raw.Sent, Weak: s.Class[ClassWeak], Vacuum: s.Class[ClassVacuum]}
	m.Sample = int64(sampleSize(p, sig.N))
	if _, err := rnd.Read(m.Seed[:]); err != nil {
		return estimateResult{}, fmt.Errorf("qkdsim: estimate: draw sample seed: %w", err)
	}
	mask := sampleMask(m.Seed, sig.N, int(m.Sample))
	m.SampleBits = compress(sig, mask, 0, sig.N)
	if err := ch.Send(Message{Type: MsgEstimate, Body: encodeEstimate(m)}); err != nil {
		return estimateResult{}, fmt.Errorf("qkdsim: estimate: send: %w", err)
	}
	r, err := ch.Recv()
	if err != nil {
		return estimateResult{}, fmt.Errorf("qkdsim: estimate: receive: %w", err)
	}
	if r.Type != MsgEstimateReply {
		return estimateResult{}, fmt.Errorf("qkdsim: estimate: unexpected message type %#x", r.Type)
	}
	in := EstimateInput{Sent: raw.Sent, Detected: s.Detected, Sample: m.Sample}
	for k := range in.Sifted {
		in.Sifted[k] = int64(s.Class[k].N)
	}
	errs, err := decodeEstimateReply(r.Body, [3]int64{in.Sample, in.Sifted[ClassWeak], in.Sifted[ClassVacuum]})
	if err != nil {
		return estimateResult{}, err
	}
	in.Errors = errs
	return estimateResult{Input: in, Estimate: EstimateDecoy(p, in), Key: compress(sig, invert(mask), 0, sig.N),
		Revealed: in.Sample + in.Sifted[ClassWeak] + in.Sifted[ClassVacuum]}, nil
}

// estimateBob compares Alice's revealed bits with his and reports the error counts.
func estimateBob(ch Channel, p Params, s siftResult) (estimateResult, error) {
	r, err := ch.Recv()
	if err != nil {
		return estimateResult{}, fmt.Errorf("qkdsim: estimate: receive: %w", err)
	}
	if r.Type != MsgEstimate {
		return estimateResult{}, fmt.Errorf("qkdsim: estimate: unexpected message type %#x", r.Type)
	}
	sig := s.Class[ClassSignal]
	m, err := decodeEstimate(r.Body, sig.N, s.Class[ClassWeak].N, s.Class[ClassVacuum].N)
	if err != nil {
		return estimateResult{}, err
	}
	if want := int64(sampleSize(p, sig.N)); m.Sample != want {
		return estimateResult{}, fmt.Errorf("qkdsim: estimate: sample of %d bits, want %d", m.Sample, want)
	}
	mask := sampleMask(m.Seed, sig.N, int(m.Sample))
	in := EstimateInput{Sent: m.Sent, Detected: s.Detected, Sample: m.Sample}
	for k := range in.Sifted {
		in.Sifted[k] = int64(s.Class[k].N)
	}
	in.Errors[ClassSignal] = int64(Diff(m.SampleBits, compress(sig, mask, 0, sig.N)))
	in.Errors[ClassWeak] = int64(Diff(m.Weak, s.Class[ClassWeak]))
	in.Errors[ClassVacuum] = int64(Diff(m.Vacuum, s.Class[ClassVacuum]))
	if err := ch.Send(Message{Type: MsgEstimateReply, Body: encodeEstimateReply(in.Errors)}); err != nil {
		return estimateResult{}, fmt.Errorf("qkdsim: estimate: send reply: %w", err)
	}
	return estimateResult{Input: in, Estimate: EstimateDecoy(p, in), Key: compress(sig, invert(mask), 0, sig.N),
		Revealed: in.Sample + in.Sifted[ClassWeak] + in.Sifted[ClassVacuum]}, nil
}
