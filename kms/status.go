package kms

// StatusInfo holds the fields of the ETSI GS QKD 014 Status object (clause 6.1).
type StatusInfo struct {
	SourceKMEID      string `json:"source_KME_ID"`
	TargetKMEID      string `json:"target_KME_ID"`
	MasterSAEID      string `json:"master_SAE_ID"`
	SlaveSAEID       string `json:"slave_SAE_ID"`
	KeySize          int    `json:"key_size"`
	StoredKeyCount   int    `json:"stored_key_count"`
	MaxKeyCount      int    `json:"max_key_count"`
	MaxKeyPerRequest int    `json:"max_key_per_request"`
	MaxKeySize       int    `json:"max_key_size"`
	MinKeySize       int    `json:"min_key_size"`
	MaxSAEIDCount    int    `json:"max_SAE_ID_count"`
}

// Status answers ETSI 014 Get status for master asking about slave. stored_key_count is the
// number of default-size keys this site can issue now towards the slave's KME: the free bytes
// of the blocks it owns in that pool (Pool.Available), capped at max_key_count.
func (m *Machine) Status(tx Tx, master, slave string) (StatusInfo, error) {
	if err := m.checkLocalSAE(master, "master"); err != nil {
		return StatusInfo{}, err
	}
	peer, err := m.PeerOf(slave)
	if err != nil {
		return StatusInfo{}, err
	}
	p, err := m.PoolInfo(tx, peer)
	if err != nil {
		return StatusInfo{}, err
	}
	l := m.cfg.Limits
	return StatusInfo{
		SourceKMEID:      m.cfg.Self,
		TargetKMEID:      peer,
		MasterSAEID:      master,
		SlaveSAEID:       slave,
		KeySize:          l.KeySize,
		StoredKeyCount:   int(min(p.Available*8/int64(l.KeySize), int64(l.MaxKeyCount))),
		MaxKeyCount:      l.MaxKeyCount,
		MaxKeyPerRequest: l.MaxKeyPerRequest,
		MaxKeySize:       l.MaxKeySize,
		MinKeySize:       l.MinKeySize,
		MaxSAEIDCount:    l.MaxSAEIDCount,
	}, nil
}

// PoolInfo returns the pool of peer, or an empty one when no block of it was ingested yet.
func (m *Machine) PoolInfo(tx Tx, peer string) (Pool, error) {
	p, err := tx.Pool(peer)
	if err != nil {
		return Pool{}, storageErr("read pool", err)
	}
	if p == nil {
		return Pool{Peer: peer}, nil
	}
	return *p, nil
}

// Lookup returns the live reservations this site issued among keyIDs, for the peer's pull
// path (a dec_keys that reached the peer before the push). Unknown, expired and foreign IDs
// are left out. The caller must hand the peer only reservations whose Peer is that peer's KME
// ID (PeerReserve at the peer refuses others anyway).
func (m *Machine) Lookup(tx Tx, keyIDs []string) ([]Reservation, error) {
	var out []Reservation
	for _, id := range keyIDs {
		r, err := tx.Reservation(id)
		if err != nil {
			return nil, storageErr("read reservation", err)
		}
		if r != nil && r.Owner == m.cfg.Self && r.State == KeyIssued {
			out = append(out, *r)
		}
	}
	return out, nil
}

// Absent returns the IDs among keyIDs that have no reservation here: those a dec_keys must pull
// from the issuing site before the Fetch can succeed.
func (m *Machine) Absent(tx Tx, keyIDs []string) ([]string, error) {
	var out []string
	for _, id := range keyIDs {
		r, err := tx.Reservation(id)
		if err != nil {
			return nil, storageErr("read reservation", err)
		}
		if r == nil {
			out = append(out, id)
		}
	}
	return out, nil
}
