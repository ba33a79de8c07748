package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"
)

// Sealed blob layout (version 1), all integers big-endian:
//
//	header:   version(1)=1 | segSize(4) | total(8) | wrapNonce(12) | wrappedDataKey(32+16)
//	segments: one segment value per ceil(total/segSize) segments, in index order
//
// A segment value (the same bytes in the blob and in bbolt) is
//
//	version(1)=1 | n(2) | n erased ranges as start(2) end(2), sorted, disjoint | nonce(12) | GCM ciphertext
//
// The header is what bbolt stores under headerKey; the wrapped data key's additional data
// binds peer, block ID, segSize and total, so the header cannot be edited undetected.
const (
	sealVersion    = 1
	segmentVersion = 1

	// DefaultSegmentSize is the plaintext size of a segment: small enough that a 32-byte key
	// read decrypts little, large enough that per-segment overhead (31 bytes + a bbolt key)
	// stays near 6%.
	DefaultSegmentSize = 512

	dataKeySize   = 32
	nonceSize     = 12
	tagSize       = 16
	wrappedKeyLen = dataKeySize + tagSize
	headerLen     = 1 + 4 + 8 + nonceSize + wrappedKeyLen
	segFixed      = 1 + 2 + nonceSize + tagSize // segment overhead without erased ranges

	maxSegmentSize = 1<<16 - 1 // erased-range offsets are 16-bit
	minSegmentSize = 16
	// MaxMaterialSize bounds one block's material (bbolt's value and transaction sizes and
	// the raft log entry carrying the blob are the practical limits).
	MaxMaterialSize = 256 << 20
	maxNameLen      = 1<<16 - 1
)

var (
	dkLabel  = []byte("qkms/store/dk/v1")
	segLabel = []byte("qkms/store/seg/v1")
)

// Seal seals one block's key material for kms.IngestCmd.Sealed (see the package doc): a fresh
// data key wrapped by the master key, and the material in DefaultSegmentSize segments, each
// AES-256-GCM-sealed under the data key. The blob holds no plaintext.
func (db *DB) Seal(peer, blockID string, material []byte) ([]byte, error) {
	return db.sealSegments(peer, blockID, material, DefaultSegmentSize)
}

func (db *DB) sealSegments(peer, blockID string, material []byte, segSize int) ([]byte, error) {
	if err := checkNames(peer, blockID); err != nil {
		return nil, fmt.Errorf("store: seal block %q: %w", blockID, err)
	}
	total := len(material)
	if total == 0 || total > MaxMaterialSize {
		return nil, fmt.Errorf("store: seal block %q: material of %d bytes; want 1 to %d", blockID, total, MaxMaterialSize)
	}
	if segSize < minSegmentSize || segSize > maxSegmentSize {
		return nil, fmt.Errorf("store: seal block %q: segment size %d outside [%d, %d]", blockID, segSize, minSegmentSize, maxSegmentSize)
	}
	nseg := (total + segSize - 1) / segSize

	// One read of the system CSPRNG for the data key, the wrap nonce and every segment nonce.
	rnd := make([]byte, dataKeySize+nonceSize+nseg*nonceSize)
	defer clear(rnd)
	if _, err := rand.Read(rnd); err != nil {
		return nil, fmt.Errorf("store: seal block %q: %w", blockID, err)
	}
	dk, rnd := rnd[:dataKeySize], rnd[dataKeySize:]
	wrapNonce, nonces := rnd[:nonceSize], rnd[nonceSize:]

	out := make([]byte, 0, headerLen+nseg*segFixed+total)
	out = append(out, sealVersion)
	out = binary.BigEndian.AppendUint32(out, uint32(segSize))
	out = binary.BigEndian.AppendUint64(out, uint64(total))
	out = append(out, wrapNonce...)
	wrapAAD := appendWrapAAD(nil, peer, blockID, out[1:13])
	out = db.master.Seal(out, wrapNonce, dk, wrapAAD)

	aead, err := newGCM(dk)
	if err != nil {
		return nil, fmt.Errorf("store: seal block %q: %w", blockID, err)
	}
	aadPrefix := appendSegAADPrefix(nil, peer, blockID)
	aad := aadPrefix
	for i := 0; i < nseg; i++ {
		seg := material[i*segSize : min((i+1)*segSize, total)]
		out = append(out, segmentVersion, 0, 0)
		nonce := nonces[i*nonceSize : (i+1)*nonceSize]
		out = append(out, nonce...)
		aad = appendSegAADSuffix(aad[:len(aadPrefix)], uint32(i), nil)
		out = aead.Seal(out, nonce, seg, aad)
	}
	return out, nil
}

// checkNames bounds peer and block IDs so they fit their 16-bit length prefixes.
func checkNames(peer, blockID string) error {
	if peer == "" || blockID == "" {
		return fmt.Errorf("empty peer or block ID")
	}
	if len(peer) > maxNameLen || len(blockID) > maxNameLen {
		return fmt.Errorf("peer or block ID longer than %d bytes", maxNameLen)
	}
	return nil
}

