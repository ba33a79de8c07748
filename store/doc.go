// Package store owns a qkms node's durable state: one bbolt file per node holding the kms
// records (pools, blocks, reservations, request results), the raft index they reflect, and the
// sealed key material of every block. It implements kms.Tx on top of one bbolt transaction, so a
// batch of commands applied by the raft FSM is atomic, and it is the only place in qkms where key
// material touches a disk (DESIGN.md invariant 3).
//
// # Master key
//
// Each node is started with a 256-bit master key (LoadMasterKey): either a file holding 64 hex
// characters (or exactly 32 raw bytes) that must not be readable by group or others
// (chmod 600), or, when no file is configured, the environment variable QKMS_MASTER_KEY holding
// 64 hex characters. All nodes of one site must share the master key, because sealed material
// travels through the site's replicated log and every node stores the same blob. The database
// records a check value at creation, so opening it (or restoring a snapshot) with a different
// master key fails with ErrWrongMasterKey instead of yielding garbage later.
//
// # Sealing (envelope encryption)
//
// Seal draws a fresh random 256-bit data key per block and wraps it with AES-256-GCM under the
// master key (NIST SP 800-38D), binding the peer, the block ID, the segment size and the length
// as additional data. The material is cut into segments (512 bytes by default); each is sealed
// with AES-256-GCM under the data key with a random 96-bit nonce, and its additional data binds
// the peer, the block ID, the segment index and the list of erased ranges of that segment, so a
// segment cannot be moved to another block or position, or have its erasure record edited,
// without failing authentication. The sealed blob contains no plaintext: it is what the
// proposer puts in kms.IngestCmd.Sealed and what every node stores verbatim.
//
// # Erasure
//
// Each segment is its own bbolt key. EraseMaterial deletes segments that are wholly erased and
// rewrites partly erased ones with the erased bytes zeroed, under a fresh random nonce, recording
// the erased ranges (reads of erased bytes fail with ErrErased). DropMaterial deletes every
// segment and the wrapped data key and forgets the unwrapped data key from memory
// (crypto-shredding).
//
// Limitation: bbolt is copy-on-write, so the bytes of an old page stay in the file until bbolt
// reuses that page. Old segment ciphertexts (and, after DropMaterial, the old wrapped data key)
// can therefore linger in free pages for a while; they are ciphertext under the data key, itself
// wrapped by the master key, so erasure is final against anyone without the master key at once,
// and against a holder of the master key once the pages are reused.
//
// # Durability
//
// bbolt fsyncs every committed transaction unless the node runs with `durability: os`
// (WithoutFsync), where a commit survives a crash of the process but not of the machine. Update
// records the applied raft index in the same transaction as the state it produced, so after a
// crash (kill -9 included) the file holds exactly the state of the last committed Update, and
// AppliedIndex tells the FSM where to resume. Without WithDeferredCommit that is the last Update
// that returned. With it (sites use it: deferred.go), raft's updates share a transaction for up
// to 50 ms, and after a crash raft applies the entries of that last stretch again from its log,
// where they were durable before they were applied; every read of the store sees them.
//
// # Derived records
//
// Besides the kms records the file holds indexes kept in the same transactions: reservations
// by expiry time, request records by time, blocks by sequence number, and this site's
// reservations the peer has not acknowledged (unpushed.go; built at open when missing). A
// pool's list of owned blocks is a record of its own, written only when it changes (tx.go).
package store
