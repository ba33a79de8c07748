package store

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/qkms/qkms/kms"
	bolt "go.etcd.io/bbolt"
)

// Sentinel errors callers branch on.
var (
	// ErrWrongMasterKey: the master key does not match the one the database was created with,
	// or a wrapped data key failed authentication under it.
	ErrWrongMasterKey = errors.New("store: master key does not match this database")
	// ErrTampered: a sealed segment or record failed authentication or is malformed.
	ErrTampered = errors.New("store: sealed material failed authentication (corrupted or tampered)")
	// ErrErased: the requested bytes were erased.
	ErrErased = errors.New("store: key material already erased")
	// ErrNoMaterial: no material is stored for the block (never ingested or dropped).
	ErrNoMaterial = errors.New("store: no key material stored for block")
	// ErrOutOfRange: a read or erase outside the block's material.
	ErrOutOfRange = errors.New("store: range outside the block's key material")
	// ErrReadOnly: a write method was called on the Tx of View.
	ErrReadOnly = errors.New("store: write in a read-only transaction")
	// ErrStaleIndex: Update was given a raft index at or below the one already applied.
	// Applying it again would apply a command twice; the FSM must skip such entries.
	ErrStaleIndex = errors.New("store: raft index already applied")
	// ErrClosed: the DB was closed.
	ErrClosed = errors.New("store: database closed")
)

// Bucket names. Records are keyed as documented at each put.
var (
	bucketMeta     = []byte("meta")     // keyApplied, keyCheck
	bucketPools    = []byte("pools")    // peer -> record
	bucketBlocks   = []byte("blocks")   // blockKey(peer, id) -> record
	bucketBlockSeq = []byte("blockseq") // lp(peer) | seq | id -> empty
	bucketResv     = []byte("resv")     // key ID -> reservation record
	bucketExpiry   = []byte("expiry")   // expiryKey(nanos, key ID) -> empty
	bucketRequests = []byte("requests") // request ID -> request record (keys sealed)
	bucketReqTime  = []byte("reqtime")  // expiryNanos(at) | request ID -> empty
	bucketMaterial = []byte("material") // blockKey(peer, id) -> bucket of header + segments
	bucketOwned    = []byte("owned")    // peer -> the pool's Owned list
	// bucketUnpushed: key ID -> empty for each reservation this site issued that the peer has
	// not acknowledged (WithSelf; unpushed.go). It says whether such a reservation is pushed
	// (MarkPushed removes the entry without rewriting the record). It is built from
	// bucketResv when keyUnpushedFor does not name this site, after its knowledge was written
	// into the records.
	bucketUnpushed = []byte("unpushed")

	keyApplied = []byte("applied")
	keyCheck   = []byte("check")
	// keyUnpushedFor names the site whose reservations bucketUnpushed indexes.
	keyUnpushedFor = []byte("unpushed_for")

	allBuckets = [][]byte{bucketMeta, bucketPools, bucketBlocks, bucketBlockSeq, bucketResv, bucketExpiry,
		bucketRequests, bucketReqTime, bucketMaterial, bucketOwned}
)

// lockTimeout bounds the wait for bbolt's file lock, so a second process opening the same file
// fails with an error instead of hanging.
const lockTimeout = 2 * time.Second

const initialMmapSize = 1 << 30

// DB is one node's store file. It is safe for concurrent use: bbolt allows one writer and many
// readers at a time.
type DB struct {
	noSync bool
	self   string // this site's KME ID (WithSelf): "" keeps no index of unpushed reservations
	path   string
	master cipher.AEAD // AES-256-GCM under the master key, for data-key wrapping

	// mu guards bolt against Restore swapping the file underneath transactions.
	mu   sync.RWMutex
	bolt *bolt.DB

	keys  *keyCache
	owned ownedCache

	// Deferred commits (deferred.go). wmu guards the open transaction and what goes with it;
	// it is taken with mu read-locked (or write-locked), never the other way round.
	deferMax   int
	deferDelay time.Duration
	wmu        sync.Mutex
	open       *tx // applied updates not yet committed
	openN      int
	timer      *time.Timer
	failed     error // a rolled-back or failed deferred commit: every later Update and View fails
	// resMu guards openRes, the key IDs of the reservations written in open.
	resMu   sync.Mutex
	openRes map[string]struct{}
}

// Open opens (creating if needed) the store file at path, sealed under masterKey (32 bytes).
// A database created under another master key is refused with ErrWrongMasterKey.
func Open(path string, masterKey []byte, opts ...Option) (*DB, error) {
	if len(masterKey) != MasterKeySize {
		return nil, fmt.Errorf("store: open %s: master key must be %d bytes, got %d", path, MasterKeySize, len(masterKey))
	}
	block, err := aes.NewCipher(masterKey)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	master, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db := &DB{path: path, master: master, keys: newKeyCache(keyCacheSize)}
	for _, o := range opts {
		o(db)
	}
	b, err := db.openBolt(path)
	if err != nil {
		return nil, err
	}
	db.bolt = b
	return db, nil
}

// Option tunes Open.
type Option func(*DB)

