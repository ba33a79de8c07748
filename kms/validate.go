package kms

// Checks shared by the API layers (before proposing) and by Apply (again, since the state may
// have changed in between). Messages follow ETSI GS QKD 014 V1.1.1 where it prescribes one
// (clause 6.5 and the request rules of clause 6.2) and name the limit otherwise.

// ValidateIssue checks an ETSI 014 Get key request (enc_keys) of master for slave, before it is
// proposed: the SAEs against the registry, number and size against the limits, the additional
// slaves against max_SAE_ID_count and the rule that all slaves sit behind the same peer KME.
func (m *Machine) ValidateIssue(master, slave string, number, size int, additional []string) error {
	slaves := make([]string, 0, 1+len(additional))
	slaves = append(append(slaves, slave), additional...)
	_, err := m.checkIssue(master, slaves, number, size)
	return err
}

// PeerOf returns the KME serving slave, which must be another KME than this one: the pool keys
// for that slave are drawn from.
func (m *Machine) PeerOf(slave string) (string, error) {
	kme, ok := m.cfg.Registry.KME(slave)
	if !ok {
		return "", reject(ErrUnknownSAE, "unknown SAE %q", slave)
	}
	if kme == m.cfg.Self {
		return "", reject(ErrBadRequest, "SAE %q is served by this KME; keys are delivered only to SAEs of another KME", slave)
	}
	return kme, nil
}

// checkIssue returns the peer KME the keys will come from.
func (m *Machine) checkIssue(master string, slaves []string, number, bits int) (string, error) {
	if err := m.checkLocalSAE(master, "master"); err != nil {
		return "", err
	}
	if len(slaves) == 0 || slaves[0] == "" {
		return "", reject(ErrBadRequest, "no slave SAE given")
	}
	if extra := len(slaves) - 1; extra > m.cfg.Limits.MaxSAEIDCount {
		return "", reject(ErrBadRequest, "%d additional_slave_SAE_IDs exceed max_SAE_ID_count %d", extra, m.cfg.Limits.MaxSAEIDCount)
	}
	var peer string
	seen := make(map[string]bool, len(slaves))
	for i, s := range slaves {
		if s == master {
			return "", reject(ErrBadRequest, "the master SAE %q cannot be its own slave", s)
		}
		if seen[s] {
			return "", reject(ErrBadRequest, "slave SAE %q named twice", s)
		}
		seen[s] = true
		kme, err := m.PeerOf(s)
		if err != nil {
			return "", err
		}
		if i == 0 {
			peer = kme
		} else if kme != peer {
			return "", reject(ErrBadRequest, "all slave SAEs must be served by the same peer KME (%q is served by %q, not %q)", s, kme, peer)
		}
	}
	if err := m.checkSize(bits); err != nil {
		return "", err
	}
	if err := m.checkNumber(number); err != nil {
		return "", err
	}
	return peer, nil
}

// checkLocalSAE checks that sae is registered here, at this KME.
func (m *Machine) checkLocalSAE(sae, role string) error {
	kme, ok := m.cfg.Registry.KME(sae)
	if !ok {
		return reject(ErrUnknownSAE, "unknown %s SAE %q", role, sae)
	}
	if kme != m.cfg.Self {
		return reject(ErrUnauthorized, "%s SAE %q is not served by this KME", role, sae)
	}
	return nil
}

func (m *Machine) checkSize(bits int) error {
	l := m.cfg.Limits
	switch {
	case bits%8 != 0:
		return reject(ErrBadRequest, "size shall be a multiple of 8")
	case bits < l.MinKeySize:
		return reject(ErrBadRequest, "size %d is below min_key_size %d", bits, l.MinKeySize)
	case bits > l.MaxKeySize:
		return reject(ErrBadRequest, "size %d exceeds max_key_size %d", bits, l.MaxKeySize)
	}
	return nil
}

func (m *Machine) checkNumber(n int) error {
	switch {
	case n < 1:
		return reject(ErrBadRequest, "number %d must be at least 1", n)
	case n > m.cfg.Limits.MaxKeyPerRequest:
		return reject(ErrBadRequest, "number %d exceeds max_key_per_request %d", n, m.cfg.Limits.MaxKeyPerRequest)
	}
	return nil
}

// checkKeyIDs checks a request's key IDs: present, at most max_key_per_request, none twice.
func (m *Machine) checkKeyIDs(ids []string) error {
	if len(ids) == 0 {
		return reject(ErrBadRequest, "no key IDs given")
	}
	if len(ids) > m.cfg.Limits.MaxKeyPerRequest {
		return reject(ErrBadRequest, "%d key IDs exceed max_key_per_request %d", len(ids), m.cfg.Limits.MaxKeyPerRequest)
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if id == "" || len(id) > maxKeyIDLen {
			return reject(ErrBadRequest, "malformed key ID")
		}
		if seen[id] {
			return reject(ErrBadRequest, "key ID %q requested twice", id)
		}
		seen[id] = true
	}
	return nil
}

// maxKeyIDLen bounds key IDs; ETSI 014 key IDs are UUIDs (36 characters).
const maxKeyIDLen = 128

// ValidateFetch checks an ETSI 014 Get key with key IDs request (dec_keys) by caller for keys
// of master, before it is proposed.
func (m *Machine) ValidateFetch(master, caller string, keyIDs []string) error {
	if err := m.checkLocalSAE(caller, "calling"); err != nil {
		return err
	}
	if _, err := m.PeerOf(master); err != nil {
		return err
	}
	return m.checkKeyIDs(keyIDs)
}
