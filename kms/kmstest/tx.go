// Package kmstest provides an in-memory kms.Tx for tests of the core and of the layers above it.
// It behaves like a faithful store: records are copied in and out (a caller's later changes to
// a record it read or wrote are not seen until it is written again), ExpiredBefore lists by
// expiry then key ID, and material is kept per block as plain bytes (the sealed form is stored as
// given, since sealing is the store's job). Reading erased or dropped material is an error, so
// a core that hands out erased bytes fails its tests.
package kmstest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/qkms/qkms/kms"
)

// ErrInjected is returned by writes once Tx.FailWritesAfter is reached.
var ErrInjected = errors.New("kmstest: injected write failure")

type material struct {
	b      []byte
	erased []bool
}

// Tx is an in-memory kms.Tx. The zero value is not usable; call New. It is not safe for
// concurrent use.
type Tx struct {
	pools    map[string]*kms.Pool
	blocks   map[string]*kms.Block
	res      map[string]*kms.Reservation
	requests map[string]*kms.RequestRecord
	mat      map[string]*material
	dropped  map[string]bool
	audit    []*kms.AuditEntry

	// FailWritesAfter, when positive, makes every write after that many succeed fail with
	// ErrInjected (to test that storage failures are reported).
	FailWritesAfter int
	writes          int
}

var _ kms.Tx = (*Tx)(nil)

// New returns an empty store.
func New() *Tx {
	return &Tx{
		pools:    map[string]*kms.Pool{},
		blocks:   map[string]*kms.Block{},
		res:      map[string]*kms.Reservation{},
		requests: map[string]*kms.RequestRecord{},
		mat:      map[string]*material{},
		dropped:  map[string]bool{},
	}
}

func bkey(peer, id string) string { return peer + "\x00" + id }

func (t *Tx) write() error {
	t.writes++
	if t.FailWritesAfter > 0 && t.writes > t.FailWritesAfter {
		return ErrInjected
	}
	return nil
}

func cloneBlock(b *kms.Block) *kms.Block {
	c := *b
	c.Tag = bytes.Clone(b.Tag)
	return &c
}

func cloneRes(r *kms.Reservation) *kms.Reservation {
	c := *r
	c.Slaves = slices.Clone(r.Slaves)
	c.Fetched = slices.Clone(r.Fetched)
	c.Ranges = slices.Clone(r.Ranges)
	return &c
}

func (t *Tx) Pool(peer string) (*kms.Pool, error) {
	if p, ok := t.pools[peer]; ok {
		return p.Clone(), nil
	}
	return nil, nil
}

func (t *Tx) PutPool(p *kms.Pool) error {
	if err := t.write(); err != nil {
		return err
	}
	t.pools[p.Peer] = p.Clone()
	return nil
}

func (t *Tx) Block(peer, id string) (*kms.Block, error) {
	if b, ok := t.blocks[bkey(peer, id)]; ok {
		return cloneBlock(b), nil
	}
	return nil, nil
}

func (t *Tx) PutBlock(b *kms.Block) error {
	if err := t.write(); err != nil {
		return err
	}
	t.blocks[bkey(b.Peer, b.ID)] = cloneBlock(b)
	return nil
}

func (t *Tx) Reservation(keyID string) (*kms.Reservation, error) {
	if r, ok := t.res[keyID]; ok {
		return cloneRes(r), nil
	}
	return nil, nil
}

func (t *Tx) PutReservation(r *kms.Reservation) error {
	if err := t.write(); err != nil {
		return err
	}
	t.res[r.KeyID] = cloneRes(r)
	return nil
}

func (t *Tx) MarkPushed(self, keyID string) error {
	if err := t.write(); err != nil {
		return err
	}
	if r := t.res[keyID]; r != nil && r.Owner == self && r.State == kms.KeyIssued && !r.Pushed {
		c := cloneRes(r)
		c.Pushed = true
		t.res[keyID] = c
	}
	return nil
}

func (t *Tx) DeleteReservation(keyID string) error {
	if err := t.write(); err != nil {
		return err
	}
	delete(t.res, keyID)
	return nil
}

