package kms

// applyExpire ends up to Limit reservations whose expiry is at or before the command's time
// (Tx.ExpiredBefore, oldest first). At a slave site a key not fetched by every slave has its
// bytes erased and released, and is kept as a tombstone (state Expired) for TombstoneTTL; at the
// issuing site, where the bytes were erased when issued, the record is deleted. Tombstones whose
// time has come are deleted as well. Result.Expired lists the keys that expired (tombstones
// purged are not listed).
func (m *Machine) applyExpire(tx Tx, c *Command) *Result {
	limit := c.Expire.Limit
	if limit <= 0 {
		limit = DefaultExpireLimit
	}
	ids, err := tx.ExpiredBefore(c.Time, limit)
	if err != nil {
		return fail(storageErr("list expired reservations", err))
	}
	res := &Result{}
	var expired, erased []*Reservation
	bs := newBlockSet(tx)
	pools := map[string]*Pool{}
	var poolOrder []string
	for _, id := range ids {
		r, err := tx.Reservation(id)
		if err != nil {
			return fail(storageErr("read reservation", err))
		}
		if r == nil || r.Expires.After(c.Time) {
			continue
		}
		switch {
		case r.State != KeyIssued, r.Owner == m.cfg.Self:
			if err := tx.DeleteReservation(id); err != nil {
				return fail(storageErr("delete reservation", err))
			}
			if r.State == KeyIssued {
				res.Expired = append(res.Expired, id)
				expired = append(expired, r)
			}
		default:
			if err := m.release(tx, bs, pools, &poolOrder, r); err != nil {
				return fail(err)
			}
			r.State = KeyExpired
			r.Expires = r.Expires.Add(m.cfg.TombstoneTTL)
			if err := tx.PutReservation(r); err != nil {
				return fail(storageErr("write reservation", err))
			}
			res.Expired = append(res.Expired, id)
			expired = append(expired, r)
			erased = append(erased, r)
		}
	}
	if err := finish(tx, bs, pools, poolOrder); err != nil {
		return fail(err)
	}
	retired, err := m.retireAllEpochs(tx, c.Time)
	if err != nil {
		return fail(err)
	}
	// Request records past the deduplication window go too, and with them the sealed copies of
	// the keys their requests delivered.
	if _, err := tx.ExpireRequests(c.Time.Add(-m.cfg.RequestTTL), limit); err != nil {
		return fail(storageErr("expire request records", err))
	}
	es := keyEntries(EventKeyExpired, expired, nil)
	for _, e := range keyEntries(EventKeyErased, erased, nil) {
		e.Detail = "expired before every slave fetched it"
		es = append(es, e)
	}
	return m.auditOrFail(tx, c, res, append(append(es, bs.shredEntries()...), retired...)...)
}
