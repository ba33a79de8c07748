// Package keydelivery owns qkms's gRPC key delivery interface for encryptors
// (qkms.v1.KeyDelivery in api/keyspb): the server side of GetStatus, GetKey and
// GetKeyWithIDs with the semantics and authorization of ETSI GS QKD 014 V1.1.1 clause 5,
// the StreamKeys / FollowKeys streams for continuous rekeying, request validation, the
// mapping of the site's errors onto gRPC status codes, and a client for qkms bench.
//
// Authorization is ETSI 014's (clause 4): the caller's SAE_ID is the one named by its
// verified client certificate (pki.Identify, role "sae"), never a request field.
//
// Status codes mirror ETSI 014's HTTP statuses (clause 5, "Status codes"):
//   - 400 -> INVALID_ARGUMENT, including unknown key IDs: ETSI 014 answers a key ID it does
//     not hold with 400 "one or more keys specified are not found on KME", not 404, and a
//     caller cannot tell "never existed" from "already fetched" or "expired" either way, so
//     NOT_FOUND would promise a distinction the KME does not make.
//   - 401 -> UNAUTHENTICATED when there is no valid SAE certificate, PERMISSION_DENIED when
//     an SAE is authenticated but may not do what it asks.
//   - 503 -> RESOURCE_EXHAUSTED when there is not enough key or the SAE is over its rate
//     limit (kms.ErrRateLimited), UNAVAILABLE otherwise (the peer site cannot be reached, a
//     reservation is not confirmed yet, replication trouble).
//
// Streams. StreamKeys issues fresh keys at the master's site through the ordinary Get key
// path, paced at the requested rate (the QoS of ETSI GS QKD 004 V2.1.1 clause 6.1.1:
// key_chunk_size, max_bps, min_bps, TTL, read here per key rather than per bit). The key
// at position seq of a stream has the ID StreamKeyID(streamID, seq), a name-based UUID
// (RFC 9562 clause 5.5, version 5) with the stream ID as namespace, so the slave's site
// knows every ID of the stream in advance: FollowKeys waits until each reservation has
// arrived by the ordinary reservation push between sites (or pulls it), then fetches it
// through the Get key with key IDs path. No key material and no stream state crosses
// sites beyond what ETSI 014 delivery already sends, and every streamed key can equally
// be fetched by ID with GetKeyWithIDs or ETSI 014 dec_keys.
//
// Retries. GetKeyWithIDs takes an optional idempotency key in the call's metadata
// (IdempotencyKeyMetadata), the counterpart of the ETSI 014 Idempotency-Key header: a retry
// after an unknown outcome that repeats it, with the same key IDs and master, gets the keys
// the first call delivered while the site keeps that answer.
//
// Key bytes appear only in the answers to an authorized SAE; never in errors or logs.
package keydelivery