// ExpiredBefore lists stored reservations, in any state, with Expires <= at, oldest first
// (ties by key ID). The core keeps finished reservations as tombstones whose Expires is their
// purge time, so they must be listed too.
func (t *Tx) ExpiredBefore(at time.Time, limit int) ([]string, error) {
	var rs []*kms.Reservation
	for _, r := range t.res {
		if !r.Expires.After(at) {
			rs = append(rs, r)
		}
	}
	sort.Slice(rs, func(i, j int) bool {
		if !rs[i].Expires.Equal(rs[j].Expires) {
			return rs[i].Expires.Before(rs[j].Expires)
		}
		return rs[i].KeyID < rs[j].KeyID
	})
	var out []string
	for _, r := range rs {
		if len(out) == limit {
			break
		}
		out = append(out, r.KeyID)
	}
	return out, nil
}

func (t *Tx) Request(reqID string) (*kms.RequestRecord, error) {
	if v, ok := t.requests[reqID]; ok {
		return cloneRequest(v), nil
	}
	return nil, nil
}

func (t *Tx) PutRequest(reqID string, rec *kms.RequestRecord) error {
	if err := t.write(); err != nil {
		return err
	}
	t.requests[reqID] = cloneRequest(rec)
	return nil
}

func (t *Tx) ExpireRequests(before time.Time, limit int) (int, error) {
	if err := t.write(); err != nil {
		return 0, err
	}
	var due []string
	for id, r := range t.requests {
		if r.At.Before(before) {
			due = append(due, id)
		}
	}
	slices.Sort(due)
	n := 0
	for _, id := range due {
		if n == limit {
			break
		}
		delete(t.requests, id)
		n++
	}
	return n, nil
}

func cloneRequest(r *kms.RequestRecord) *kms.RequestRecord {
	c := *r
	c.Keys = nil
	for _, k := range r.Keys {
		k.Bytes = bytes.Clone(k.Bytes)
		c.Keys = append(c.Keys, k)
	}
	return &c
}

func (t *Tx) PutMaterial(peer, blockID string, sealed []byte) error {
	if err := t.write(); err != nil {
		return err
	}
	k := bkey(peer, blockID)
	if _, ok := t.mat[k]; ok || t.dropped[k] {
		return fmt.Errorf("kmstest: material of block %q stored twice", blockID)
	}
	t.mat[k] = &material{b: bytes.Clone(sealed), erased: make([]bool, len(sealed))}
	return nil
}

func (t *Tx) ReadMaterial(peer, blockID string, off, n int) ([]byte, error) {
	m, ok := t.mat[bkey(peer, blockID)]
	if !ok {
		return nil, fmt.Errorf("kmstest: no material for block %q", blockID)
	}
	if off < 0 || n < 0 || off+n > len(m.b) {
		return nil, fmt.Errorf("kmstest: read [%d,%d) outside block %q of %d bytes", off, off+n, blockID, len(m.b))
	}
	for i := off; i < off+n; i++ {
		if m.erased[i] {
			return nil, fmt.Errorf("kmstest: read of erased byte %d of block %q", i, blockID)
		}
	}
	return bytes.Clone(m.b[off : off+n]), nil
}

func (t *Tx) EraseMaterial(peer, blockID string, off, n int) error {
	if err := t.write(); err != nil {
		return err
	}
	m, ok := t.mat[bkey(peer, blockID)]
	if !ok {
		return fmt.Errorf("kmstest: erase: no material for block %q", blockID)
	}
	if off < 0 || n < 0 || off+n > len(m.b) {
		return fmt.Errorf("kmstest: erase [%d,%d) outside block %q", off, off+n, blockID)
	}
	for i := off; i < off+n; i++ {
		m.b[i] = 0
		m.erased[i] = true
	}
	return nil
}

func (t *Tx) DropMaterial(peer, blockID string) error {
	if err := t.write(); err != nil {
		return err
	}
	k := bkey(peer, blockID)
	delete(t.mat, k)
	t.dropped[k] = true
	return nil
}

