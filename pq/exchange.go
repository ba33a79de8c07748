package pq

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"
)

// The epoch exchange: one X-Wing encapsulation (draft-connolly-cfrg-xwing-kem-05) from the
// responder B to a fresh key of the initiator A, then explicit key confirmation in both
// directions. Confirmation is what makes a failure visible: ML-KEM decapsulation never fails
// (FIPS 203 §6.3, implicit rejection returns a pseudorandom secret for a bad ciphertext), so
// without it a tampered ciphertext would leave the two sites with different epoch secrets and
// every derived key would silently differ. Each side gets its Epoch only after verifying the
// other's tag: A in Finish (B's tag), B in Confirm (A's tag).
//
// Authentication is not the exchange's job: the three messages travel in envelopes (Seal), so
// the ML-DSA-65 signatures of the two sites authenticate them, and the transcript below binds
// the KME IDs the envelopes were checked against. With an ephemeral KEM key per exchange and the
// private key erased at Finish, an epoch secret cannot be recomputed later from any long-term
// key: compromise of a site key after the fact does not reveal past epochs (forward secrecy).
//
// Key schedule (NIST SP 800-56C rev2 two-step KDF, HKDF-SHA-256):
//
//	T      = SHA-256("qkms pq exchange v1" | len8 A | A | len8 B | B | exchange ID | len32 pk | pk | len32 ct | ct)
//	PRK    = HKDF-Extract(salt = T, IKM = X-Wing shared secret)
//	tag_B  = HKDF-Expand(PRK, "qkms pq confirm responder", 32)
//	tag_A  = HKDF-Expand(PRK, "qkms pq confirm initiator", 32)
//	secret = HKDF-Expand(PRK, "qkms pq epoch secret", 32)
//
// Distinct labels keep a tag from ever being reflected as the other side's, and the tags, being
// independent PRF outputs, reveal nothing about the epoch secret.

const (
	// TagSize is the size of a confirmation tag.
	TagSize = 32
	// SecretSize is the size of an epoch secret.
	SecretSize = 32

	transcriptLabel = "qkms pq exchange v1"
	labelConfirmB   = "qkms pq confirm responder"
	labelConfirmA   = "qkms pq confirm initiator"
	labelSecret     = "qkms pq epoch secret"

	offerMagic, replyMagic, confirmMagic = "QKXO", "QKXR", "QKXC"
	// exchangeVersion 1 is X-Wing (draft -05) with HKDF-SHA-256; a new suite is a new version.
	exchangeVersion = 1
)

// Message types for the envelopes that carry the exchange (Seal's msgType).
const (
	MsgOffer   = "pq.exchange.offer"
	MsgReply   = "pq.exchange.reply"
	MsgConfirm = "pq.exchange.confirm"
)

// Sentinel errors of the exchange.
var (
	// ErrConfirmation is a confirmation tag that does not verify: the two sides do not hold the
	// same secret (tampered public key, ciphertext or tag, or a mismatched transcript). No key
	// is produced and the exchange is over; start a new one.
	ErrConfirmation = errors.New("pq: key confirmation failed")
	// ErrWrongExchange is a reply or confirmation for another exchange than this one.
	ErrWrongExchange = errors.New("pq: message belongs to another exchange")
	// ErrExchangeDone is a second Finish or Confirm on the same exchange (each is one-shot, so
	// a bad message cannot be retried against the same private key or pending secret).
	ErrExchangeDone = errors.New("pq: exchange already finished")
)

// ExchangeID names one exchange and the epoch it yields. It is chosen at random by the initiator.
type ExchangeID [16]byte

// String is the ID in hex; it is also the epoch's ID.
func (id ExchangeID) String() string { return hex.EncodeToString(id[:]) }

// Offer is the initiator's first message: a fresh X-Wing public key.
type Offer struct {
	ID        ExchangeID
	PublicKey []byte // 1216 bytes: ML-KEM-768 encapsulation key || X25519 public key
}

// Reply is the responder's message: the X-Wing ciphertext and the responder's confirmation tag.
type Reply struct {
	ID         ExchangeID
	Ciphertext []byte // 1120 bytes: ML-KEM-768 ciphertext || X25519 ephemeral public key
	Tag        [TagSize]byte
}

