package raft

import (
	"encoding/binary"
	"errors"

	"github.com/qkms/qkms/kms"
)

// The binary form of a forwarded answer. A follower of this version asks for it
// (wireRequest.Bin) and a leader of this version answers in it; requests, and answers to
// followers of earlier versions, stay JSON. It is built on the kms binary encoding the log and
// the store use (kms/wire.go: str, list, Reservation body), with key bytes as they are:
// decoding a JSON answer of a busy site (base64 key bytes, reservations with RFC 3339 times)
// took as much CPU as the proposal it answered.
//
//	body   = byte respBinary | uvarint Index | err | uvarint n, n * result
//	err    = byte 0, or byte 1, str Kind, str Msg
//	result = err | uvarint n, n * key | uvarint n, n * Reservation | list Expired |
//	         list Transferred
//	key    = str ID | str Bytes | byte 0, or byte 1, Reservation
//
// A JSON body starts with '{', so the first byte tells the two apart.
const respBinary = 1

// The fewest bytes a result, a key and a Reservation body take, which bound the lengths read.
const minResult, minKey, minReservation = 5, 3, 14

var errBadAnswer = errors.New("raft: malformed forwarded answer")

func appendWireError(b []byte, e *wireError) []byte {
	if e == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = kms.AppendStr(b, e.Kind)
	return kms.AppendStr(b, e.Msg)
}

// appendResponse appends the binary body of r to b.
func appendResponse(b []byte, r *wireResponse) []byte {
	b = append(b, respBinary)
	b = binary.AppendUvarint(b, r.Index)
	b = appendWireError(b, r.Err)
	b = binary.AppendUvarint(b, uint64(len(r.Results)))
	for i := range r.Results {
		w := &r.Results[i]
		b = appendWireError(b, w.Err)
		b = binary.AppendUvarint(b, uint64(len(w.Keys)))
		for _, k := range w.Keys {
			b = kms.AppendStr(b, k.ID)
			b = kms.AppendBlob(b, k.Bytes)
			if k.Res == nil {
				b = append(b, 0)
				continue
			}
			b = kms.AppendReservation(append(b, 1), k.Res)
		}
		b = binary.AppendUvarint(b, uint64(len(w.Reservations)))
		for j := range w.Reservations {
			b = kms.AppendReservation(b, &w.Reservations[j])
		}
		b = kms.AppendList(b, w.Expired)
		b = kms.AppendList(b, w.Transferred)
	}
	return b
}

func readWireError(r *kms.WireReader) *wireError {
	switch r.Byte() {
	case 0:
		return nil
	case 1:
		return &wireError{Kind: r.Str(), Msg: r.Str()}
	}
	r.Fail()
	return nil
}

// decodeResponse decodes a binary body written by appendResponse. Key bytes are copied out,
// so the caller may clear body afterwards.
func decodeResponse(body []byte, out *wireResponse) error {
	r := kms.NewWireReader(body)
	if r.Byte() != respBinary {
		return errBadAnswer
	}
	out.Index = r.Uvarint()
	out.Err = readWireError(r)
	if n := r.Count(minResult); n > 0 {
		out.Results = make([]wireResult, n)
	}
	for i := range out.Results {
		w := &out.Results[i]
		w.Err = readWireError(r)
		if n := r.Count(minKey); n > 0 {
			w.Keys = make([]wireKey, n)
		}
		for j := range w.Keys {
			k := &w.Keys[j]
			k.ID = r.Str()
			k.Bytes = append([]byte(nil), r.Blob()...)
			switch r.Byte() {
			case 0:
			case 1:
				k.Res = new(kms.Reservation)
				r.Reservation(k.Res)
			default:
				r.Fail()
			}
		}
		if n := r.Count(minReservation); n > 0 {
			w.Reservations = make([]kms.Reservation, n)
		}
		for j := range w.Reservations {
			r.Reservation(&w.Reservations[j])
		}
		w.Expired = r.List()
		w.Transferred = r.List()
	}
	if err := r.End(); err != nil {
		return errors.Join(errBadAnswer, err)
	}
	return nil
}