// Writes counts the writes attempted so far.
func (t *Tx) Writes() int { return t.writes }

// HasMaterial says whether a block's material is still stored (not dropped).
func (t *Tx) HasMaterial(peer, blockID string) bool {
	_, ok := t.mat[bkey(peer, blockID)]
	return ok
}

// Live counts the bytes of a block that are stored and not erased.
func (t *Tx) Live(peer, blockID string) int {
	m, ok := t.mat[bkey(peer, blockID)]
	if !ok {
		return 0
	}
	n := 0
	for _, e := range m.erased {
		if !e {
			n++
		}
	}
	return n
}

// Blocks calls fn with a copy of each block of peer's pool in Seq order until fn returns false.
func (t *Tx) Blocks(peer string, fn func(*kms.Block) bool) error {
	for _, b := range t.blocksOf(peer) {
		if !fn(cloneBlock(b)) {
			break
		}
	}
	return nil
}

func (t *Tx) BlocksNewestFirst(peer string, fn func(*kms.Block) bool) error {
	bs := t.blocksOf(peer)
	for i := len(bs) - 1; i >= 0; i-- {
		if !fn(cloneBlock(bs[i])) {
			break
		}
	}
	return nil
}

// blocksOf lists peer's blocks in Seq order.
func (t *Tx) blocksOf(peer string) []*kms.Block {
	var bs []*kms.Block
	for _, b := range t.blocks {
		if b.Peer == peer {
			bs = append(bs, b)
		}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].Seq < bs[j].Seq })
	return bs
}

// Pools calls fn with a copy of each pool, by peer, until fn returns false.
func (t *Tx) Pools(fn func(*kms.Pool) bool) error {
	peers := make([]string, 0, len(t.pools))
	for k := range t.pools {
		peers = append(peers, k)
	}
	sort.Strings(peers)
	for _, k := range peers {
		if !fn(t.pools[k].Clone()) {
			break
		}
	}
	return nil
}

// Reservations calls fn with a copy of each stored reservation, by key ID, until fn returns
// false.
func (t *Tx) Reservations(fn func(*kms.Reservation) bool) error {
	for _, r := range t.sortedRes() {
		if !fn(cloneRes(r)) {
			break
		}
	}
	return nil
}

func (t *Tx) sortedRes() []*kms.Reservation {
	out := make([]*kms.Reservation, 0, len(t.res))
	for _, r := range t.res {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].KeyID < out[j].KeyID })
	return out
}

// Dump renders the whole state, material included, deterministically, so tests can compare the
// store before and after a command. It holds key bytes: use it only in tests.
func (t *Tx) Dump() string {
	var sb strings.Builder
	keys := func(n int, f func(yield func(string))) []string {
		out := make([]string, 0, n)
		f(func(k string) { out = append(out, k) })
		sort.Strings(out)
		return out
	}
	for _, k := range keys(len(t.pools), func(y func(string)) {
		for k := range t.pools {
			y(k)
		}
	}) {
		fmt.Fprintf(&sb, "pool %+v\n", *t.pools[k])
	}
	for _, k := range keys(len(t.blocks), func(y func(string)) {
		for k := range t.blocks {
			y(k)
		}
	}) {
		fmt.Fprintf(&sb, "block %+v\n", *t.blocks[k])
	}
	for _, r := range t.sortedRes() {
		fmt.Fprintf(&sb, "res %+v\n", *r)
	}
	for _, k := range keys(len(t.requests), func(y func(string)) {
		for k := range t.requests {
			y(k)
		}
	}) {
		fmt.Fprintf(&sb, "req %q %+v\n", k, *t.requests[k])
	}
	for _, k := range keys(len(t.mat), func(y func(string)) {
		for k := range t.mat {
			y(k)
		}
	}) {
		fmt.Fprintf(&sb, "mat %q %x %v\n", k, t.mat[k].b, t.mat[k].erased)
	}
	for _, k := range keys(len(t.dropped), func(y func(string)) {
		for k := range t.dropped {
			y(k)
		}
	}) {
		fmt.Fprintf(&sb, "dropped %q\n", k)
	}
	return sb.String()
}
