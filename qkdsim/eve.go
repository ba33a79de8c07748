package qkdsim

import "math"

// Eve describes an eavesdropper on the quantum channel.
//
// Intercept-resend (Bennett, Brassard 1984): on a fraction InterceptFraction of the pulses that
// carry photons Eve measures in a random basis and resends her result. When her basis is wrong
// (probability 1/2) Bob's bit is random in the matching basis, so the error rate of those pulses
// becomes e_d/2 + 1/4 and the QBER grows by about p/4 (25% when p = 1).
//
// Photon-number splitting (Brassard, Lütkenhaus, Mor, Sanders, PRL 85, 1330, 2000): Eve blocks
// single-photon pulses, keeps one photon of every multi-photon pulse and forwards the rest over a
// lossless line, scaled so Bob's signal gain equals the expected Q_mu. Without decoys nothing
// looks wrong; the weak decoy, whose multi-photon fraction is smaller, then shows a gain that
// is too low and the decoy estimate of Y1 collapses (Hwang, PRL 91, 057901, 2003).
type Eve struct {
	InterceptFraction float64
	PNS               bool
}

// Active reports whether Eve does anything.
func (e Eve) Active() bool { return e.InterceptFraction > 0 || e.PNS }

// ValidateEve refuses an impossible intercept fraction.
func (e Eve) Validate() error {
	if math.IsNaN(e.InterceptFraction) || e.InterceptFraction < 0 || e.InterceptFraction > 1 {
		return rangeErr("eve-fraction", e.InterceptFraction, "[0, 1]")
	}
	return nil
}

// physicalClasses returns the gains, error rates and true single-photon parameters of each
// intensity class for overall transmittance eta.
func physicalClasses(p Params, eta float64, eve Eve) classModel {
	var m classModel
	// Error rate of a detection caused by a photon: misalignment, raised by intercept-resend.
	pf := eve.InterceptFraction
	ePhoton := (1-pf)*p.Ed + pf*(p.Ed/2+0.25)
	in := p.intensities()
	if !eve.PNS {
		for k, mu := range in {
			photon := 1 - math.Exp(-eta*mu)
			m.Q[k] = p.Y0 + photon
			m.E[k] = (p.Y0/2 + ePhoton*photon) / m.Q[k]
		}
		m.Y1 = p.Y0 + eta
		m.E1 = (p.Y0/2 + ePhoton*eta) / m.Y1
	} else {
		// Eve forwards multi-photon pulses with yield c chosen so Q_mu is as expected; she cannot
		// exceed yield 1, so at short distance she has to let some loss show.
		multi := func(x float64) float64 { return 1 - math.Exp(-x)*(1+x) }
		c := math.Min(1, (1-math.Exp(-eta*p.Mu))/multi(p.Mu))
		for k, mu := range in {
			photon := c * multi(mu)
			m.Q[k] = p.Y0 + photon
			m.E[k] = (p.Y0/2 + ePhoton*photon) / m.Q[k]
		}
		m.Y1 = p.Y0 // single photons are blocked: only dark counts remain
		m.E1 = 0.5
	}
	for k := range m.E {
		if m.Q[k] == 0 {
			m.E[k] = 0.5
		}
	}
	if m.Y1 == 0 {
		m.E1 = 0.5
	}
	return m
}
