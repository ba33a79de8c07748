package store

import (
	"fmt"

	"github.com/qkms/qkms/kms"
)

// Reservations are the hottest record (one read and one write per key issued or fetched), so
// they get a compact binary body instead of JSON: about 5x less CPU per key. A record is the
// version byte, the fixed index fields (see tx.go), then the body of kms.AppendReservation
// (layout in kms/wire.go; the raft log carries pushed reservations in the same form).
const reservationVersion = 3 // 3 added Epoch

func encodeReservation(fixed []byte, r *kms.Reservation) []byte {
	b := make([]byte, 0, 1+len(fixed)+kms.ReservationSize(r))
	b = append(b, reservationVersion)
	b = append(b, fixed...)
	return kms.AppendReservation(b, r)
}

// Pools are written by every command that issues, fetches or reserves keys: version | body of
// kms.AppendPool. Their Owned list is a record of its own (tx.go). JSON records of
// recordVersion, written before, hold the whole pool and are still read.
const poolVersion = 5

func encodePool(p *kms.Pool) []byte {
	b := append(make([]byte, 0, 64+len(p.Peer)+48*len(p.Epochs)), poolVersion)
	return kms.AppendPool(b, p)
}

// decodePoolRecord reads a pool record of either version. A record of recordVersion holds
// the pool's Owned list too (legacy is true); one of poolVersion leaves p.Owned nil.
func decodePoolRecord(raw []byte, p *kms.Pool) (legacy bool, err error) {
	if len(raw) > 0 && raw[0] == poolVersion {
		*p = kms.Pool{}
		if err := kms.DecodePool(raw[1:], p); err != nil {
			return false, fmt.Errorf("record body: %w: %w", err, ErrTampered)
		}
		return false, nil
	}
	return true, decodeRecord(raw, 0, p)
}

// Blocks are read and written by every command that issues, fetches or expires keys, so they
// too have a binary body (kms.AppendBlock) instead of JSON: version | seq(8) | body. Records of
// recordVersion, written before, hold JSON after the seq and are still read.
const blockVersion = 4

func encodeBlock(seq []byte, blk *kms.Block) []byte {
	b := make([]byte, 0, 64+len(seq)+len(blk.Peer)+len(blk.ID)+len(blk.Owner)+len(blk.Tag))
	b = append(b, blockVersion)
	b = append(b, seq...)
	return kms.AppendBlock(b, blk)
}

// decodeBlockRecord reads a block record of either version.
func decodeBlockRecord(raw []byte, blk *kms.Block) error {
	if len(raw) >= 9 && raw[0] == blockVersion {
		if err := kms.DecodeBlock(raw[9:], blk); err != nil {
			return fmt.Errorf("record body: %w: %w", err, ErrTampered)
		}
		return nil
	}
	return decodeRecord(raw, 8, blk)
}
