package kms

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"time"
)

// The binary encoding shared by log entries (codec.go), the state store's reservation records
// and the canonical form of audit entries (audit.go). All three are persistent: a change here
// is a new version of each. Forwarded answers between the nodes of a site are built on it too
// (raft/forward_codec.go, through WireReader and the Append functions), so a change is also one
// between node versions.
//
//	str  = uvarint length, bytes
//	list = uvarint count, str...
//	time = byte 0 (the zero time), or byte 1, varint Unix seconds, uvarint nanoseconds
//	       (decoded in UTC)
//	int  = varint
//
// A Reservation body is
//
//	str KeyID, Peer, Owner, Master | list Slaves | list Fetched | int Bits |
//	uvarint len(Ranges) {str Block, int Off, int Len} | str Provenance |
//	time Issued | time Expires | byte State | byte Pushed (0 or 1) | str Epoch

// A Block body is
//
//	str Peer, ID | uvarint Seq | int Bytes | str Owner | byte State | str Tag | int Next |
//	int Released | 8 bytes QBER (IEEE 754 bits, big-endian) | time Ingested

// A Pool body (everything but Owned, which the store keeps apart: AppendOwned) is
//
//	str Peer | uvarint NextSeq | int Available | int Pending | int Reserved | byte Paused |
//	uvarint len(Epochs) {str ID | time Created | int Size | uvarint Keys | int Live |
//	time Superseded}
//
// and an Owned body is a list.

// A RequestRecord body is
//
//	str Kind | time At | uvarint len(Keys) {str ID | str Bytes | str Provenance}

