package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/qkms/qkms/kms"
	bolt "go.etcd.io/bbolt"
)

// tx implements kms.Tx on one bbolt transaction.
type tx struct {
	db       *DB
	btx      *bolt.Tx
	writable bool
	deferred bool // the open transaction of WithDeferredCommit: reservations it creates are noted

	// scratch is reused for record keys and additional data; plain for decrypted segments.
	// bbolt clones keys on Put, so reusing scratch for keys is safe; values are never scratch.
	scratch []byte
	plain   []byte

	opened []*openBucket
	// auditNext is the lowest Seq the audit trail can take next, once auditNextKnown
	// (AppendAudit).
	auditNext      uint64
	auditNextKnown bool
}

// openBucket is a top-level bucket as this transaction opened it, with a cursor kept for
// lookups: bbolt's Bucket.Get makes a new cursor, whose search stack then grows by
// allocation, on every call, and a read-only transaction's Bucket opens the bucket anew.
type openBucket struct {
	name []byte
	b    *bolt.Bucket
	c    *bolt.Cursor
}

var _ kms.Tx = (*tx)(nil)

func (db *DB) newTx(btx *bolt.Tx, writable bool) *tx {
	return &tx{db: db, btx: btx, writable: writable}
}

func (t *tx) bucket(name []byte) *bolt.Bucket { return t.open(name).b }

func (t *tx) open(name []byte) *openBucket {
	for _, o := range t.opened {
		if bytes.Equal(o.name, name) {
			return o
		}
	}
	o := &openBucket{name: name, b: t.btx.Bucket(name)}
	// A missing bucket is not remembered: the transaction may create it (the audit trail's is
	// created by its first append), and a later lookup must then find it.
	if o.b != nil {
		if t.writable {
			o.b.FillPercent = fillPercent(name)
		}
		t.opened = append(t.opened, o)
	}
	return o
}

// appendFill is the fill percent of buckets whose keys mostly arrive in ascending order: key
// and request IDs are time-ordered (newKeyID in site), expiry and audit keys start with a time
// or a sequence number. bbolt splits a full page in half by default, which for ascending
// inserts leaves every page behind the right edge half empty, so a commit writes and the tree
// holds about twice the pages; etcd fills its sequentially keyed buckets to 90% for the same
// reason. Out-of-order inserts still work, at the price of a split sooner.
const appendFill = 0.9

func fillPercent(name []byte) float64 {
	for _, b := range [][]byte{bucketResv, bucketExpiry, bucketRequests, bucketReqTime, bucketAudit, bucketUnpushed} {
		if bytes.Equal(name, b) {
			return appendFill
		}
	}
	return bolt.DefaultFillPercent
}

// get is Bucket.Get on a top-level bucket through the transaction's cursor for it. The value
// is valid for the life of the transaction only, as Get's is.
func (t *tx) get(name, key []byte) []byte {
	o := t.open(name)
	if o.b == nil {
		return nil
	}
	if o.c == nil {
		o.c = o.b.Cursor()
	}
	// Seek starts from the root each time, so writes between lookups do not disturb it.
	k, v := o.c.Seek(key)
	if v == nil || !bytes.Equal(k, key) { // v is nil for a nested bucket
		return nil
	}
	return v
}

func (t *tx) checkWritable(op string) error {
	if !t.writable {
		return fmt.Errorf("store: %s: %w", op, ErrReadOnly)
	}
	return nil
}

// Record values start with a format version byte so the encoding can change (JSON today)
// without rewriting the file.
const recordVersion = 1

func encodeRecord(prefix []byte, v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 1+len(prefix)+len(body))
	out = append(out, recordVersion)
	out = append(out, prefix...)
	return append(out, body...), nil
}

// decodeRecord checks the version byte and skips prefixLen bytes of fixed fields.
func decodeRecord(raw []byte, prefixLen int, v any) error {
	if len(raw) < 1+prefixLen || raw[0] != recordVersion {
		return fmt.Errorf("record format: %w", ErrTampered)
	}
	if err := json.Unmarshal(raw[1+prefixLen:], v); err != nil {
		return fmt.Errorf("record body: %v: %w", err, ErrTampered)
	}
	return nil
}

