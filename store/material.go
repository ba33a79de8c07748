package store

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Material of a block lives in its own bucket under bucketMaterial, named blockKey(peer, id):
//
//	headerKey          -> the blob's header (wrapped data key, segment size, total length)
//	segment index (4)  -> segment value (see seal.go); absent once wholly erased
var headerKey = []byte("h")

func segKey(b []byte, i int) []byte { return binary.BigEndian.AppendUint32(b, uint32(i)) }

// PutMaterial stores a sealed blob from Seal. It checks the blob's structure and that its data
// key unwraps under this node's master key for this peer and block (so a blob sealed by a node
// with another master key, or for another block, is refused at ingest rather than at first
// read); segments are authenticated when read. Existing material of the block is replaced.
func (t *tx) PutMaterial(peer, blockID string, sealed []byte) error {
	if err := t.checkWritable("put material"); err != nil {
		return err
	}
	if err := checkNames(peer, blockID); err != nil {
		return fmt.Errorf("store: put material of block %q: %w", blockID, err)
	}
	// bbolt keeps references to Put values until commit; the caller's buffer is not ours.
	blob := bytes.Clone(sealed)
	h, segs, err := parseSealed(blob)
	if err != nil {
		return fmt.Errorf("store: put material of block %q: %w", blockID, err)
	}
	if _, err := t.db.dataKey(h, peer, blockID); err != nil {
		return err
	}
	if err := t.DropMaterial(peer, blockID); err != nil {
		return err
	}
	name := blockKey(nil, peer, blockID)
	mb, err := t.bucket(bucketMaterial).CreateBucket(name)
	if err != nil {
		return fmt.Errorf("store: put material of block %q: %w", blockID, err)
	}
	// Segments arrive in key order; full pages waste no space on appends.
	mb.FillPercent = 1.0
	if err := mb.Put(headerKey, h.raw); err != nil {
		return fmt.Errorf("store: put material of block %q: %w", blockID, err)
	}
	var kb [4]byte
	for i, s := range segs {
		if err := mb.Put(segKey(kb[:0], i), s); err != nil {
			return fmt.Errorf("store: put material of block %q segment %d: %w", blockID, i, err)
		}
	}
	return nil
}

// material returns the block's material bucket and parsed header, or ErrNoMaterial.
func (t *tx) material(peer, blockID string) (*bolt.Bucket, sealedHeader, error) {
	t.scratch = blockKey(t.scratch[:0], peer, blockID)
	mb := t.bucket(bucketMaterial).Bucket(t.scratch)
	if mb == nil {
		return nil, sealedHeader{}, ErrNoMaterial
	}
	h, err := parseHeader(mb.Get(headerKey))
	if err != nil {
		return nil, h, err
	}
	return mb, h, nil
}

func checkRange(h sealedHeader, off, n int) error {
	if off < 0 || n < 0 || off > h.total || n > h.total-off {
		return fmt.Errorf("[%d, %d+%d) of %d bytes: %w", off, off, n, h.total, ErrOutOfRange)
	}
	return nil
}

// ReadMaterial decrypts only the segments covering [off, off+n). Reading erased bytes fails
// with ErrErased; a segment that fails authentication fails with ErrTampered.
func (t *tx) ReadMaterial(peer, blockID string, off, n int) ([]byte, error) {
	mb, h, err := t.material(peer, blockID)
	if err != nil {
		return nil, fmt.Errorf("store: read material of block %q (peer %q): %w", blockID, peer, err)
	}
	if err := checkRange(h, off, n); err != nil {
		return nil, fmt.Errorf("store: read material of block %q: %w", blockID, err)
	}
	aead, err := t.db.dataKey(h, peer, blockID)
	if err != nil {
		return nil, err
	}
	out := make([]byte, n)
	defer clear(t.plain)
	for p := off; p < off+n; {
		i := p / h.segSize
		lo := p - i*h.segSize
		hi := min(h.segLen(i), off+n-i*h.segSize)
		plain, ranges, err := t.openSegment(mb, aead, h, peer, blockID, i)
		if err != nil {
			clear(out)
			return nil, err
		}
		if plain == nil || overlapsRanges(ranges, lo, hi) {
			clear(out)
			return nil, fmt.Errorf("store: read material of block %q: bytes in [%d, %d): %w", blockID, i*h.segSize+lo, i*h.segSize+hi, ErrErased)
		}
		copy(out[p-off:], plain[lo:hi])
		p = i*h.segSize + hi
	}
	return out, nil
}

// openSegment decrypts segment i into t.plain. A missing segment (wholly erased) gives nil.
// The returned ranges alias bbolt memory and are valid until the next write.
func (t *tx) openSegment(mb *bolt.Bucket, aead aeadOpener, h sealedHeader, peer, blockID string, i int) ([]byte, []byte, error) {
	var kb [4]byte
	v := mb.Get(segKey(kb[:0], i))
	if v == nil {
		return nil, nil, nil
	}
	seg, err := parseSegment(v, h.segLen(i))
	if err != nil {
		return nil, nil, fmt.Errorf("store: block %q segment %d: %w", blockID, i, err)
	}
	t.scratch = appendSegAADPrefix(t.scratch[:0], peer, blockID)
	t.scratch = appendSegAADSuffix(t.scratch, uint32(i), seg.ranges)
	plain, err := aead.Open(t.plain[:0], seg.nonce, seg.ct, t.scratch)
	if err != nil {
		return nil, nil, fmt.Errorf("store: block %q segment %d: %w", blockID, i, ErrTampered)
	}
	t.plain = plain
	return plain, seg.ranges, nil
}

// aeadOpener is the part of cipher.AEAD openSegment needs.
type aeadOpener interface {
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
}

