package pq

import (
	"crypto/sha256"
	"fmt"
	"log/slog"
	"time"
)

// Epoch is the outcome of a confirmed exchange, held by both KMEs: the PQ secret from which
// hybrid and pqc keys are derived until the next exchange replaces it.
//
// Secret is key material: seal Marshal's output before it touches disk or the raft log, never
// log it (String, GoString and LogValue leave it out), and call Destroy when the epoch is
// retired: once no live key still needs it. Keys name their epoch (KeyContext is bound to the
// epoch's ID), so an epoch must outlive the keys derived from it that are not yet fetched.
type Epoch struct {
	ID         string            // the exchange ID in hex; carried with each key derived from it
	Initiator  string            // KME ID of side A
	Responder  string            // KME ID of side B
	Secret     []byte            // SecretSize bytes; secret
	Transcript [sha256.Size]byte // SHA-256 of the exchange transcript (KME IDs, ID, public key, ciphertext)
	Created    time.Time         // when this side confirmed it (each side stamps its own clock)
}

const (
	epochMagic   = "QKEP"
	epochVersion = 1
)

// Marshal encodes the epoch for storage: "QKEP" | 1 | len8 ID | ID | len8 A | A | len8 B | B |
// secret[32] | transcript[32] | int64 created unix-ns. The output holds the secret: seal it, and
// clear it once sealed.
func (e *Epoch) Marshal() []byte {
	b := make([]byte, 0, len(epochMagic)+4+len(e.ID)+len(e.Initiator)+len(e.Responder)+SecretSize+sha256.Size+8)
	b = append(b, epochMagic...)
	b = append(b, epochVersion)
	b = appendString8(b, e.ID)
	b = appendString8(b, e.Initiator)
	b = appendString8(b, e.Responder)
	b = append(b, e.Secret...)
	b = append(b, e.Transcript[:]...)
	return appendInt64(b, e.Created.UnixNano())
}

// ParseEpoch decodes a stored epoch (after unsealing). The secret is copied out of b, so the
// caller may clear b.
func ParseEpoch(b []byte) (*Epoch, error) {
	r := newReader(b)
	r.header(epochMagic, epochVersion)
	e := &Epoch{ID: r.string8(), Initiator: r.string8(), Responder: r.string8()}
	secret := r.bytes(SecretSize)
	copy(e.Transcript[:], r.bytes(sha256.Size))
	created := r.int64()
	if !r.done() || e.ID == "" || checkPair(e.Initiator, e.Responder) != nil {
		return nil, fmt.Errorf("pq: parse epoch: %w", ErrMalformed)
	}
	e.Secret = append([]byte(nil), secret...)
	e.Created = time.Unix(0, created).UTC()
	return e, nil
}

// Destroy erases the secret. The epoch derives nothing afterwards.
func (e *Epoch) Destroy() {
	clear(e.Secret)
	e.Secret = nil
}

// Peer is the other KME of the epoch, seen from KME self.
func (e *Epoch) Peer(self string) string {
	if self == e.Initiator {
		return e.Responder
	}
	return e.Initiator
}

// String describes the epoch without its secret.
func (e *Epoch) String() string {
	return fmt.Sprintf("epoch %s (%s->%s, created %s)", e.ID, e.Initiator, e.Responder, e.Created.UTC().Format(time.RFC3339))
}

// GoString keeps %#v from printing the secret.
func (e *Epoch) GoString() string { return "pq.Epoch{" + e.String() + "}" }

// LogValue keeps slog from printing the secret.
func (e *Epoch) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", e.ID), slog.String("initiator", e.Initiator),
		slog.String("responder", e.Responder), slog.Time("created", e.Created))
}

// RefreshPolicy says when an epoch is due to be replaced by a new exchange: after MaxKeys keys
// derived from it or MaxAge since it was created, whichever comes first (zero disables either).
// A fresh epoch bounds what a later compromise of one epoch secret exposes (forward secrecy
// granularity); the KEM itself costs well under a millisecond, so refreshing often is cheap.
type RefreshPolicy struct {
	MaxKeys uint64
	MaxAge  time.Duration
}

// DefaultRefresh replaces epochs every 65,536 keys or 5 minutes.
var DefaultRefresh = RefreshPolicy{MaxKeys: 1 << 16, MaxAge: 5 * time.Minute}

// Due reports whether e should be replaced, given the keys derived from it so far and now.
// A nil or destroyed epoch is always due.
func (p RefreshPolicy) Due(e *Epoch, keys uint64, now time.Time) bool {
	if e == nil || len(e.Secret) != SecretSize {
		return true
	}
	return (p.MaxKeys > 0 && keys >= p.MaxKeys) || (p.MaxAge > 0 && now.Sub(e.Created) >= p.MaxAge)
}