// blockKey is lp(peer) | id: unambiguous for any peer and block ID.
func blockKey(b []byte, peer, id string) []byte {
	return append(appendLP(b, peer), id...)
}

// --- pools ---
//
// bucketPools: peer -> poolVersion | body of kms.AppendPool (everything but Owned), or a JSON
// record of recordVersion (Owned included) written by an earlier version.
// bucketOwned: peer -> body of kms.AppendOwned.
//
// Owned names every block a pool still issues from: a thousand and more once a pool holds
// millions of keys. Every Issue and Fetch writes its pool's counters, but Owned changes only
// when a block is used up or newly verified, so it is kept apart and written only then; before,
// each of those commands encoded and wrote the whole list.

func (t *tx) Pool(peer string) (*kms.Pool, error) {
	raw := t.get(bucketPools, []byte(peer))
	if raw == nil {
		return nil, nil
	}
	p := new(kms.Pool)
	legacy, err := decodePoolRecord(raw, p)
	if err != nil {
		return nil, fmt.Errorf("store: pool %q: %w", peer, err)
	}
	if legacy {
		return p, nil
	}
	owned, err := t.db.owned.get(peer, t.get(bucketOwned, []byte(peer)))
	if err != nil {
		return nil, fmt.Errorf("store: owned blocks of pool %q: %w: %w", peer, err, ErrTampered)
	}
	p.Owned = owned
	return p, nil
}

func (t *tx) PutPool(p *kms.Pool) error {
	if err := t.checkWritable("put pool"); err != nil {
		return err
	}
	key := []byte(p.Peer)
	if err := t.bucket(bucketPools).Put(key, encodePool(p)); err != nil {
		return fmt.Errorf("store: put pool %q: %w", p.Peer, err)
	}
	cur := t.get(bucketOwned, key)
	if cur != nil && t.db.owned.holds(p.Peer, cur, p.Owned) {
		return nil
	}
	o := kms.AppendOwned(nil, p.Owned)
	if err := t.bucket(bucketOwned).Put(key, o); err != nil {
		return fmt.Errorf("store: put owned blocks of pool %q: %w", p.Peer, err)
	}
	// o is not written to again, by bbolt or here, and the caller keeps its own array. If the
	// transaction rolls back, the entry only goes unused: a lookup must match the stored bytes.
	t.db.owned.put(p.Peer, o, slices.Clone(p.Owned))
	return nil
}

func (t *tx) Pools(fn func(*kms.Pool) bool) error {
	return t.iterate(bucketPools, nil, func(k []byte) (bool, error) {
		p, err := t.Pool(string(k))
		if err != nil || p == nil {
			return err == nil, err
		}
		return fn(p), nil
	})
}

// ownedCache keeps each pool's last decoded Owned list, keyed by the record's stored bytes,
// so that reading a pool (every Issue and Fetch does) neither decodes nor copies the list. A
// hit needs the stored bytes to be equal, so the cache cannot serve a list the file does not
// hold: not after a rollback, nor after Restore replaced the file.
//
// The cached list is shared with every pool read from it, as a slice whose capacity is its
// length: callers never write its elements, and an append or insert copies it (kms.Pool).
type ownedCache struct {
	mu sync.Mutex
	m  map[string]cachedOwned // by peer
}

type cachedOwned struct {
	raw []byte
	ids []string
}

// get returns the list raw encodes, from the cache when it holds raw.
func (c *ownedCache) get(peer string, raw []byte) ([]string, error) {
	c.mu.Lock()
	e, ok := c.m[peer]
	c.mu.Unlock()
	if ok && bytes.Equal(e.raw, raw) {
		return e.ids[:len(e.ids):len(e.ids)], nil
	}
	ids, err := kms.DecodeOwned(raw)
	if err != nil {
		return nil, err
	}
	c.put(peer, bytes.Clone(raw), ids)
	return ids[:len(ids):len(ids)], nil
}

