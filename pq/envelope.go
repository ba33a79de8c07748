package pq

import (
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/qkms/qkms/identity"
)

// EnvelopeContext is the FIPS 204 context string (ML-DSA.Sign, §5.2) under which envelopes are
// signed. It is the envelope's domain label: a signature made for the audit trail or any other
// use of the same site key can never verify as an envelope, nor the reverse.
const EnvelopeContext = "qkms peer envelope v1"

const (
	envelopeMagic   = "QKPE"
	envelopeVersion = 1
	// NonceSize is the size of an envelope's random nonce. 128 bits make a collision between
	// honest messages negligible, so a repeated (sender, nonce) is a replay.
	NonceSize = 16
	// MaxPayload bounds an envelope's payload: gRPC's default maximum message size, so anything
	// larger could not have arrived over the peer channel anyway.
	MaxPayload = 4 << 20
	// maxName bounds KME IDs and message types (one length byte on the wire).
	maxName = 255
	// envelopeOverhead is the encoded size minus the three names and the payload.
	envelopeOverhead = len(envelopeMagic) + 1 + 3 + 8 + NonceSize + 4 + mldsa65.SignatureSize
)

// Sentinel errors of Open; callers branch on them (and audit them: a forged or replayed peer
// message is a security event).
var (
	ErrWrongReceiver = errors.New("pq: envelope addressed to another KME")
	ErrUnknownSender = errors.New("pq: envelope from a KME without a known public key")
	ErrStale         = errors.New("pq: envelope timestamp outside the acceptance window")
	ErrBadSignature  = errors.New("pq: envelope signature does not verify")
	ErrReplay        = errors.New("pq: envelope replayed")
)

// Seal signs payload as a message of type msgType from KME from to KME to, at time now, and
// returns the envelope to send. The signature (ML-DSA-65, hedged: FIPS 204 §3.4 randomized
// signing through identity.Signer, so a fault or a weak nonce source does not leak the key)
// covers the domain label EnvelopeContext, both KME IDs, the type, the timestamp, a fresh
// random nonce and the payload.
//
// Layout: "QKPE" | 1 | len8 from | from | len8 to | to | len8 type | type | int64 unix-ns |
// nonce[16] | len32 payload | payload | ML-DSA-65 signature (3309 bytes) over all before it.
func Seal(id *identity.Signer, from, to, msgType string, payload []byte, now time.Time) ([]byte, error) {
	if id == nil {
		return nil, errors.New("pq: seal: no signing identity")
	}
	b, err := sealedPart(envelopeMagic, envelopeVersion, []string{from, to, msgType}, payload, now, mldsa65.SignatureSize)
	if err != nil {
		return nil, err
	}
	sig, err := id.Sign(b, EnvelopeContext)
	if err != nil {
		return nil, fmt.Errorf("pq: seal %s to %s: %w", msgType, to, err)
	}
	return append(b, sig...), nil
}

// sealedPart checks the arguments of a seal and encodes what its signature or tag covers:
// magic | version | len8 name | name for each of names (from, to, type, and the MAC key's ID
// in a MAC envelope) | int64 unix-ns | a fresh random nonce | len32 payload | payload, with
// room for trailer more bytes.
func sealedPart(magic string, version byte, names []string, payload []byte, now time.Time, trailer int) ([]byte, error) {
	from, to, msgType := names[0], names[1], names[2]
	size := len(magic) + 1 + 8 + NonceSize + 4 + len(payload) + trailer
	for _, n := range names {
		switch {
		case n == "":
			return nil, fmt.Errorf("pq: seal: sender, receiver and message type must be non-empty (from %q, to %q, type %q)", from, to, msgType)
		case len(n) > maxName:
			return nil, fmt.Errorf("pq: seal: sender, receiver and message type are limited to %d bytes", maxName)
		}
		size += 1 + len(n)
	}
	if len(payload) > MaxPayload {
		return nil, fmt.Errorf("pq: seal %s to %s: payload of %d bytes exceeds %d", msgType, to, len(payload), MaxPayload)
	}
	var nonce [NonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("pq: seal: nonce: %w", err)
	}
	b := make([]byte, 0, size)
	b = append(b, magic...)
	b = append(b, version)
	for _, n := range names {
		b = appendString8(b, n)
	}
	b = appendInt64(b, now.UnixNano())
	b = append(b, nonce[:]...)
	return appendBytes32(b, payload), nil
}

// readSealedPart decodes what sealedPart encoded with n names; ok is false unless b is exactly
// that with every name non-empty.
func readSealedPart(b []byte, magic string, version byte, n int) (names []string, ts int64, nonce [NonceSize]byte, payload []byte, ok bool) {
	r := newReader(b)
	r.header(magic, version)
	names = make([]string, n)
	for i := range names {
		names[i] = r.string8()
	}
	ts = r.int64()
	copy(nonce[:], r.bytes(NonceSize))
	payload = r.bytes(int(r.uint32()))
	ok = r.done() && !slices.Contains(names, "")
	return names, ts, nonce, payload, ok
}

// Open checks an envelope received by KME self and returns its sender, type and payload (a
// copy). peers maps KME IDs to their ML-DSA-65 public keys. guard holds the acceptance window and
// the nonces already seen; it must be shared by everything that accepts peer messages for this
// KME. The checks, cheapest first: decoding (ErrMalformed), receiver (ErrWrongReceiver), known
// sender (ErrUnknownSender), timestamp within the window (ErrStale), signature
// (ErrBadSignature), and last, only for authentic messages so forgeries cannot fill its memory,
// the replay guard (ErrReplay). Open never panics on any input.
func Open(peers map[string]*mldsa65.PublicKey, self string, envelope []byte, now time.Time, guard *ReplayGuard) (sender, typ string, payload []byte, err error) {
	if guard == nil {
		return "", "", nil, errors.New("pq: open: no replay guard")
	}
	if len(envelope) < envelopeOverhead {
		return "", "", nil, fmt.Errorf("pq: open: %d bytes, shorter than any envelope: %w", len(envelope), ErrMalformed)
	}
	signed := envelope[:len(envelope)-mldsa65.SignatureSize]
	sig := envelope[len(signed):]
	names, ts, nonce, body, ok := readSealedPart(signed, envelopeMagic, envelopeVersion, 3)
	if !ok {
		return "", "", nil, fmt.Errorf("pq: open: %w", ErrMalformed)
	}
	from, to, msgType := names[0], names[1], names[2]
	if to != self {
		return "", "", nil, fmt.Errorf("pq: open %s from %q: addressed to %q, this is %q: %w", msgType, from, to, self, ErrWrongReceiver)
	}
	pk := peers[from]
	if pk == nil {
		return "", "", nil, fmt.Errorf("pq: open %s from %q: %w", msgType, from, ErrUnknownSender)
	}
	if err := guard.inWindow(ts, now); err != nil {
		return "", "", nil, fmt.Errorf("pq: open %s from %q: %w", msgType, from, err)
	}
	if !identity.Verify(pk, signed, EnvelopeContext, sig) {
		return "", "", nil, fmt.Errorf("pq: open %s from %q (key %s): %w", msgType, from, identity.KeyID(pk), ErrBadSignature)
	}
	if err := guard.admit(from, nonce, ts, now); err != nil {
		return "", "", nil, fmt.Errorf("pq: open %s from %q: %w", msgType, from, err)
	}
	return from, msgType, append([]byte(nil), body...), nil
}
