package kms

import (
	"cmp"
	"slices"
)

// blockSet loads each block a command touches once, so several ranges of one command that fall
// in the same block see each other's changes, and writes the changed ones back in first-touch
// order (deterministic, unlike map order).
type blockSet struct {
	tx    Tx
	byKey map[string]*Block
	order []*Block
	dirty map[*Block]bool
	// shredded lists, in flush order, the blocks whose material flush dropped (for the audit).
	shredded []*Block
	// erase holds, per block, the ranges released by the command; flush erases each run of
	// adjacent ranges at once. The keys of one request lie side by side in a block, and the
	// store erases a segment (512 bytes) wholly covered by deleting it, where erasing its keys
	// one by one decrypted, rewrote and sealed it again for each key.
	erase map[*Block][]Range
}

func newBlockSet(tx Tx) *blockSet {
	return &blockSet{tx: tx, byKey: map[string]*Block{}, dirty: map[*Block]bool{}, erase: map[*Block][]Range{}}
}

// release counts [off, off+n) of b released and queues its erasure for flush.
func (s *blockSet) release(b *Block, off, n int) {
	s.erase[b] = append(s.erase[b], Range{Block: b.ID, Off: off, Len: n})
	b.Released += n
	s.touch(b)
}

// get returns the block, or nil when it does not exist.
func (s *blockSet) get(peer, id string) (*Block, error) {
	k := peer + "\x00" + id
	if b, ok := s.byKey[k]; ok {
		return b, nil
	}
	b, err := s.tx.Block(peer, id)
	if err != nil {
		return nil, storageErr("read block "+id, err)
	}
	s.byKey[k] = b
	if b != nil {
		s.order = append(s.order, b)
	}
	return b, nil
}

func (s *blockSet) touch(b *Block) { s.dirty[b] = true }

// flush erases the released ranges, writes the changed blocks, and drops the material of
// those fully released (crypto-shredding: the store destroys the block's data key).
func (s *blockSet) flush() error {
	for _, b := range s.order {
		if !s.dirty[b] {
			continue
		}
		if err := s.tx.PutBlock(b); err != nil {
			return storageErr("write block "+b.ID, err)
		}
		if b.Released >= b.Bytes {
			if err := s.tx.DropMaterial(b.Peer, b.ID); err != nil {
				return storageErr("drop material of block "+b.ID, err)
			}
			s.shredded = append(s.shredded, b)
			continue
		}
		for _, rg := range mergeRanges(s.erase[b]) {
			if err := s.tx.EraseMaterial(b.Peer, b.ID, rg.Off, rg.Len); err != nil {
				return storageErr("erase material of block "+b.ID, err)
			}
		}
	}
	return nil
}

// mergeRanges returns the ranges of one block sorted by offset, adjacent and overlapping ones
// joined. rs is reordered.
func mergeRanges(rs []Range) []Range {
	slices.SortFunc(rs, func(a, b Range) int { return cmp.Compare(a.Off, b.Off) })
	var out []Range
	for _, r := range rs {
		if n := len(out); n > 0 && r.Off <= out[n-1].Off+out[n-1].Len {
			out[n-1].Len = max(out[n-1].Len, r.Off+r.Len-out[n-1].Off)
			continue
		}
		out = append(out, r)
	}
	return out
}