// holds reports whether raw, the stored record, is the cached one and encodes owned.
func (c *ownedCache) holds(peer string, raw []byte, owned []string) bool {
	c.mu.Lock()
	e, ok := c.m[peer]
	c.mu.Unlock()
	if !ok || len(e.ids) != len(owned) || !bytes.Equal(e.raw, raw) {
		return false
	}
	// A pool read from the cache and not changed still shares its array.
	return len(owned) == 0 || &e.ids[0] == &owned[0] || slices.Equal(e.ids, owned)
}

// put caches ids as the decoding of raw; neither may be changed afterwards.
func (c *ownedCache) put(peer string, raw []byte, ids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]cachedOwned)
	}
	c.m[peer] = cachedOwned{raw: raw, ids: ids[:len(ids):len(ids)]}
}

// --- blocks ---
//
// bucketBlocks: blockKey(peer, id) -> version | seq(8) | body (codec.go).
// bucketBlockSeq: lp(peer) | seq(8) | id -> empty, so Blocks walks a pool in Seq order.

func (t *tx) Block(peer, id string) (*kms.Block, error) {
	t.scratch = blockKey(t.scratch[:0], peer, id)
	raw := t.get(bucketBlocks, t.scratch)
	if raw == nil {
		return nil, nil
	}
	b := new(kms.Block)
	if err := decodeBlockRecord(raw, b); err != nil {
		return nil, fmt.Errorf("store: block %q of peer %q: %w", id, peer, err)
	}
	return b, nil
}

func (t *tx) PutBlock(b *kms.Block) error {
	if err := t.checkWritable("put block"); err != nil {
		return err
	}
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], b.Seq)
	v := encodeBlock(seq[:], b)
	blocks, index := t.bucket(bucketBlocks), t.bucket(bucketBlockSeq)
	t.scratch = blockKey(t.scratch[:0], b.Peer, b.ID)
	old := t.get(bucketBlocks, t.scratch)
	indexed := len(old) >= 9 && bytes.Equal(old[1:9], seq[:]) // its index entry is already there
	if len(old) >= 9 && !indexed {
		if err := index.Delete(blockSeqKey(nil, b.Peer, binary.BigEndian.Uint64(old[1:9]), b.ID)); err != nil {
			return fmt.Errorf("store: put block %q: %w", b.ID, err)
		}
	}
	if err := blocks.Put(t.scratch, v); err != nil {
		return fmt.Errorf("store: put block %q: %w", b.ID, err)
	}
	if indexed {
		return nil
	}
	if err := index.Put(blockSeqKey(t.scratch[:0], b.Peer, b.Seq, b.ID), []byte{}); err != nil {
		return fmt.Errorf("store: put block %q: %w", b.ID, err)
	}
	return nil
}

func blockSeqKey(b []byte, peer string, seq uint64, id string) []byte {
	b = appendLP(b, peer)
	b = binary.BigEndian.AppendUint64(b, seq)
	return append(b, id...)
}

func (t *tx) Blocks(peer string, fn func(*kms.Block) bool) error {
	prefix := appendLP(nil, peer)
	return t.iterate(bucketBlockSeq, prefix, t.visitBlock(peer, len(prefix), fn))
}

func (t *tx) BlocksNewestFirst(peer string, fn func(*kms.Block) bool) error {
	prefix := appendLP(nil, peer)
	return t.iterateDesc(bucketBlockSeq, prefix, t.visitBlock(peer, len(prefix), fn))
}

// visitBlock turns fn into a visitor of bucketBlockSeq keys under a prefix of prefixLen bytes.
func (t *tx) visitBlock(peer string, prefixLen int, fn func(*kms.Block) bool) func(k []byte) (bool, error) {
	return func(k []byte) (bool, error) {
		b, err := t.Block(peer, string(k[prefixLen+8:]))
		if err != nil || b == nil {
			return err == nil, err
		}
		return fn(b), nil
	}
}

