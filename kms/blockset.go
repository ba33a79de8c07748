package kms

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
}

func newBlockSet(tx Tx) *blockSet {
	return &blockSet{tx: tx, byKey: map[string]*Block{}, dirty: map[*Block]bool{}}
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

// flush writes the changed blocks, and drops the material of those fully released
// (crypto-shredding: the store destroys the block's data key).
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
		}
	}
	return nil
}