// Confirmation is the initiator's last message: its confirmation tag.
type Confirmation struct {
	ID  ExchangeID
	Tag [TagSize]byte
}

// Marshal encodes the offer: "QKXO" | 1 | ID | public key.
func (o *Offer) Marshal() []byte {
	b := make([]byte, 0, len(offerMagic)+1+len(o.ID)+len(o.PublicKey))
	b = append(append(append(b, offerMagic...), exchangeVersion), o.ID[:]...)
	return append(b, o.PublicKey...)
}

// ParseOffer decodes an offer; the public key's encoding is checked by Respond.
func ParseOffer(b []byte) (*Offer, error) {
	r := newReader(b)
	r.header(offerMagic, exchangeVersion)
	o := &Offer{}
	copy(o.ID[:], r.bytes(len(o.ID)))
	o.PublicKey = append([]byte(nil), r.bytes(xwingPublicKeySize)...)
	if !r.done() {
		return nil, fmt.Errorf("pq: parse offer: %w", ErrMalformed)
	}
	return o, nil
}

// Marshal encodes the reply: "QKXR" | 1 | ID | ciphertext | tag.
func (m *Reply) Marshal() []byte {
	b := make([]byte, 0, len(replyMagic)+1+len(m.ID)+len(m.Ciphertext)+TagSize)
	b = append(append(append(b, replyMagic...), exchangeVersion), m.ID[:]...)
	return append(append(b, m.Ciphertext...), m.Tag[:]...)
}

// ParseReply decodes a reply.
func ParseReply(b []byte) (*Reply, error) {
	r := newReader(b)
	r.header(replyMagic, exchangeVersion)
	m := &Reply{}
	copy(m.ID[:], r.bytes(len(m.ID)))
	m.Ciphertext = append([]byte(nil), r.bytes(xwingCiphertextSize)...)
	copy(m.Tag[:], r.bytes(TagSize))
	if !r.done() {
		return nil, fmt.Errorf("pq: parse reply: %w", ErrMalformed)
	}
	return m, nil
}

// Marshal encodes the confirmation: "QKXC" | 1 | ID | tag.
func (c *Confirmation) Marshal() []byte {
	b := make([]byte, 0, len(confirmMagic)+1+len(c.ID)+TagSize)
	b = append(append(append(b, confirmMagic...), exchangeVersion), c.ID[:]...)
	return append(b, c.Tag[:]...)
}

// ParseConfirmation decodes a confirmation.
func ParseConfirmation(b []byte) (*Confirmation, error) {
	r := newReader(b)
	r.header(confirmMagic, exchangeVersion)
	c := &Confirmation{}
	copy(c.ID[:], r.bytes(len(c.ID)))
	copy(c.Tag[:], r.bytes(TagSize))
	if !r.done() {
		return nil, fmt.Errorf("pq: parse confirmation: %w", ErrMalformed)
	}
	return c, nil
}

// Initiator is side A of an exchange, between NewExchange and Finish. It holds the ephemeral
// X-Wing private key; Finish (or Close) erases it.
type Initiator struct {
	a, b string
	id   ExchangeID
	pk   []byte

	mu sync.Mutex
	sk *xwingPrivateKey // nil once finished or closed
}

// NewExchange starts an exchange from KME initiator to KME responder: it generates an
// ephemeral X-Wing key pair and returns the pending state and the offer to send (as MsgOffer).
func NewExchange(initiator, responder string) (*Initiator, *Offer, error) {
	if err := checkPair(initiator, responder); err != nil {
		return nil, nil, fmt.Errorf("pq: new exchange: %w", err)
	}
	var id ExchangeID
	if _, err := rand.Read(id[:]); err != nil {
		return nil, nil, fmt.Errorf("pq: new exchange: %w", err)
	}
	sk, pk, err := xwingGenerateKeyPair()
	if err != nil {
		return nil, nil, fmt.Errorf("pq: new exchange: X-Wing key pair: %w", err)
	}
	in := &Initiator{a: initiator, b: responder, id: id, pk: pk, sk: sk}
	return in, &Offer{ID: id, PublicKey: append([]byte(nil), pk...)}, nil
}