func appendLP(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// appendWrapAAD: label | lp(peer) | lp(blockID) | segSize(4) | total(8).
func appendWrapAAD(b []byte, peer, blockID string, sizes []byte) []byte {
	b = append(b, dkLabel...)
	b = appendLP(b, peer)
	b = appendLP(b, blockID)
	return append(b, sizes...)
}

// appendSegAADPrefix: label | lp(peer) | lp(blockID); the per-segment suffix follows.
func appendSegAADPrefix(b []byte, peer, blockID string) []byte {
	b = append(b, segLabel...)
	b = appendLP(b, peer)
	return appendLP(b, blockID)
}

// appendSegAADSuffix: index(4) | n(2) | erased ranges, exactly as stored in the segment.
func appendSegAADSuffix(b []byte, index uint32, ranges []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, index)
	b = binary.BigEndian.AppendUint16(b, uint16(len(ranges)/4))
	return append(b, ranges...)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealedHeader is the parsed fixed part of a blob or of a stored material header.
type sealedHeader struct {
	segSize int
	total   int
	raw     []byte // the headerLen bytes: the data-key cache key
}

func (h sealedHeader) segments() int { return (h.total + h.segSize - 1) / h.segSize }

// segLen is the plaintext length of segment i.
func (h sealedHeader) segLen(i int) int { return min(h.segSize, h.total-i*h.segSize) }

// parseHeader validates the fixed header at the start of b.
func parseHeader(b []byte) (sealedHeader, error) {
	if len(b) < headerLen {
		return sealedHeader{}, fmt.Errorf("header of %d bytes, want %d: %w", len(b), headerLen, ErrTampered)
	}
	if b[0] != sealVersion {
		return sealedHeader{}, fmt.Errorf("sealed format version %d, want %d: %w", b[0], sealVersion, ErrTampered)
	}
	segSize := binary.BigEndian.Uint32(b[1:5])
	total := binary.BigEndian.Uint64(b[5:13])
	if segSize < minSegmentSize || segSize > maxSegmentSize || total == 0 || total > MaxMaterialSize {
		return sealedHeader{}, fmt.Errorf("segment size %d, total %d out of bounds: %w", segSize, total, ErrTampered)
	}
	return sealedHeader{segSize: int(segSize), total: int(total), raw: b[:headerLen]}, nil
}

// parseSealed splits a blob into its header and segment values (sub-slices of blob). It checks
// the structure only; authenticity is checked when the data key is unwrapped and when a
// segment is opened.
func parseSealed(blob []byte) (sealedHeader, [][]byte, error) {
	h, err := parseHeader(blob)
	if err != nil {
		return h, nil, err
	}
	nseg := h.segments()
	if want := headerLen + nseg*segFixed + h.total; len(blob) != want {
		return h, nil, fmt.Errorf("sealed blob of %d bytes, want %d: %w", len(blob), want, ErrTampered)
	}
	segs := make([][]byte, nseg)
	p := headerLen
	for i := range segs {
		if blob[p] != segmentVersion || blob[p+1] != 0 || blob[p+2] != 0 {
			return h, nil, fmt.Errorf("segment %d: bad prefix: %w", i, ErrTampered)
		}
		n := segFixed + h.segLen(i)
		segs[i] = blob[p : p+n : p+n]
		p += n
	}
	return h, segs, nil
}

// segment is a parsed segment value.
type segment struct {
	ranges []byte // n*4 bytes of erased ranges
	nonce  []byte
	ct     []byte
}

func parseSegment(v []byte, plainLen int) (segment, error) {
	if len(v) < 3 || v[0] != segmentVersion {
		return segment{}, ErrTampered
	}
	n := int(binary.BigEndian.Uint16(v[1:3]))
	if len(v) != segFixed+4*n+plainLen {
		return segment{}, ErrTampered
	}
	r := v[3 : 3+4*n]
	return segment{ranges: r, nonce: v[3+4*n : 3+4*n+nonceSize], ct: v[3+4*n+nonceSize:]}, nil
}

// keyCacheSize bounds the unwrapped data keys held in memory: enough for every block a busy
// pool is issuing from, far below the number of blocks a site stores.
const keyCacheSize = 4096

// keyCache maps a stored material header (which holds the wrapped data key and its random
// wrap nonce, so it is unique per data key) to the AEAD of the unwrapped data key. Keying by
// the header rather than the block name means a stale entry can never be used for a block
// whose material was replaced, even by a transaction that later rolls back.
type keyCache struct {
	mu  sync.Mutex
	max int
	m   map[string]cipher.AEAD
}

func newKeyCache(max int) *keyCache {
	return &keyCache{max: max, m: make(map[string]cipher.AEAD)}
}

func (c *keyCache) get(hdr []byte) cipher.AEAD {
	c.mu.Lock()
	a := c.m[string(hdr)]
	c.mu.Unlock()
	return a
}

func (c *keyCache) put(hdr []byte, a cipher.AEAD) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		// Evict an arbitrary entry; an evicted key is just unwrapped again when needed.
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[string(hdr)] = a
}

func (c *keyCache) forget(hdr []byte) {
	c.mu.Lock()
	delete(c.m, string(hdr))
	c.mu.Unlock()
}

func (c *keyCache) clear() {
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}

func (c *keyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// dataKey returns the AEAD of the data key wrapped in hdr, from the cache or by unwrapping it
// under the master key.
func (db *DB) dataKey(h sealedHeader, peer, blockID string) (cipher.AEAD, error) {
	if a := db.keys.get(h.raw); a != nil {
		return a, nil
	}
	var aadBuf [128]byte
	aad := appendWrapAAD(aadBuf[:0], peer, blockID, h.raw[1:13])
	dk, err := db.master.Open(nil, h.raw[13:13+nonceSize], h.raw[13+nonceSize:headerLen], aad)
	if err != nil {
		return nil, fmt.Errorf("store: data key of block %q (peer %q) does not authenticate under this node's master key (different master key on the sealing node, or tampered): %w", blockID, peer, ErrWrongMasterKey)
	}
	defer clear(dk)
	a, err := newGCM(dk)
	if err != nil {
		return nil, fmt.Errorf("store: data key of block %q: %w", blockID, err)
	}
	db.keys.put(h.raw, a)
	return a, nil
}
