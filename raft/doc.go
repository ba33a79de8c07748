// Package raft owns the replication of one site's kms state machine across the nodes of the
// site (DESIGN.md: a site is a raft cluster of 1, 3 or 5 nodes; raft never spans sites).
//
// It runs hashicorp/raft (imported as hraft) with raft-boltdb/v2 as log and stable store and
// the node's own bbolt state store behind the FSM, the way its best users run it (Vault's
// integrated storage, Consul):
//
//   - fsm.go: a BatchingFSM that applies every entry of a batch in ONE store transaction that
//     also records the applied index, so a restart never re-applies an entry whose effects the
//     store holds (Ongaro, "Consensus: Bridging Theory and Practice", 2014, §5.4 on persisting
//     the state machine with its index). The sites' store lets several batches share that
//     transaction (store.WithDeferredCommit); a crash then loses only effects the log holds.
//     An entry of a later format version (kms.ErrNewerFormat) stops the node before it rather
//     than being skipped, and a leader refuses forwarded entries it could not apply, so nodes of
//     different versions never part (README, "Upgrading a site").
//   - groupcommit.go: concurrent proposals are collected into one log entry (group commit).
//   - forward.go: a follower forwards proposals, read-index requests and membership changes
//     to the leader over the site's internal mutual-TLS listener; results travel in a wire form
//     that keeps the kms sentinel errors.
//   - read.go: linearizable reads (Barrier once per term, VerifyLeader after the read;
//     followers ask the leader for a read index, Raft thesis §6.4) and stale reads.
//   - transport.go: the mutual-TLS stream layer, multiplexing raft and forwarding on one
//     listener by the first byte of each connection.
//   - snapshot.go: snapshots streamed from the state store, and recovery at start.
//   - membership.go: bootstrap, join, remove, leader, stats, leadership notifications.
package raft
