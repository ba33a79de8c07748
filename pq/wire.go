package pq

import (
	"encoding/binary"
	"errors"
)

// ErrMalformed is an envelope, exchange message or stored epoch that does not decode: truncated,
// garbled, wrong magic or version, or a field of the wrong size.
var ErrMalformed = errors.New("pq: malformed message")

// The wire formats are fixed-layout binary, big-endian, each starting with a 4-byte magic and a
// version byte, with short strings prefixed by one length byte. They are hand-rolled rather
// than protobuf because the signature and the KDFs must cover an unambiguous byte string: every
// variable field is length-prefixed, so no two distinct field lists encode alike.

// appendString8 appends s prefixed by its length in one byte; callers check len(s) <= 255.
func appendString8(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// appendString16 appends s prefixed by its length in two bytes; callers check len(s) < 1<<16.
func appendString16(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// appendBytes32 appends p prefixed by its length in four bytes.
func appendBytes32(b, p []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	return append(b, p...)
}

func appendInt64(b []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(v))
}

// reader decodes the formats above. The first failure sticks: callers read every field and
// check ok once, so a truncated input can never panic or yield a half-decoded value.
type reader struct {
	b  []byte
	ok bool
}

func newReader(b []byte) *reader { return &reader{b: b, ok: true} }

func (r *reader) bytes(n int) []byte {
	if !r.ok || n < 0 || len(r.b) < n {
		r.ok = false
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) byte() byte {
	p := r.bytes(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (r *reader) uint32() uint32 {
	p := r.bytes(4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (r *reader) int64() int64 {
	p := r.bytes(8)
	if p == nil {
		return 0
	}
	return int64(binary.BigEndian.Uint64(p))
}

func (r *reader) string8() string {
	return string(r.bytes(int(r.byte())))
}

// header reads and checks magic and version.
func (r *reader) header(magic string, version byte) {
	if string(r.bytes(len(magic))) != magic || r.byte() != version {
		r.ok = false
	}
}

// done reports whether every field decoded and nothing trails.
func (r *reader) done() bool { return r.ok && len(r.b) == 0 }