// iterate calls visit with each key of bucket having prefix, in key order. It reads keys in
// chunks and visits them with no cursor open, so visit may write to the same bucket (bbolt
// cursors are not safe across modifications).
func (t *tx) iterate(name, prefix []byte, visit func(k []byte) (bool, error)) error {
	return t.walk(name, prefix, false, visit)
}

// iterateDesc is iterate in descending key order.
func (t *tx) iterateDesc(name, prefix []byte, visit func(k []byte) (bool, error)) error {
	return t.walk(name, prefix, true, visit)
}

func (t *tx) walk(name, prefix []byte, desc bool, visit func(k []byte) (bool, error)) error {
	const chunk = 256
	keys := make([][]byte, 0, chunk)
	var from []byte // the last key visited, nil before the first chunk
	for {
		keys = keys[:0]
		c := t.bucket(name).Cursor()
		k, step := after(c, prefix, from), c.Next
		if desc {
			k, step = before(c, prefix, from), c.Prev
		}
		for ; k != nil && bytes.HasPrefix(k, prefix) && len(keys) < chunk; k, _ = step() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			more, err := visit(k)
			if err != nil {
				return err
			}
			if !more {
				return nil
			}
		}
		if len(keys) < chunk {
			return nil
		}
		from = keys[len(keys)-1]
	}
}

// after positions c on the first key after from (which may be gone since), or on the first key
// with prefix when from is nil.
func after(c *bolt.Cursor, prefix, from []byte) []byte {
	if from == nil {
		k, _ := c.Seek(prefix)
		return k
	}
	k, _ := c.Seek(from)
	if k != nil && bytes.Equal(k, from) {
		k, _ = c.Next()
	}
	return k
}

// before positions c on the last key before from (which may be gone since), or on the last key
// with prefix when from is nil.
func before(c *bolt.Cursor, prefix, from []byte) []byte {
	if from == nil {
		if from = prefixEnd(prefix); from == nil { // no key is past every key with prefix
			k, _ := c.Last()
			return k
		}
	}
	if k, _ := c.Seek(from); k == nil { // nothing at or after from
		k, _ = c.Last()
		return k
	}
	k, _ := c.Prev()
	return k
}

// prefixEnd returns the least key greater than every key starting with prefix, or nil when
// there is none (prefix is empty or all 0xff).
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// --- reservations ---
//
// bucketResv: key ID -> version | live(1) | expiry(8) | body (codec.go), where live and expiry say which
// bucketExpiry entry the record owns, so a Put can drop the old entry without decoding JSON.
// bucketExpiry: expiryKey(Expires) | key ID -> empty, for every reservation still Issued with a
// non-zero Expires (a zero Expires never expires).

func (t *tx) Reservation(keyID string) (*kms.Reservation, error) {
	raw := t.get(bucketResv, []byte(keyID))
	if raw == nil {
		return nil, nil
	}
	r := new(kms.Reservation)
	if err := decodeReservationRecord(raw, r); err != nil {
		return nil, fmt.Errorf("store: reservation %s: %w", keyID, err)
	}
	t.pushedByIndex(r)
	return r, nil
}

// hasReservation says whether a reservation (tombstones included) exists, without decoding it.
func (t *tx) hasReservation(keyID string) bool {
	return t.get(bucketResv, []byte(keyID)) != nil
}

