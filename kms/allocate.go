package kms

// allocation is the plan of one Issue: the ranges of each key, and per touched block the span
// [from, to) it takes. The owner allocates each of its blocks sequentially from Next, so the
// keys of one command occupy one contiguous span per block and a key may continue in the next
// owned block (a range per block it spans).
type allocation struct {
	keys  [][]Range
	spans []span
	done  int // leading entries of pool.Owned whose blocks the plan exhausts
}

type span struct {
	b        *Block
	from, to int
}

// plan allocates number keys of keyBytes bytes each from pool.Owned in order, without writing.
// It fails with ErrNotEnoughKey when the owned verified blocks hold too few free bytes.
func plan(bs *blockSet, pool *Pool, self string, number, keyBytes int) (*allocation, error) {
	need := int64(number) * int64(keyBytes)
	if pool == nil || pool.Available < need {
		return nil, reject(ErrNotEnoughKey, "not enough key material for %d keys of %d bits", number, keyBytes*8)
	}
	a := &allocation{keys: make([][]Range, number)}
	i := 0 // index in pool.Owned
	var cur *span
	for k := 0; k < number; k++ {
		left := keyBytes
		for left > 0 {
			if cur == nil || cur.to == cur.b.Bytes {
				if cur != nil {
					a.done++
				}
				if i >= len(pool.Owned) {
					return nil, reject(ErrNotEnoughKey, "not enough key material for %d keys of %d bits", number, keyBytes*8)
				}
				b, err := bs.get(pool.Peer, pool.Owned[i])
				if err != nil {
					return nil, err
				}
				i++
				if b == nil || b.State != BlockVerified || b.Owner != self || b.Next >= b.Bytes {
					return nil, storageErr("plan allocation", errMissing("usable owned block "+pool.Owned[i-1]))
				}
				a.spans = append(a.spans, span{b: b, from: b.Next, to: b.Next})
				cur = &a.spans[len(a.spans)-1]
			}
			t := min(left, cur.b.Bytes-cur.to)
			a.keys[k] = append(a.keys[k], Range{Block: cur.b.ID, Off: cur.to, Len: t})
			cur.to += t
			left -= t
		}
	}
	if cur != nil && cur.to == cur.b.Bytes {
		a.done++
	}
	return a, nil
}
