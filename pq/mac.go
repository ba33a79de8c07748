package pq

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"
)

// MAC envelopes: the cheap form of an envelope, for the peer channel's per-key traffic.
//
// A signed envelope (Seal) costs an ML-DSA-65 signature, about 0.1 ms of CPU, and carries
// 3,309 bytes of it. Under load the peer channel sends over a hundred pushes a second each way,
// each a request and an answer, so those signatures were about 5% of a site's CPU. A MAC
// envelope is authenticated instead with HMAC-SHA-256 under a key derived from a PQ epoch
// (DeriveMACKey): a secret the two sites agreed by an X-Wing exchange whose messages were
// themselves signed with their ML-DSA-65 identities, and confirmed by both. Like a TLS 1.3
// session, the signatures authenticate the exchange and the exchange's secret authenticates
// the messages; an attacker who can forge neither signature nor break X-Wing can forge
// neither envelope. What a MAC gives up is proof to a third party (both ends hold the key),
// which no peer message is kept for.

const (
	macMagic   = "QKPM"
	macVersion = 1
	// MACSize is the size of a MAC envelope's tag (HMAC-SHA-256).
	MACSize = sha256.Size
	// macKeyInfo labels the derivation of the MAC key from an epoch secret; the key IDs,
	// payloads and derived keys of package pq use other labels, so no two derivations from one
	// epoch can yield the same bytes.
	macKeyInfo = "qkms peer envelope mac key v1"
	// macContext is prefixed to everything a tag covers (domain separation from any other use
	// of HMAC under a key of this kind).
	macContext = "qkms peer envelope mac v1"
	// macOverhead is the encoded size minus the four names and the payload.
	macOverhead = len(macMagic) + 1 + 4 + 8 + NonceSize + 4 + MACSize
)

// ErrUnknownMACKey is a MAC envelope under a key the receiver does not hold (an epoch it has
// not recorded yet, or has retired): the sender should sign instead.
var ErrUnknownMACKey = errors.New("pq: envelope under an unknown MAC key")

// MACKey is a key for MAC envelopes between the two KMEs of one epoch. It is secret: keep it
// in memory only, and Destroy it when its epoch is retired.
type MACKey struct {
	ID  string // the epoch's ID; travels in the envelope
	key [32]byte
}

// DeriveMACKey derives the MAC key of epoch e: HKDF-SHA-256 (RFC 5869) with the epoch secret
// as input key material, its transcript hash as salt, and a label with both KME IDs as info.
func DeriveMACKey(e *Epoch) (*MACKey, error) {
	if e == nil || len(e.Secret) != SecretSize || e.ID == "" || len(e.ID) > maxName {
		return nil, errors.New("pq: derive MAC key: not a complete epoch")
	}
	info := make([]byte, 0, len(macKeyInfo)+2+len(e.Initiator)+len(e.Responder))
	info = append(info, macKeyInfo...)
	info = appendString8(info, e.Initiator)
	info = appendString8(info, e.Responder)
	k, err := hkdf.Key(sha256.New, e.Secret, e.Transcript[:], string(info), 32)
	if err != nil {
		return nil, fmt.Errorf("pq: derive MAC key: %w", err)
	}
	m := &MACKey{ID: e.ID}
	copy(m.key[:], k)
	clear(k)
	return m, nil
}

// Destroy overwrites the key.
func (k *MACKey) Destroy() {
	if k != nil {
		clear(k.key[:])
	}
}

func (k *MACKey) tag(b []byte) []byte {
	h := hmac.New(sha256.New, k.key[:])
	h.Write([]byte(macContext))
	h.Write(b)
	return h.Sum(nil)
}

// IsMACEnvelope reports whether envelope claims to be a MAC envelope (SealMAC) rather than a
// signed one (Seal); it checks the magic only, OpenMAC checks the rest.
func IsMACEnvelope(envelope []byte) bool {
	return len(envelope) >= len(macMagic) && string(envelope[:len(macMagic)]) == macMagic
}

// SealMAC is Seal with an HMAC-SHA-256 tag under key instead of a signature. The tag covers a
// domain label, both KME IDs, the type, the key's ID, the timestamp, a fresh random nonce and
// the payload.
//
// Layout: "QKPM" | 1 | len8 from | from | len8 to | to | len8 type | type | len8 key ID | key ID |
// int64 unix-ns | nonce[16] | len32 payload | payload | HMAC-SHA-256 tag (32 bytes) over all
// before it.
func SealMAC(key *MACKey, from, to, msgType string, payload []byte, now time.Time) ([]byte, error) {
	if key == nil || key.ID == "" {
		return nil, errors.New("pq: seal: no MAC key")
	}
	b, err := sealedPart(macMagic, macVersion, []string{from, to, msgType, key.ID}, payload, now, MACSize)
	if err != nil {
		return nil, err
	}
	return append(b, key.tag(b)...), nil
}

// OpenMAC is Open for MAC envelopes. keys returns the MAC key shared with KME from under ID
// id, or nil when there is none (ErrUnknownMACKey). The checks, cheapest first: decoding
// (ErrMalformed), receiver (ErrWrongReceiver), known key (ErrUnknownMACKey), timestamp within
// the window (ErrStale), tag, compared in constant time (ErrBadSignature), and last, only for
// authentic messages, the replay guard (ErrReplay), which signed and MAC envelopes share.
// OpenMAC returns the key the envelope was sealed under, for the answer. It never panics on
// any input.
func OpenMAC(keys func(from, id string) *MACKey, self string, envelope []byte, now time.Time, guard *ReplayGuard) (sender, typ string, payload []byte, key *MACKey, err error) {
	if guard == nil || keys == nil {
		return "", "", nil, nil, errors.New("pq: open: no replay guard or MAC keys")
	}
	if len(envelope) < macOverhead {
		return "", "", nil, nil, fmt.Errorf("pq: open: %d bytes, shorter than any MAC envelope: %w", len(envelope), ErrMalformed)
	}
	authed := envelope[:len(envelope)-MACSize]
	tag := envelope[len(authed):]
	names, ts, nonce, body, ok := readSealedPart(authed, macMagic, macVersion, 4)
	if !ok {
		return "", "", nil, nil, fmt.Errorf("pq: open: %w", ErrMalformed)
	}
	from, to, msgType, id := names[0], names[1], names[2], names[3]
	if to != self {
		return "", "", nil, nil, fmt.Errorf("pq: open %s from %q: addressed to %q, this is %q: %w", msgType, from, to, self, ErrWrongReceiver)
	}
	key = keys(from, id)
	if key == nil {
		return "", "", nil, nil, fmt.Errorf("pq: open %s from %q: epoch %q: %w", msgType, from, id, ErrUnknownMACKey)
	}
	if err := guard.inWindow(ts, now); err != nil {
		return "", "", nil, nil, fmt.Errorf("pq: open %s from %q: %w", msgType, from, err)
	}
	if !hmac.Equal(tag, key.tag(authed)) {
		return "", "", nil, nil, fmt.Errorf("pq: open %s from %q (MAC key of epoch %s): %w", msgType, from, id, ErrBadSignature)
	}
	if err := guard.admit(from, nonce, ts, now); err != nil {
		return "", "", nil, nil, fmt.Errorf("pq: open %s from %q: %w", msgType, from, err)
	}
	return from, msgType, append([]byte(nil), body...), key, nil
}
