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
// the pool's Owned list too (legacy is true); one of poolVersion leaves p.Owned as it was.
func decodePoolRecord(raw []byte, p *kms.Pool) (legacy bool, err error) {
	return len(raw) == 0 || raw[0] != poolVersion, decodeVersioned(raw, poolVersion, 0, p, kms.DecodePool)
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
	return decodeVersioned(raw, blockVersion, 8, blk, kms.DecodeBlock)
}

// decodeVersioned reads a record that is version, fixed bytes of index fields and a binary
// body that decode reads, or a JSON record of recordVersion (with the same fixed bytes)
// written before the binary codec existed.
func decodeVersioned[T any](raw []byte, version byte, fixed int, v *T, decode func([]byte, *T) error) error {
	if len(raw) > fixed && raw[0] == version {
		if err := decode(raw[1+fixed:], v); err != nil {
			return fmt.Errorf("record body: %w: %w", err, ErrTampered)
		}
		return nil
	}
	return decodeRecord(raw, fixed, v)
}