// WithoutFsync makes commits return once their pages are written to the operating system,
// without waiting for the disk. The state then survives a crash of the process (kill -9) but
// not of the machine, whose last commits may be lost or the file left unreadable; in a replicated
// site the node then recovers from a raft snapshot and its peers. It trades that for several
// times the commit rate on disks with slow fsync.
func WithoutFsync() Option { return func(db *DB) { db.noSync = true } }

// openBolt opens the bbolt file, creates the buckets and checks (or sets) the master-key check.
func (db *DB) openBolt(path string) (*bolt.DB, error) {
	b, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		// The hashmap freelist stays fast as the file grows and fragments (bbolt docs).
		FreelistType: bolt.FreelistMapType,
		// Growing the mmap waits for every open read transaction, so a long Snapshot would stall
		// Apply; reserving address space up front avoids that (only address space on Linux).
		InitialMmapSize: initialMmapSize,
		NoSync:          db.noSync,
		// Without fsync, growing the file needs none either (bbolt syncs the new size).
		NoGrowSync: db.noSync,
		// The freelist is rebuilt by a scan at open instead of written on every commit, as etcd
		// does: erasure frees pages all the time, and rewriting the list cost each commit more
		// than the records it carried.
		NoFreelistSync: true,
	})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	err = b.Update(func(btx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := btx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := btx.Bucket(bucketMeta)
		if check := meta.Get(keyCheck); check != nil {
			if err := db.verifyCheck(check); err != nil {
				return err
			}
		} else {
			check, err := db.newCheck()
			if err != nil {
				return err
			}
			if err := meta.Put(keyCheck, check); err != nil {
				return err
			}
		}
		return db.indexUnpushed(btx)
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return b, nil
}

// Path returns the file the DB was opened on.
func (db *DB) Path() string { return db.path }

// Close closes the file and forgets every cached data key.
func (db *DB) Close() error {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.keys.clear()
	if db.bolt == nil {
		return nil
	}
	ferr := db.flush()
	err := db.bolt.Close()
	db.bolt = nil
	if err != nil {
		return fmt.Errorf("store: close %s: %w", db.path, err)
	}
	if ferr != nil {
		return fmt.Errorf("store: close %s: %w", db.path, ferr)
	}
	return nil
}

// Update runs fn in one read-write bbolt transaction. If index > 0 it also records index as the
// applied raft index in the same transaction, so the state and the index that produced it are
// durable together; an index at or below the recorded one fails with ErrStaleIndex. An error
// from fn rolls everything back, index included. With WithDeferredCommit an Update with an
// index may return before its transaction commits (deferred.go).
func (db *DB) Update(index uint64, fn func(kms.Tx) error) error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.bolt == nil {
		return ErrClosed
	}
	if db.deferMax > 0 {
		if index > 0 {
			return db.updateDeferred(index, fn)
		}
		// Held throughout, so no deferred transaction opens meanwhile and waits on this one.
		db.wmu.Lock()
		defer db.wmu.Unlock()
		if err := db.flushLocked(); err != nil {
			return err
		}
	}
	return db.bolt.Update(func(btx *bolt.Tx) error {
		if err := checkIndex(btx, index); err != nil {
			return err
		}
		return db.apply(db.newTx(btx, true), index, fn)
	})
}

// checkIndex fails with ErrStaleIndex when index > 0 is not above the applied index.
func checkIndex(btx *bolt.Tx, index uint64) error {
	if index == 0 {
		return nil
	}
	if applied := decodeIndex(btx.Bucket(bucketMeta).Get(keyApplied)); index <= applied {
		return fmt.Errorf("store: apply index %d (applied %d): %w", index, applied, ErrStaleIndex)
	}
	return nil
}

// apply records index (if > 0) as applied and runs fn, in t's transaction.
func (db *DB) apply(t *tx, index uint64, fn func(kms.Tx) error) error {
	if index > 0 {
		v := make([]byte, 8)
		binary.BigEndian.PutUint64(v, index)
		if err := t.btx.Bucket(bucketMeta).Put(keyApplied, v); err != nil {
			return fmt.Errorf("store: record applied index %d: %w", index, err)
		}
	}
	return fn(t)
}

// View runs fn in a read-only transaction; the Tx's write methods return ErrReadOnly.
func (db *DB) View(fn func(kms.Tx) error) error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.bolt == nil {
		return ErrClosed
	}
	if err := db.flush(); err != nil {
		return err
	}
	return db.bolt.View(func(btx *bolt.Tx) error {
		return fn(db.newTx(btx, false))
	})
}

// AppliedIndex returns the raft index recorded by the last Update with index > 0 (0 if none).
func (db *DB) AppliedIndex() (uint64, error) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.bolt == nil {
		return 0, ErrClosed
	}
	if err := db.flush(); err != nil {
		return 0, err
	}
	var idx uint64
	err := db.bolt.View(func(btx *bolt.Tx) error {
		idx = decodeIndex(btx.Bucket(bucketMeta).Get(keyApplied))
		return nil
	})
	return idx, err
}

func decodeIndex(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}