// ErrShortWire reports a truncated or malformed binary encoding.
var ErrShortWire = errors.New("truncated or malformed binary encoding")

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendBlob is appendStr for bytes: the same encoding, without a conversion to string.
func appendBlob(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendList(b []byte, ss []string) []byte {
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

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// AppendReservation appends the binary body of r to b.
func AppendReservation(b []byte, r *Reservation) []byte {
	b = appendStr(b, r.KeyID)
	b = appendStr(b, r.Peer)
	b = appendStr(b, r.Owner)
	b = appendStr(b, r.Master)
	b = appendList(b, r.Slaves)
	b = appendList(b, r.Fetched)
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
	b = append(b, byte(r.State))
	b = appendBool(b, r.Pushed)
	return appendStr(b, r.Epoch)
}

// AppendBlock appends the binary body of blk to b.
func AppendBlock(b []byte, blk *Block) []byte {
	b = appendStr(b, blk.Peer)
	b = appendStr(b, blk.ID)
	b = binary.AppendUvarint(b, blk.Seq)
	b = binary.AppendVarint(b, int64(blk.Bytes))
	b = appendStr(b, blk.Owner)
	b = append(b, byte(blk.State))
	b = appendBlob(b, blk.Tag)
	b = binary.AppendVarint(b, int64(blk.Next))
	b = binary.AppendVarint(b, int64(blk.Released))
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(blk.QBER))
	return appendTime(b, blk.Ingested)
}

// DecodeBlock decodes a whole binary body written by AppendBlock. blk shares no memory with
// body (an empty Tag is nil).
func DecodeBlock(body []byte, blk *Block) error {
	r := wireReader{b: body}
	blk.Peer, blk.ID, blk.Seq, blk.Bytes, blk.Owner = r.str(), r.str(), r.uvarint(), r.int(), r.str()
	blk.State = BlockState(r.byte())
	if tag := r.blob(); len(tag) > 0 {
		blk.Tag = bytes.Clone(tag)
	} else {
		blk.Tag = nil
	}
	blk.Next, blk.Released = r.int(), r.int()
	blk.QBER = math.Float64frombits(r.uint64())
	blk.Ingested = r.time()
	return r.end()
}

// AppendPool appends the binary body of p without p.Owned (see above).
func AppendPool(b []byte, p *Pool) []byte {
	b = appendStr(b, p.Peer)
	b = binary.AppendUvarint(b, p.NextSeq)
	b = binary.AppendVarint(b, p.Available)
	b = binary.AppendVarint(b, p.Pending)
	b = binary.AppendVarint(b, p.Reserved)
	b = appendBool(b, p.Paused)
	b = binary.AppendUvarint(b, uint64(len(p.Epochs)))
	for _, e := range p.Epochs {
		b = appendStr(b, e.ID)
		b = appendTime(b, e.Created)
		b = binary.AppendVarint(b, int64(e.Size))
		b = binary.AppendUvarint(b, e.Keys)
		b = binary.AppendVarint(b, e.Live)
		b = appendTime(b, e.Superseded)
	}
	return b
}

// DecodePool decodes a whole body written by AppendPool into p, leaving p.Owned as it is.
func DecodePool(body []byte, p *Pool) error {
	r := wireReader{b: body}
	p.Peer, p.NextSeq = r.str(), r.uvarint()
	p.Available, p.Pending, p.Reserved = r.varint(), r.varint(), r.varint()
	p.Paused = r.bool()
	p.Epochs = nil
	if n := r.count(); n > 0 {
		p.Epochs = make([]EpochInfo, n)
		for i := range p.Epochs {
			e := &p.Epochs[i]
			e.ID, e.Created, e.Size = r.str(), r.time(), r.int()
			e.Keys, e.Live, e.Superseded = r.uvarint(), r.varint(), r.time()
		}
	}
	return r.end()
}

// AppendOwned appends the binary body of a pool's Owned list.
func AppendOwned(b []byte, owned []string) []byte { return appendList(b, owned) }

// DecodeOwned decodes a whole body written by AppendOwned (nil for an empty list).
func DecodeOwned(body []byte) ([]string, error) {
	r := wireReader{b: body}
	owned := r.strs()
	if err := r.end(); err != nil {
		return nil, err
	}
	return owned, nil
}

// ReservationSize is about the length of r's binary body, to size buffers.
func ReservationSize(r *Reservation) int {
	n := 64 + len(r.KeyID) + len(r.Peer) + len(r.Owner) + len(r.Master) + len(r.Provenance) + len(r.Epoch)
	for _, s := range r.Slaves {
		n += len(s) + 2
	}
	for _, s := range r.Fetched {
		n += len(s) + 2
	}
	for _, rg := range r.Ranges {
		n += len(rg.Block) + 12
	}
	return n
}

// AppendRequestRecord appends the binary body of rec (see above).
func AppendRequestRecord(b []byte, rec *RequestRecord) []byte {
	b = appendStr(b, rec.Kind)
	b = appendTime(b, rec.At)
	b = binary.AppendUvarint(b, uint64(len(rec.Keys)))
	for _, k := range rec.Keys {
		b = appendStr(b, k.ID)
		b = appendBlob(b, k.Bytes)
		b = appendStr(b, string(k.Provenance))
	}
	return b
}

// DecodeRequestRecord decodes a whole body written by AppendRequestRecord. The keys' bytes
// are copies: body may be wiped once it returns.
func DecodeRequestRecord(body []byte) (*RequestRecord, error) {
	r := wireReader{b: body}
	rec := &RequestRecord{Kind: r.str(), At: r.time()}
	if n := r.count(); n > 0 {
		rec.Keys = make([]RecordedKey, n)
		for i := range rec.Keys {
			// A copy the caller can wipe: going through a string would leave key bytes in
			// memory nobody can clear.
			rec.Keys[i] = RecordedKey{ID: r.str(), Bytes: bytes.Clone(r.blob()), Provenance: Provenance(r.str())}
		}
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return rec, nil
}

// DecodeReservation decodes a whole binary body written by AppendReservation.
func DecodeReservation(body []byte, res *Reservation) error {
	r := wireReader{b: body}
	r.reservation(res)
	return r.end()
}

// wireReader decodes the binary encoding; the first error sticks and later reads return zero
// values.
type wireReader struct {
	b   []byte
	err error
}

func (r *wireReader) fail() { r.err, r.b = ErrShortWire, nil }

// end reports the first error, or trailing bytes.
func (r *wireReader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail()
	}
	return r.err
}

func (r *wireReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) int() int {
	v := r.varint()
	if int64(int(v)) != v {
		r.fail()
		return 0
	}
	return int(v)
}

// uint64 reads 8 bytes, big-endian.
func (r *wireReader) uint64() uint64 {
	if len(r.b) < 8 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *wireReader) byte() byte {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *wireReader) bool() bool {
	switch r.byte() {
	case 0:
		return false
	case 1:
		return true
	default:
		r.fail()
		return false
	}
}

func (r *wireReader) str() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// blob reads a length-prefixed byte string without copying.
func (r *wireReader) blob() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// count reads a list length, bounded by the bytes left (every element takes at least one).
func (r *wireReader) count() int {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return 0
	}
	return int(n)
}

