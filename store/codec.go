package store

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/qkms/qkms/kms"
)

// Reservations are the hottest record (one read and one write per key issued or fetched), so
// they get a compact binary body instead of JSON: about 5x less CPU per key. Layout, after the
// version byte and the fixed index fields (see tx.go):
//
//	str KeyID, Peer, Owner, Master | list Slaves | list Fetched | varint Bits |
//	uvarint len(Ranges) {str Block, varint Off, varint Len} | str Provenance |
//	time Issued | time Expires | byte State | byte Pushed
//
// str is uvarint length + bytes; list is uvarint count + strs; time is a byte 0 (zero time) or
// 1 followed by varint Unix seconds and uvarint nanoseconds (decoded in UTC).
const reservationVersion = 3 // 3 added Epoch

var errShortRecord = errors.New("truncated or malformed record")

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrs(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendStr(b, s)
	}
	return b
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func encodeReservation(fixed []byte, r *kms.Reservation) []byte {
	n := 1 + len(fixed) + 64 + len(r.KeyID) + len(r.Peer) + len(r.Owner) + len(r.Master) + len(r.Epoch) + 24*len(r.Ranges)
	for _, s := range r.Slaves {
		n += len(s) + 2
	}
	b := make([]byte, 0, n)
	b = append(b, reservationVersion)
	b = append(b, fixed...)
	b = appendStr(b, r.KeyID)
	b = appendStr(b, r.Peer)
	b = appendStr(b, r.Owner)
	b = appendStr(b, r.Master)
	b = appendStrs(b, r.Slaves)
	b = appendStrs(b, r.Fetched)
	b = binary.AppendVarint(b, int64(r.Bits))
	b = binary.AppendUvarint(b, uint64(len(r.Ranges)))
	for _, rg := range r.Ranges {
		b = appendStr(b, rg.Block)
		b = binary.AppendVarint(b, int64(rg.Off))
		b = binary.AppendVarint(b, int64(rg.Len))
	}
	b = appendStr(b, string(r.Provenance))
	b = appendTime(b, r.Issued)
	b = appendTime(b, r.Expires)
	pushed := byte(0)
	if r.Pushed {
		pushed = 1
	}
	b = append(b, byte(r.State), pushed)
	return appendStr(b, r.Epoch)
}

// reader decodes the binary body; the first error sticks and later reads return zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail() { r.err, r.b = errShortRecord, nil }

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) int() int {
	v := r.varint()
	if int64(int(v)) != v {
		r.fail()
		return 0
	}
	return int(v)
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) str() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// count reads a list length, bounded by the bytes left (every element takes at least one).
func (r *reader) count() int {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return 0
	}
	return int(n)
}

func (r *reader) strs() []string {
	n := r.count()
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = r.str()
	}
	return ss
}

func (r *reader) time() time.Time {
	switch r.byte() {
	case 0:
		return time.Time{}
	case 1:
		sec := r.varint()
		nsec := r.uvarint()
		if nsec >= 1e9 {
			r.fail()
			return time.Time{}
		}
		return time.Unix(sec, int64(nsec)).UTC()
	default:
		r.fail()
		return time.Time{}
	}
}

func decodeReservation(body []byte, res *kms.Reservation) error {
	r := reader{b: body}
	res.KeyID = r.str()
	res.Peer = r.str()
	res.Owner = r.str()
	res.Master = r.str()
	res.Slaves = r.strs()
	res.Fetched = r.strs()
	res.Bits = r.int()
	if n := r.count(); n > 0 {
		res.Ranges = make([]kms.Range, n)
		for i := range res.Ranges {
			res.Ranges[i] = kms.Range{Block: r.str(), Off: r.int(), Len: r.int()}
		}
	}
	res.Provenance = kms.Provenance(r.str())
	res.Issued = r.time()
	res.Expires = r.time()
	res.State = kms.KeyState(r.byte())
	switch r.byte() {
	case 0:
	case 1:
		res.Pushed = true
	default:
		r.fail()
	}
	res.Epoch = r.str()
	if r.err == nil && len(r.b) != 0 {
		r.fail()
	}
	if r.err != nil {
		return r.err
	}
	return nil
}
