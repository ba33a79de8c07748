// Package pq owns the post-quantum building blocks of qkms: signed and MAC-tagged peer-channel
// envelopes, the KEM exchange with key confirmation that two KMEs run to agree on a PQ epoch
// secret, and the key derivations that turn an epoch secret (alone, or together with a QKD key)
// into the bytes of one key. It is pure cryptography: no I/O except what the caller passes in, no clock
// (callers pass now), no storage. Wiring into policies, peer RPCs and the state machine is the
// caller's.
//
// # Standards
//
//   - ML-DSA-65, NIST FIPS 204 (Module-Lattice-Based Digital Signature Standard), through
//     cloudflare/circl sign/mldsa/mldsa65. The site key pair is the one of package identity (same
//     key file format, same key IDs); envelopes are signed under the FIPS 204 context string
//     EnvelopeContext, which keeps them apart from the audit trail's signatures (§5.2, ctx).
//   - X-Wing, draft-connolly-cfrg-xwing-kem-05: ML-KEM-768 (NIST FIPS 203) combined with X25519
//     by a SHA3-256 combiner, from circl's kem/xwing (wrapped in xwing.go) and checked against
//     the draft's test vectors. Its shared secret stays secret as long as either
//     ML-KEM-768 or X25519 holds.
//   - Combining secrets: NIST SP 800-56C rev2 (§2, the hybrid shared secret Z' = Z || T, and the
//     two-step extract-then-expand KDF of §5) and ETSI TS 103 744 CatKDF: the secrets are
//     concatenated and fed to HKDF-SHA-256 (RFC 5869) with the transcript in the expansion
//     context. See derive.go for why HKDF-SHA-256 rather than SHA3/KMAC.
//
// # How a site uses it
//
//  1. Identity: identity.LoadOrCreate gives the site's *identity.Signer; peers' public keys come
//     from identity.LoadPublicKey. Map them by KME ID for Open.
//  2. Every peer message travels as Seal(signer, from, to, type, payload, now); the receiver calls
//     Open(peers, self, envelope, now, guard) with one long-lived ReplayGuard per site (shared by
//     all peer handlers). Open's sentinel errors say why a message was refused (audit them).
//     Frequent messages may instead travel as SealMAC under DeriveMACKey(epoch) of an epoch
//     both KMEs hold (step 3), opened with OpenMAC and the same guard (mac.go).
//  3. Epochs: the initiator calls NewExchange and sends Offer.Marshal() as MsgOffer; the responder
//     calls Respond and sends Reply.Marshal() as MsgReply; the initiator calls Finish, which
//     returns its Epoch only if the responder's confirmation tag verifies, and sends
//     Confirmation.Marshal() as MsgConfirm; the responder calls Confirm and gets its Epoch only
//     if the initiator's tag verifies. A failed confirmation returns ErrConfirmation and no key.
//     The epoch secret is key material: seal Epoch.Marshal() like QKD key blocks, and Destroy
//     the Epoch when it is retired. RefreshPolicy.Due says when to run a new exchange.
//  4. Keys: a hybrid key is HybridKey(qkdKey, epoch, ctx, n); a pqc-fallback key is
//     PQCKey(epoch, ctx, n). Both sites compute the same bytes from the same KeyContext and epoch,
//     so no key crosses the wire; the key ID and the epoch ID travel with the reservation.
//
// # Zeroization
//
// Intermediate secrets (input keying material, pseudorandom keys, decapsulated shared secrets,
// KEM private keys) are cleared with clear() as soon as they are no longer needed. In Go this is
// best effort: the garbage collector may have copied a buffer before it was cleared, the hash
// states inside crypto/hmac and circl are not reachable to clear, stack spills and registers are
// not covered, and strings cannot be cleared at all (which is why no secret is ever a string
// here). Building with GOEXPERIMENT=runtimesecret and wrapping derivations in runtime/secret.Do
// would close most of these gaps once that package is stable.
package pq