func (t *tx) PutReservation(r *kms.Reservation) error {
	if err := t.checkWritable("put reservation"); err != nil {
		return err
	}
	var fixed [9]byte
	// Every reservation with an expiry is indexed, tombstones (Fetched, Expired) included: the
	// core deletes them through ExpiredBefore once their time has come.
	live := !r.Expires.IsZero()
	if live {
		fixed[0] = 1
		binary.BigEndian.PutUint64(fixed[1:], expiryNanos(r.Expires))
	}
	v := encodeReservation(fixed[:], r)
	id := []byte(r.KeyID)
	resv := t.bucket(bucketResv)
	old := t.get(bucketResv, id)
	oldLive := len(old) >= 10 && old[1] == 1
	indexed := oldLive && live && bytes.Equal(old[2:10], fixed[1:]) // index entry already right
	if oldLive && !indexed {
		if err := t.bucket(bucketExpiry).Delete(t.expiryKey(old[2:10], r.KeyID)); err != nil {
			return fmt.Errorf("store: put reservation %s: %w", r.KeyID, err)
		}
	}
	if err := resv.Put(id, v); err != nil {
		return fmt.Errorf("store: put reservation %s: %w", r.KeyID, err)
	}
	if live && !indexed {
		if err := t.bucket(bucketExpiry).Put(t.expiryKey(fixed[1:], r.KeyID), []byte{}); err != nil {
			return fmt.Errorf("store: put reservation %s: %w", r.KeyID, err)
		}
	}
	if err := t.indexReservation(id, r); err != nil {
		return fmt.Errorf("store: put reservation %s: %w", r.KeyID, err)
	}
	if t.deferred && old == nil { // one already there is committed or noted
		t.db.noteReservation(r.KeyID)
	}
	return nil
}

func (t *tx) DeleteReservation(keyID string) error {
	if err := t.checkWritable("delete reservation"); err != nil {
		return err
	}
	id := []byte(keyID)
	resv := t.bucket(bucketResv)
	old := resv.Get(id)
	if old == nil {
		return nil
	}
	if len(old) >= 10 && old[1] == 1 {
		if err := t.bucket(bucketExpiry).Delete(t.expiryKey(old[2:10], keyID)); err != nil {
			return fmt.Errorf("store: delete reservation %s: %w", keyID, err)
		}
	}
	if err := resv.Delete(id); err != nil {
		return fmt.Errorf("store: delete reservation %s: %w", keyID, err)
	}
	if t.db.self != "" {
		if err := t.bucket(bucketUnpushed).Delete(id); err != nil {
			return fmt.Errorf("store: delete reservation %s: %w", keyID, err)
		}
	}
	return nil
}

// decodeReservationRecord reads a reservation record: the binary body (reservationVersion)
// or JSON (recordVersion, written before the binary codec existed).
func decodeReservationRecord(raw []byte, r *kms.Reservation) error {
	return decodeVersioned(raw, reservationVersion, 9, r, kms.DecodeReservation)
}

func (t *tx) expiryKey(nanos []byte, keyID string) []byte {
	t.scratch = append(append(t.scratch[:0], nanos...), keyID...)
	return t.scratch
}

// expiryNanos maps t to a uint64 whose big-endian bytes sort like t: Unix nanoseconds with the
// sign bit flipped, clamped to the int64 range (time.UnixNano is undefined outside it).
func expiryNanos(t time.Time) uint64 {
	var n int64
	switch sec := t.Unix(); {
	case sec <= math.MinInt64/1_000_000_000:
		n = math.MinInt64
	case sec >= math.MaxInt64/1_000_000_000:
		n = math.MaxInt64
	default:
		n = t.UnixNano()
	}
	return uint64(n) ^ 1<<63
}

// ExpiredBefore lists up to limit key IDs of live (Issued) reservations with Expires <= t, in
// expiry order. A limit <= 0 lists none.
func (t *tx) ExpiredBefore(at time.Time, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	var bound [8]byte
	binary.BigEndian.PutUint64(bound[:], expiryNanos(at))
	var ids []string
	c := t.bucket(bucketExpiry).Cursor()
	for k, _ := c.First(); k != nil && len(ids) < limit; k, _ = c.Next() {
		if len(k) < 8 || bytes.Compare(k[:8], bound[:]) > 0 {
			break
		}
		ids = append(ids, string(k[8:]))
	}
	return ids, nil
}

func (t *tx) Reservations(fn func(*kms.Reservation) bool) error {
	return t.iterate(bucketResv, nil, func(k []byte) (bool, error) {
		r, err := t.Reservation(string(k))
		if err != nil || r == nil {
			return err == nil, err
		}
		return fn(r), nil
	})
}