// overlapsRanges reports whether [lo, hi) meets any erased range.
func overlapsRanges(ranges []byte, lo, hi int) bool {
	for r := 0; r+4 <= len(ranges); r += 4 {
		s, e := int(binary.BigEndian.Uint16(ranges[r:])), int(binary.BigEndian.Uint16(ranges[r+2:]))
		if s < hi && lo < e {
			return true
		}
	}
	return false
}

// addRange merges [lo, hi) into the sorted disjoint ranges; it reports whether anything new
// was erased.
func addRange(ranges []byte, lo, hi int) ([]byte, bool) {
	type iv struct{ s, e int }
	var ivs []iv
	for r := 0; r+4 <= len(ranges); r += 4 {
		ivs = append(ivs, iv{int(binary.BigEndian.Uint16(ranges[r:])), int(binary.BigEndian.Uint16(ranges[r+2:]))})
	}
	covered := false
	for _, x := range ivs {
		if x.s <= lo && hi <= x.e {
			covered = true
		}
	}
	if covered {
		return ranges, false
	}
	merged := make([]iv, 0, len(ivs)+1)
	cur := iv{lo, hi}
	placed := false
	for _, x := range ivs {
		switch {
		case x.e < cur.s:
			merged = append(merged, x)
		case cur.e < x.s:
			if !placed {
				merged = append(merged, cur)
				placed = true
			}
			merged = append(merged, x)
		default: // touching or overlapping
			cur = iv{min(cur.s, x.s), max(cur.e, x.e)}
		}
	}
	if !placed {
		merged = append(merged, cur)
	}
	out := make([]byte, 0, 4*len(merged))
	for _, x := range merged {
		out = binary.BigEndian.AppendUint16(out, uint16(x.s))
		out = binary.BigEndian.AppendUint16(out, uint16(x.e))
	}
	return out, true
}

// EraseMaterial makes bytes [off, off+n) unrecoverable from the live database: segments wholly
// erased are deleted; a partly erased segment is rewritten with those bytes zeroed under a fresh
// random nonce, its erased ranges recorded in its additional data. Erasing erased bytes, or
// bytes of a block whose material was dropped, is a no-op. (See the package doc for what bbolt's
// free pages keep.)
func (t *tx) EraseMaterial(peer, blockID string, off, n int) error {
	if err := t.checkWritable("erase material"); err != nil {
		return err
	}
	mb, h, err := t.material(peer, blockID)
	if err == ErrNoMaterial {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: erase material of block %q (peer %q): %w", blockID, peer, err)
	}
	if err := checkRange(h, off, n); err != nil {
		return fmt.Errorf("store: erase material of block %q: %w", blockID, err)
	}
	aead, err := t.db.dataKey(h, peer, blockID)
	if err != nil {
		return err
	}
	defer clear(t.plain)
	var kb [4]byte
	for p := off; p < off+n; {
		i := p / h.segSize
		segLen := h.segLen(i)
		lo := p - i*h.segSize
		hi := min(segLen, off+n-i*h.segSize)
		p = i*h.segSize + hi

		if lo == 0 && hi == segLen {
			if err := mb.Delete(segKey(kb[:0], i)); err != nil {
				return fmt.Errorf("store: erase material of block %q segment %d: %w", blockID, i, err)
			}
			continue
		}
		plain, ranges, err := t.openSegment(mb, aead, h, peer, blockID, i)
		if err != nil {
			return err
		}
		if plain == nil {
			continue
		}
		ranges, changed := addRange(ranges, lo, hi)
		if !changed {
			continue
		}
		if len(ranges) == 4 && binary.BigEndian.Uint16(ranges) == 0 && int(binary.BigEndian.Uint16(ranges[2:])) == segLen {
			if err := mb.Delete(segKey(kb[:0], i)); err != nil {
				return fmt.Errorf("store: erase material of block %q segment %d: %w", blockID, i, err)
			}
			continue
		}
		clear(plain[lo:hi])
		v := make([]byte, 0, segFixed+len(ranges)+segLen)
		v = append(v, segmentVersion)
		v = binary.BigEndian.AppendUint16(v, uint16(len(ranges)/4))
		v = append(v, ranges...)
		nonce := v[len(v) : len(v)+nonceSize]
		if _, err := rand.Read(nonce); err != nil {
			return fmt.Errorf("store: erase material of block %q: %w", blockID, err)
		}
		v = v[:len(v)+nonceSize]
		t.scratch = appendSegAADPrefix(t.scratch[:0], peer, blockID)
		t.scratch = appendSegAADSuffix(t.scratch, uint32(i), ranges)
		v = aead.Seal(v, nonce, plain, t.scratch)
		if err := mb.Put(segKey(kb[:0], i), v); err != nil {
			return fmt.Errorf("store: erase material of block %q segment %d: %w", blockID, i, err)
		}
	}
	return nil
}

// DropMaterial deletes every segment of the block and its wrapped data key, and forgets the
// unwrapped data key (crypto-shredding). Dropping absent material is a no-op.
func (t *tx) DropMaterial(peer, blockID string) error {
	if err := t.checkWritable("drop material"); err != nil {
		return err
	}
	t.scratch = blockKey(t.scratch[:0], peer, blockID)
	parent := t.bucket(bucketMaterial)
	mb := parent.Bucket(t.scratch)
	if mb == nil {
		return nil
	}
	if hdr := mb.Get(headerKey); hdr != nil {
		t.db.keys.forget(hdr)
	}
	if err := parent.DeleteBucket(t.scratch); err != nil {
		return fmt.Errorf("store: drop material of block %q (peer %q): %w", blockID, peer, err)
	}
	return nil
}
