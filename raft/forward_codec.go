package raft

import (
	"encoding/binary"
	"errors"

	"github.com/qkms/qkms/kms"
)

// The binary form of a forwarded answer. A follower of this version asks for it
// (wireRequest.Bin) and a leader of this version answers in it; requests, and answers to
// followers of earlier versions, stay JSON. Results carry reservations in the kms binary
// encoding the log and the store use, and key bytes as they are: decoding a JSON answer of a
// busy site (base64 key bytes, reservations with RFC 3339 times) took as much CPU as the
// proposal it answered.
//
//	body   = byte respBinary | uvarint Index | err | uvarint n, n * result
//	err    = byte 0, or byte 1, str Kind, str Msg
//	result = err | uvarint n, n * key | uvarint n, n * str Reservation |
//	         list Expired | list Transferred
//	key    = str ID | str Bytes | byte 0, or byte 1, str Reservation
//	str    = uvarint length, bytes; list = uvarint n, n * str
//
// A JSON body starts with '{', so the first byte tells the two apart.
const respBinary = 1

var errBadAnswer = errors.New("raft: malformed forwarded answer")

func appendWireStr(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendWireList(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendWireStr(b, []byte(s))
	}
	return b
}

func appendWireError(b []byte, e *wireError) []byte {
	if e == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = appendWireStr(b, []byte(e.Kind))
	return appendWireStr(b, []byte(e.Msg))
}

// appendResponse appends the binary body of r to b.
func appendResponse(b []byte, r *wireResponse) []byte {
	b = append(b, respBinary)
	b = binary.AppendUvarint(b, r.Index)
	b = appendWireError(b, r.Err)
	b = binary.AppendUvarint(b, uint64(len(r.Results)))
	var res []byte // one reservation's encoding, reused
	for i := range r.Results {
		w := &r.Results[i]
		b = appendWireError(b, w.Err)
		b = binary.AppendUvarint(b, uint64(len(w.Keys)))
		for _, k := range w.Keys {
			b = appendWireStr(b, []byte(k.ID))
			b = appendWireStr(b, k.Bytes)
			if k.Res == nil {
				b = append(b, 0)
				continue
			}
			res = kms.AppendReservation(res[:0], k.Res)
			b = appendWireStr(append(b, 1), res)
		}
		b = binary.AppendUvarint(b, uint64(len(w.Reservations)))
		for j := range w.Reservations {
			res = kms.AppendReservation(res[:0], &w.Reservations[j])
			b = appendWireStr(b, res)
		}
		b = appendWireList(b, w.Expired)
		b = appendWireList(b, w.Transferred)
	}
	return b
}

// answerReader decodes a binary answer; the first error sticks.
type answerReader struct {
	b   []byte
	err error
}

func (r *answerReader) fail() { r.err, r.b = errBadAnswer, nil }

func (r *answerReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a number of elements, each of which takes at least one byte, so a count the
// remaining bytes cannot hold is rejected before anything is allocated for it.
func (r *answerReader) count() int {
	v := r.uvarint()
	if v > uint64(len(r.b)) {
		r.fail()
		return 0
	}
	return int(v)
}

func (r *answerReader) byte() byte {
	if len(r.b) == 0 {
		r.fail()
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// bytes returns the next str, aliasing the body.
func (r *answerReader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *answerReader) list() []string {
	n := r.count()
	if n == 0 {
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = string(r.bytes())
	}
	return out
}

func (r *answerReader) wireError() *wireError {
	switch r.byte() {
	case 0:
		return nil
	case 1:
		return &wireError{Kind: string(r.bytes()), Msg: string(r.bytes())}
	}
	r.fail()
	return nil
}

func (r *answerReader) reservation(res *kms.Reservation) {
	body := r.bytes()
	if r.err == nil && kms.DecodeReservation(body, res) != nil {
		r.fail()
	}
}

// decodeResponse decodes a binary body written by appendResponse. Key bytes are copied out,
// so the caller may clear body afterwards.
func decodeResponse(body []byte, out *wireResponse) error {
	r := answerReader{b: body}
	if r.byte() != respBinary {
		return errBadAnswer
	}
	out.Index = r.uvarint()
	out.Err = r.wireError()
	if n := r.count(); n > 0 {
		out.Results = make([]wireResult, n)
	}
	for i := range out.Results {
		if r.err != nil {
			break
		}
		w := &out.Results[i]
		w.Err = r.wireError()
		if n := r.count(); n > 0 {
			w.Keys = make([]wireKey, n)
		}
		for j := range w.Keys {
			k := &w.Keys[j]
			k.ID = string(r.bytes())
			k.Bytes = append([]byte(nil), r.bytes()...)
			switch r.byte() {
			case 0:
			case 1:
				k.Res = new(kms.Reservation)
				r.reservation(k.Res)
			default:
				r.fail()
			}
		}
		if n := r.count(); n > 0 {
			w.Reservations = make([]kms.Reservation, n)
		}
		for j := range w.Reservations {
			r.reservation(&w.Reservations[j])
		}
		w.Expired = r.list()
		w.Transferred = r.list()
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail()
	}
	return r.err
}
