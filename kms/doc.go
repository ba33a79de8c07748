// Package kms is the key-management core of a qkms site: pools of link key per peer KME, block
// verification and ownership, allocation of keys from owned blocks, reservations and their
// lifecycle (issued -> fetched or expired -> erased), multicast to additional slaves, the limits
// of the ETSI GS QKD 014 status object, and the registry of which SAE is served by which KME.
//
// The core does no I/O. Machine.Apply is a deterministic state machine over a Tx (one storage
// transaction, implemented by the node's store and by kmstest in tests): everything it uses, the
// time and the fresh key IDs included, travels in the Command, so every node of a site that
// applies the same log reaches the same state (the etcd-io/raft style of a pure core).
//
// Cross-site allocation (DESIGN.md): each verified block of a link is owned, for issuing, by
// exactly one of the two sites. The owner allocates keys from its blocks sequentially, hands the
// bytes to the master SAE and erases them locally in the same command, and pushes the
// reservation (key ID -> block ranges) to the peer, which stores it with PeerReserve and hands the
// same bytes to the named slaves (Fetch), erasing them after the last slave fetched or at expiry.
// No key material crosses the classical network; only reservations do.
//
// ETSI GS QKD 014 V1.1.1 rules followed here: keys handed out are removed from the pool (clause
// 5.2), only the slave and additional slaves named in Get key may fetch (401, clause 5.3 and
// Annex B), sizes are multiples of 8 ("size shall be a multiple of 8"), unknown key IDs are
// "one or more keys specified are not found on KME".
package kms