// ID is the exchange's ID (and the ID of the epoch it will yield).
func (in *Initiator) ID() ExchangeID { return in.id }

// Finish decapsulates the responder's ciphertext and checks its confirmation tag. Only if the
// tag verifies does it return the epoch and the confirmation to send back (as MsgConfirm);
// otherwise it returns ErrConfirmation and nothing else. Either way the private key is erased
// and the exchange is over. now stamps the epoch's creation.
func (in *Initiator) Finish(m *Reply, now time.Time) (*Epoch, *Confirmation, error) {
	if m == nil {
		return nil, nil, fmt.Errorf("pq: finish exchange %s: no reply: %w", in.id, ErrMalformed)
	}
	if m.ID != in.id {
		return nil, nil, fmt.Errorf("pq: finish exchange %s: reply is for %s: %w", in.id, m.ID, ErrWrongExchange)
	}
	in.mu.Lock()
	sk := in.sk
	in.sk = nil
	in.mu.Unlock()
	if sk == nil {
		return nil, nil, fmt.Errorf("pq: finish exchange %s: %w", in.id, ErrExchangeDone)
	}
	ss, err := sk.decapsulate(m.Ciphertext)
	sk.destroy()
	if err != nil {
		// A ciphertext of the wrong size: it cannot match what the responder derived, so this is a failed confirmation like any other.
		return nil, nil, fmt.Errorf("pq: finish exchange %s with %s: ciphertext: %v: %w", in.id, in.b, err, ErrConfirmation)
	}
	ks, err := schedule(in.a, in.b, in.id, in.pk, m.Ciphertext, ss)
	clear(ss)
	if err != nil {
		return nil, nil, fmt.Errorf("pq: finish exchange %s: %w", in.id, err)
	}
	if subtle.ConstantTimeCompare(ks.tagB[:], m.Tag[:]) != 1 {
		ks.destroy()
		return nil, nil, fmt.Errorf("pq: finish exchange %s with %s: responder's tag: %w", in.id, in.b, ErrConfirmation)
	}
	c := &Confirmation{ID: in.id, Tag: ks.tagA}
	return ks.epoch(in.a, in.b, in.id, now), c, nil
}

// Close abandons the exchange (timeout, shutdown) and erases the private key.
func (in *Initiator) Close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.sk != nil {
		in.sk.destroy()
		in.sk = nil
	}
}

// Responder is side B of an exchange, between Respond and Confirm. It holds the pending epoch
// secret, which it releases only when the initiator's tag verifies.
type Responder struct {
	a, b string
	id   ExchangeID

	mu sync.Mutex
	ks *keySchedule // nil once confirmed, failed or closed
}

// Respond answers an offer received (in an envelope checked by Open) from KME initiator by KME
// responder: it encapsulates to the offered key and returns the pending state and the reply to
// send (as MsgReply). It fails with ErrMalformed if the public key is not a valid X-Wing key
// (FIPS 203 §7.2 encapsulation key check).
func Respond(initiator, responder string, o *Offer) (*Responder, *Reply, error) {
	if err := checkPair(initiator, responder); err != nil {
		return nil, nil, fmt.Errorf("pq: respond: %w", err)
	}
	if o == nil || len(o.PublicKey) != xwingPublicKeySize {
		return nil, nil, fmt.Errorf("pq: respond to %s: public key of the wrong size: %w", initiator, ErrMalformed)
	}
	// (shared secret, ciphertext): the X-Wing draft's order, which circl's kem/xwing.Encapsulate
	// keeps too, the reverse of circl's generic kem.Scheme.Encapsulate.
	ss, ct, err := xwingEncapsulate(o.PublicKey, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("pq: respond to %s, exchange %s: public key: %v: %w", initiator, o.ID, err, ErrMalformed)
	}
	ks, err := schedule(initiator, responder, o.ID, o.PublicKey, ct, ss)
	clear(ss)
	if err != nil {
		return nil, nil, fmt.Errorf("pq: respond to %s, exchange %s: %w", initiator, o.ID, err)
	}
	m := &Reply{ID: o.ID, Ciphertext: ct, Tag: ks.tagB}
	return &Responder{a: initiator, b: responder, id: o.ID, ks: ks}, m, nil
}

