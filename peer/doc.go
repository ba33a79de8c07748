// Package peer owns the peer channel between two qkms sites (KMEs) joined by a QKD link:
// the gRPC server and client of qkms.peer.v1 (api/peerpb) over mutual TLS with KME
// certificates, the conversion between wire messages and kms types, and the validation of
// every message in both directions.
//
// DESIGN.md "Cross-site allocation": blocks are owned for issuing by one site; the owner
// commits a reservation and pushes it (PushReservations), the peer pulls it when a dec_keys
// arrives first (PullReservations), both compare block tags before any bit is used
// (CompareBlocks), and ownership moves when one direction drains faster (RequestBlocks).
//
// The channel never carries key material: only block IDs, keyed tags, reservations and
// ownership transfers. Every RPC is idempotent (see api/peerpb/peer.proto), so callers retry
// any call whose outcome is unknown with the same arguments; RequestBlocks carries a request
// ID for that purpose.
//
// Identity: the caller's KME ID comes from its verified client certificate — Subject
// CommonName, with exactly one Subject OrganizationalUnit, "kme" (the convention of package
// pki) — and is passed to the Service as `from`. The client checks the server's certificate
// the same way and requires its CommonName to be the KME it meant to reach.
package peer