func (r *wireReader) strs() []string {
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

// unixTime reads varint seconds and uvarint nanoseconds (below 1e9) of a UTC time.
func (r *wireReader) unixTime() time.Time {
	sec, nsec := r.varint(), r.uvarint()
	if nsec >= 1e9 {
		r.fail()
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

func (r *wireReader) time() time.Time {
	switch r.byte() {
	case 0:
		return time.Time{}
	case 1:
		return r.unixTime()
	default:
		r.fail()
		return time.Time{}
	}
}

func (r *wireReader) reservation(res *Reservation) {
	res.KeyID = r.str()
	res.Peer = r.str()
	res.Owner = r.str()
	res.Master = r.str()
	res.Slaves = r.strs()
	res.Fetched = r.strs()
	res.Bits = r.int()
	if n := r.count(); n > 0 {
		res.Ranges = make([]Range, n)
		for i := range res.Ranges {
			res.Ranges[i] = Range{Block: r.str(), Off: r.int(), Len: r.int()}
		}
	}
	res.Provenance = Provenance(r.str())
	res.Issued = r.time()
	res.Expires = r.time()
	res.State = KeyState(r.byte())
	res.Pushed = r.bool()
	res.Epoch = r.str()
}

// WireReader decodes the encoding of this file for formats of other packages built on it
// (raft's forwarded answers). The first error (ErrShortWire) sticks; later reads return zero
// values.
type WireReader struct{ r wireReader }

// NewWireReader reads b.
func NewWireReader(b []byte) *WireReader { return &WireReader{wireReader{b: b}} }

// Byte reads one byte.
func (w *WireReader) Byte() byte { return w.r.byte() }

// Uvarint reads an unsigned varint.
func (w *WireReader) Uvarint() uint64 { return w.r.uvarint() }

// Count reads the length of a list whose elements take at least min bytes each (at least one),
// failing when the bytes left cannot hold that many: a malformed length cannot make the caller
// allocate more than a small multiple of the input.
func (w *WireReader) Count(min int) int {
	n := w.r.count()
	if min > 1 && n > len(w.r.b)/min {
		w.r.fail()
		return 0
	}
	return n
}

// Str reads a str.
func (w *WireReader) Str() string { return w.r.str() }

// Blob reads a str as bytes, aliasing the input.
func (w *WireReader) Blob() []byte { return w.r.blob() }

// List reads a list.
func (w *WireReader) List() []string { return w.r.strs() }

// Reservation reads a Reservation body written by AppendReservation.
func (w *WireReader) Reservation(res *Reservation) { w.r.reservation(res) }

// Fail marks the input malformed.
func (w *WireReader) Fail() { w.r.fail() }

// End reports the first error, or trailing bytes.
func (w *WireReader) End() error { return w.r.end() }

// AppendStr appends s as a str.
func AppendStr(b []byte, s string) []byte { return appendStr(b, s) }

// AppendBlob appends v as a str.
func AppendBlob(b, v []byte) []byte { return appendBlob(b, v) }

// AppendList appends ss as a list.
func AppendList(b []byte, ss []string) []byte { return appendList(b, ss) }
