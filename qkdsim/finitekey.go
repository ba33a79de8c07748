package qkdsim

import "math"

// Finite-key length (Tomamichel, Lim, Gisin, Renner, Nat. Commun. 3, 634, 2012, eq. (2)):
//
//	l <= n [1 - h(Q + mu)] - leak_EC - log2(2 / (eps_sec^2 eps_cor)),
//	mu = sqrt((n + k)/(n k) * (k + 1)/k * ln(2/eps_sec)),
//
// where k bits were sacrificed for estimation. With a weak coherent source only the single-photon
// part of the key is secret (GLLP), so n is replaced by the decoy lower bound on single-photon
// bits s1 = n Q1^L/Q_mu and Q by the decoy upper bound on their phase error e1^U; the sampling
// term mu then carries e1^U from the estimation set to the key set. The verification tag is
// public, so its bits are subtracted as leakage too.

// TomamichelMu is the statistical correction of the phase error for n key bits and k sample bits.
func TomamichelMu(n, k int64, epsSec float64) float64 {
	if n <= 0 || k <= 0 {
		return 0.5
	}
	fn, fk := float64(n), float64(k)
	return math.Sqrt((fn + fk) / (fn * fk) * (fk + 1) / fk * math.Log(2/epsSec))
}

// FiniteKeyInput is what the length bound needs.
type FiniteKeyInput struct {
	N              int64   // key bits after the sample was removed
	K              int64   // bits sacrificed for estimation
	SingleFraction float64 // lower bound on the share of single-photon bits
	E1Upper        float64 // upper bound on the single-photon phase error
	LeakEC         int64   // bits revealed by error correction
	TagBits        int64   // verification tag bits
	EpsSec, EpsCor float64
}

// PhaseErrorBound is e1^U + mu, capped at 1/2.
func (in FiniteKeyInput) PhaseErrorBound() float64 {
	return min(in.E1Upper+TomamichelMu(in.N, in.K, in.EpsSec), 0.5)
}

// FiniteKeyLength is the secure key length in bits (0 when nothing is left).
func FiniteKeyLength(in FiniteKeyInput) int64 {
	s1 := float64(in.N) * in.SingleFraction
	l := s1*(1-h(in.PhaseErrorBound())) - float64(in.LeakEC) - float64(in.TagBits) -
		math.Log2(2/(in.EpsSec*in.EpsSec*in.EpsCor))
	if l <= 0 || math.IsNaN(l) {
		return 0
	}
	return int64(math.Floor(l))
}

// AsymptoticLength is the GLLP length with ideal (infinite-decoy) knowledge of Y1 and e1 and an
// error-correction leak of f n h(qber): n [Q1/Q_mu (1 - h(e1)) - f h(qber)].
func AsymptoticLength(n int64, singleFraction, e1, qber, f float64) int64 {
	l := float64(n) * (singleFraction*(1-h(e1)) - f*h(qber))
	if l <= 0 {
		return 0
	}
	return int64(math.Floor(l))
}
