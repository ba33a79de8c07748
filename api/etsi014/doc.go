// Package etsi014 owns qkms's ETSI GS QKD 014 V1.1.1 (2019-02) REST key delivery interface:
// the data formats of clause 6, an HTTP handler serving the three methods of clause 5
// (Get status, Get key, Get key with key IDs) on top of a Service the site implements, and
// a client used by qkms bench and by the upstream-KME key source.
//
// What the standard fixes and this package enforces:
//   - HTTPS with mutual authentication (clause 4): the caller's SAE_ID is taken from its
//     verified client certificate (pki.Identify, role "sae"), never from the request.
//   - URLs /api/v1/keys/{SAE_ID}/status, /enc_keys and /dec_keys with a URL-encoded ID
//     (clause 5.1); GET forms of enc_keys (number and size only) and dec_keys (one key_ID).
//   - Status codes 200, 400, 401 and 503, each error with an Error object body (clause 6.5),
//     and the messages the standard prescribes for 400.
//   - Unknown JSON members are tolerated (clients add e.g. master_SAE_ID to key ID entries).
//
// One extension the standard does not have: Get key with key IDs takes an Idempotency-Key
// header (IdempotencyKeyHeader), so an SAE that lost an answer can retry without losing keys.
//
// Key bytes are written straight into a response buffer that is zeroed once sent; they
// never reach logs or error messages.
package etsi014