// ID is the exchange's ID (and the ID of the epoch it will yield).
func (rs *Responder) ID() ExchangeID { return rs.id }

// Confirm checks the initiator's confirmation tag and, only if it verifies, returns the epoch;
// otherwise ErrConfirmation and no key. Either way the exchange is over. now stamps the epoch's
// creation.
func (rs *Responder) Confirm(c *Confirmation, now time.Time) (*Epoch, error) {
	if c == nil {
		return nil, fmt.Errorf("pq: confirm exchange %s: no confirmation: %w", rs.id, ErrMalformed)
	}
	if c.ID != rs.id {
		return nil, fmt.Errorf("pq: confirm exchange %s: confirmation is for %s: %w", rs.id, c.ID, ErrWrongExchange)
	}
	rs.mu.Lock()
	ks := rs.ks
	rs.ks = nil
	rs.mu.Unlock()
	if ks == nil {
		return nil, fmt.Errorf("pq: confirm exchange %s: %w", rs.id, ErrExchangeDone)
	}
	if subtle.ConstantTimeCompare(ks.tagA[:], c.Tag[:]) != 1 {
		ks.destroy()
		return nil, fmt.Errorf("pq: confirm exchange %s with %s: initiator's tag: %w", rs.id, rs.a, ErrConfirmation)
	}
	return ks.epoch(rs.a, rs.b, rs.id, now), nil
}

// Close abandons the exchange and erases the pending secret.
func (rs *Responder) Close() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.ks != nil {
		rs.ks.destroy()
		rs.ks = nil
	}
}

// keySchedule is what both sides derive from the shared secret and the transcript.
type keySchedule struct {
	transcript [sha256.Size]byte
	tagA, tagB [TagSize]byte
	secret     []byte
}

func schedule(a, b string, id ExchangeID, pk, ct, ss []byte) (*keySchedule, error) {
	ks := &keySchedule{}
	t := make([]byte, 0, len(transcriptLabel)+2+len(a)+len(b)+len(id)+8+len(pk)+len(ct))
	t = append(t, transcriptLabel...)
	t = appendString8(t, a)
	t = appendString8(t, b)
	t = append(t, id[:]...)
	t = appendBytes32(t, pk)
	t = appendBytes32(t, ct)
	ks.transcript = sha256.Sum256(t)
	prk, err := hkdf.Extract(sha256.New, ss, ks.transcript[:])
	if err != nil {
		return nil, err
	}
	defer clear(prk)
	for _, out := range []struct {
		label string
		dst   []byte
	}{{labelConfirmB, ks.tagB[:]}, {labelConfirmA, ks.tagA[:]}} {
		tag, err := hkdf.Expand(sha256.New, prk, out.label, TagSize)
		if err != nil {
			return nil, err
		}
		copy(out.dst, tag)
	}
	if ks.secret, err = hkdf.Expand(sha256.New, prk, labelSecret, SecretSize); err != nil {
		return nil, err
	}
	return ks, nil
}

func (ks *keySchedule) destroy() {
	clear(ks.secret)
	ks.secret = nil
	clear(ks.tagA[:])
	clear(ks.tagB[:])
}

// epoch hands the secret over to a new Epoch; ks must not be used afterwards.
func (ks *keySchedule) epoch(a, b string, id ExchangeID, now time.Time) *Epoch {
	e := &Epoch{ID: id.String(), Initiator: a, Responder: b, Secret: ks.secret, Transcript: ks.transcript, Created: now}
	ks.secret = nil
	ks.destroy()
	return e
}

func checkPair(a, b string) error {
	switch {
	case a == "" || b == "":
		return errors.New("initiator and responder KME IDs must be non-empty")
	case a == b:
		return fmt.Errorf("initiator and responder are both %q", a)
	case len(a) > maxName || len(b) > maxName:
		return fmt.Errorf("KME IDs are limited to %d bytes", maxName)
	}
	return nil
}
