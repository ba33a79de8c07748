// Package site runs one node of a site (a KME): it wires the kms state machine, the sealed
// store and raft replication to the ETSI GS QKD 014 listener for SAEs and the peer channel to
// other sites, ingests link key, and runs the leader's background work (block verification,
// reservation push, expiry, ownership rebalancing).
package site
