package qkdsim

// The passes of Cascade: how each pass groups the key's positions into blocks, and the parities
// of ranges of a pass's order that both parties compute during the binary searches.
//
// A pass is a partition of the positions into blocks together with an order inside each block
// (the order the binary search halves). Only the partition matters statistically (Brassard &
// Salvail 1993, sec. 4: the point of the random permutation is to spread errors that were paired
// in one block of an earlier pass over different blocks), so the three kinds below pick the
// cheapest representation that gives the same partitions:
//
//   - passBlocks: consecutive blocks of k bits in the key's order, the first pass of BS93;
//   - passShuffled: consecutive blocks of k bits of a seeded uniformly random permutation;
//   - passSplit: the two-block passes (k = n/2) of Yan et al. and Martinez-Mateo et al. 2015:
//     a seeded random bit mask sends each position to block 0 or 1, each block in key order.
//     Block sizes are n/2 +- O(sqrt n) instead of exactly n/2, which changes nothing for the
//     error statistics but costs n/64 random words instead of a permutation of n.

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"sort"
	"sync"
)

type passKind uint8

const (
	passBlocks passKind = iota
	passShuffled
	passSplit
	passKinds // number of kinds, for validation
)

// passSpec is one pass of a Cascade schedule; k is the block size (unused by passSplit).
type passSpec struct {
	kind passKind
	k    int
}

// cascadePass is one pass as one party sees it.
//
// The key is cut into frames of fl bits (a multiple of 64, the last frame shorter; one frame
// when fl = n) that are reconciled independently but in lock step: every block lies inside one
// frame, a frame's positions keep their key range in pass order, and frame f holds the global
// blocks [f*nbf, f*nbf+nbf). Frames of about 10^6 bits are what Cascade's parameters are tuned
// for and keep every per-frame structure in cache.
type cascadePass struct {
	spec passSpec
	n    int
	fl   int // frame length
	nbf  int // blocks per full frame
	nb   int // number of blocks

	// passShuffled
	perm []uint32 // Bob only: pass-order position -> key position
	inv  []uint32 // Bob only: key position -> pass-order position
	sb   []uint64 // Bob: his key in pass order, kept in step with his corrections
	// passBlocks and passShuffled, Alice only: prefix parities of her key in pass order,
	// bit i = parity of positions [0, i], so every range parity is O(1).
	pre []uint64

	// passSplit
	mask []uint64 // bit set: the position is in block 1
	ones []uint32 // ones[w]: set bits of mask in words before w
	n0   []int    // per frame: size of block 0; block 0 is the frame's first n0 pass-order positions

	alice []uint8 // Alice's parity of each block (Bob learns them)
	bob   []uint8 // Bob only: his current parity of each block, updated on every correction
	busy  []bool  // Bob only: a binary search is running in the block

	// Bob only, with sub-block reuse (Martinez-Mateo et al. 2015, sec. 4.2): what every
	// bisection of a block revealed, as an implicit binary tree per block (root 1, children
	// 2i and 2i+1, the left child being [s, s+(e-s)/2)). Only inner nodes (ranges of two or
	// more bits, indices below 2^depth) are ever bisected. Node i of block blk has two bits at
	// 2*(blk*stride+i): "bisected" and Alice's parity of its left child; the right child's
	// follows from the node's. Two bits per node keep the trees at n/4 bytes per pass.
	tree   []uint64
	stride int
}

// enableReuse allocates the bisection trees of a pass of small blocks.
func (c *cascadePass) enableReuse() {
	if c.spec.kind == passSplit {
		return // two huge blocks that rarely hold an error: not worth the memory
	}
	c.stride = 1 << bits.Len(uint(c.spec.k-1))
	c.tree = make([]uint64, (2*c.nb*c.stride+63)/64)
}

// treeGet returns whether node i of block blk was bisected and, if so, Alice's parity of its
// left child.
func (c *cascadePass) treeGet(blk, i int) (bool, uint8) {
	j := 2 * (blk*c.stride + i)
	x := c.tree[j>>6] >> uint(j&63)
	return x&1 != 0, uint8(x >> 1 & 1)
}

// treeSet records Alice's parity al of the left child of node i of block blk.
func (c *cascadePass) treeSet(blk, i int, al uint8) {
	j := 2 * (blk*c.stride + i)
	c.tree[j>>6] |= (1 | uint64(al)<<1) << uint(j&63)
}

// passRand returns the generator of pass p's shuffle: both parties derive it from Bob's seed.
func passRand(seed [32]byte, p int) *rand.ChaCha8 {
	binary.LittleEndian.PutUint64(seed[24:], binary.LittleEndian.Uint64(seed[24:])^uint64(p+1))
	return rand.NewChaCha8(seed)
}

// bounded returns a uniform integer in [0, n) (Lemire 2019, "Fast random integer generation
// in an interval").
func bounded(r *rand.ChaCha8, n uint64) uint64 {
	hi, lo := bits.Mul64(r.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(r.Uint64(), n)
		}
	}
	return hi
}

// newCascadePass builds pass p of spec over key, in frames of fl bits. Alice keeps prefix
// parities of her (fixed) key; Bob keeps what he needs to follow his corrections.
func newCascadePass(spec passSpec, key Bits, seed [32]byte, p int, bob bool, fl int) *cascadePass {
	n := key.N
	if fl <= 0 || fl > n {
		fl = n
	}
	nf := (n + fl - 1) / fl
	c := &cascadePass{spec: spec, n: n, fl: fl}
	switch spec.kind {
	case passBlocks, passShuffled:
		c.nbf = (fl + spec.k - 1) / spec.k
		last := n - (nf-1)*fl
		c.nb = (nf-1)*c.nbf + (last+spec.k-1)/spec.k
		if spec.kind == passShuffled {
			c.buildShuffled(key, seed, p, bob)
		} else if !bob {
			c.pre = append([]uint64(nil), key.W...)
		}
		if !bob {
			prefixParity(c.pre)
		}
	case passSplit:
		c.nbf, c.nb = 2, 2*nf
		r := passRand(seed, p)
		c.mask = make([]uint64, len(key.W))
		c.ones = make([]uint32, len(key.W)+1)
		for i := range c.mask {
			c.mask[i] = r.Uint64()
		}
		if rem := uint(n & 63); rem != 0 {
			c.mask[len(c.mask)-1] &= uint64(1)<<rem - 1
		}
		for i, m := range c.mask {
			c.ones[i+1] = c.ones[i] + uint32(bits.OnesCount64(m))
		}
		c.n0 = make([]int, nf)
		for f := range c.n0 {
			fs, fe := c.frameRange(f)
			// fs is a multiple of 64; fe too except at the key's end, whose padding is masked.
			c.n0[f] = fe - fs - int(c.ones[(fe+63)>>6]-c.ones[fs>>6])
		}
	}
	c.alice = make([]uint8, c.nb)
	if bob {
		c.bob = make([]uint8, c.nb)
		c.busy = make([]bool, c.nb)
		for b := range c.bob {
			s, e := c.blockRange(b)
			c.bob[b] = c.bobParity(key, b, s, e)
		}
	}
	return c
}

// lastInFrame reports whether block b is the last of its frame.
func (c *cascadePass) lastInFrame(b int) bool { return b == c.nb-1 || b%c.nbf == c.nbf-1 }

// frameRange is frame f's range, in key order and in pass order alike.
func (c *cascadePass) frameRange(f int) (s, e int) { return f * c.fl, min((f+1)*c.fl, c.n) }

// buildShuffled draws a uniformly random permutation of the key's positions (shuffledPerm);
// blocks are consecutive runs of k in its order. Alice keeps only her key in that order (turned
// into prefix parities by the caller); Bob keeps the order, its inverse and his key in that
// order.
func (c *cascadePass) buildShuffled(key Bits, seed [32]byte, p int, bob bool) {
	n := c.n
	perm := getScratch(n) // fully overwritten by shuffledPerm
	if !bob {
		defer putScratch(perm)
	}
	r := passRand(seed, p)
	for fs := 0; fs < n; fs += c.fl {
		seg := perm[fs:min(fs+c.fl, n)]
		shuffledPerm(seg, shuffleBucket, wyRand(r.Uint64()))
		if fs > 0 {
			for i := range seg {
				seg[i] += uint32(fs)
			}
		}
	}
	out := make([]uint64, len(key.W))
	kw := key.W
	// A frame's key bits stay in cache while its part of perm streams past.
	for w := range out {
		base := w << 6
		seg := perm[base:min(base+64, n)]
		var x uint64
		for j, pos := range seg {
			x |= (kw[pos>>6] >> (pos & 63) & 1) << uint(j)
		}
		out[w] = x
	}
	if !bob {
		c.pre = out
		return
	}
	c.perm, c.sb = perm, out
	c.inv = getScratch(n) // fully overwritten: perm is a permutation
	for i, pos := range perm {
		c.inv[pos] = uint32(i)
	}
}

// scratch recycles the permutation buffers: Alice's live while a pass is built, Bob's until
// his Cascade ends (release).
var scratch sync.Pool

func getScratch(n int) []uint32 {
	if p, ok := scratch.Get().(*[]uint32); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]uint32, n)
}

func putScratch(s []uint32) { scratch.Put(&s) }

// release hands Bob's permutation buffers back for reuse; the pass is unusable afterwards.
func (c *cascadePass) release() {
	if c.perm != nil {
		putScratch(c.perm)
		putScratch(c.inv)
		c.perm, c.inv = nil, nil
	}
}

// shuffleBucket is the number of elements per bucket of shuffledPerm: small enough that a
// bucket's Fisher-Yates runs in the first-level cache.
const shuffleBucket = 4096

// shuffledPerm fills perm with a uniformly random permutation of [0, len(perm)). It shuffles in
// two cache-friendly steps instead of one Fisher-Yates with a cache miss per swap: every
// element goes to one of 2^b buckets of about `bucket` elements, chosen independently and
// uniformly (a counting-sort scatter), then each bucket is shuffled by Fisher-Yates in cache.
// The result is exactly uniform: a given order arises with probability the sum over bucket
// sizes c of 2^(-b n) prod 1/c_i!, the same for every order (the bucket split of C. R. Rao,
// "Generation of random permutations of given number of elements using random sampling
// numbers", Sankhya A 23 (1961) 305-307).
//
// The permutation is public (Bob sends the seed), so its generator needs statistical, not
// cryptographic, quality: wyrand. The bucket choices are drawn twice from the same generator
// state (to count, then to scatter) instead of being stored.
func shuffledPerm(perm []uint32, bucket int, w0 wyRand) {
	n := len(perm)
	bb := 0
	for n>>bb > bucket && bb < 16 {
		bb++
	}
	nbk := 1 << bb
	mask := uint64(nbk - 1)
	start := make([]uint32, nbk+1)
	w := w0
	j := 0
	for ; j+4 <= n; j += 4 {
		x := w.next()
		start[x&mask+1]++
		start[x>>16&mask+1]++
		start[x>>32&mask+1]++
		start[x>>48&mask+1]++
	}
	for x := w.next(); j < n; j++ {
		start[x&mask+1]++
		x >>= 16
	}
	for b := 1; b <= nbk; b++ {
		start[b] += start[b-1]
	}
	pos := append([]uint32(nil), start[:nbk]...)
	w = w0
	j = 0
	for ; j+4 <= n; j += 4 {
		x := w.next()
		b0, b1, b2, b3 := x&mask, x>>16&mask, x>>32&mask, x>>48&mask
		perm[pos[b0]] = uint32(j)
		pos[b0]++
		perm[pos[b1]] = uint32(j + 1)
		pos[b1]++
		perm[pos[b2]] = uint32(j + 2)
		pos[b2]++
		perm[pos[b3]] = uint32(j + 3)
		pos[b3]++
	}
	for x := w.next(); j < n; j++ {
		b := x & mask
		perm[pos[b]] = uint32(j)
		pos[b]++
		x >>= 16
	}
	for b := 0; b < nbk; b++ {
		fisherYates(perm[start[b]:start[b+1]], &w)
	}
}

// fisherYates shuffles seg uniformly (Durstenfeld's Fisher-Yates), with bounded integers by
// Lemire's multiply-and-reject (D. Lemire, "Fast random integer generation in an interval",
// ACM TOMACS 29 (2019)), two 32-bit draws per generator output. The swap targets are drawn
// 64 at a time before the swaps: they do not depend on the array, and the two loops then
// overlap instead of waiting on each other.
func fisherYates(seg []uint32, w *wyRand) {
	var ts [64]uint32
	draw := func(x, bound uint64) uint32 {
		m := x * bound
		if uint32(m) < uint32(bound) {
			for t := -uint32(bound) % uint32(bound); uint32(m) < t; {
				m = (w.next() & 0xffffffff) * bound
			}
		}
		return uint32(m >> 32)
	}
	for i := len(seg) - 1; i > 0; {
		nb := min(i, len(ts))
		for j := 0; j < nb; j += 2 { // target of position i-j in [0, i-j]
			x := w.next()
			ts[j] = draw(x&0xffffffff, uint64(i-j+1))
			if j+1 < nb {
				ts[j+1] = draw(x>>32, uint64(i-j))
			}
		}
		for j, t := range ts[:nb] {
			k := i - j
			seg[k], seg[t] = seg[t], seg[k]
		}
		i -= nb
	}
}

// wyRand is Wang Yi's wyrand generator (public domain, github.com/wangyi-fudan/wyhash): a
// 64-bit counter mixed by one 128-bit multiplication; it passes BigCrush and PractRand.
type wyRand uint64

func (w *wyRand) next() uint64 {
	*w += 0xa0761d6478bd642f
	hi, lo := bits.Mul64(uint64(*w), uint64(*w)^0xe7037ed1a0b428db)
	return hi ^ lo
}

// prefixParity turns w into its prefix parities in place: bit i becomes the XOR of bits [0, i].
func prefixParity(w []uint64) {
	var carry uint64
	for i, x := range w {
		x ^= x << 1
		x ^= x << 2
		x ^= x << 4
		x ^= x << 8
		x ^= x << 16
		x ^= x << 32
		x ^= -carry
		w[i] = x
		carry = x >> 63
	}
}

// parityRange is the parity of bits [s, e) of the packed words w.
func parityRange(w []uint64, s, e int) uint8 {
	if s >= e {
		return 0
	}
	ws, we := s>>6, (e-1)>>6
	lo := ^uint64(0) << uint(s&63)
	hi := ^uint64(0) >> uint(63-(e-1)&63)
	if ws == we {
		return uint8(bits.OnesCount64(w[ws]&lo&hi) & 1)
	}
	acc := w[ws]&lo ^ w[we]&hi
	for _, x := range w[ws+1 : we] {
		acc ^= x
	}
	return uint8(bits.OnesCount64(acc) & 1)
}

// blockRange is block b's range in pass order.
func (c *cascadePass) blockRange(b int) (s, e int) {
	f, lb := b/c.nbf, b%c.nbf
	fs, fe := c.frameRange(f)
	if c.spec.kind == passSplit {
		if lb == 0 {
			return fs, fs + c.n0[f]
		}
		return fs + c.n0[f], fe
	}
	s = fs + lb*c.spec.k
	return s, min(s+c.spec.k, fe)
}

// blockOf is the block holding pass-order range [s, e), or -1 if the range is empty, out of
// bounds or straddles two blocks.
func (c *cascadePass) blockOf(s, e int) int {
	if s < 0 || s >= e || e > c.n {
		return -1
	}
	f := s / c.fl
	if (e-1)/c.fl != f {
		return -1
	}
	fs := f * c.fl
	var bs, be int
	if c.spec.kind == passSplit {
		bs, be = boolInt(s >= fs+c.n0[f]), boolInt(e-1 >= fs+c.n0[f])
	} else {
		bs, be = (s-fs)/c.spec.k, (e-1-fs)/c.spec.k
	}
	if bs != be {
		return -1
	}
	return f*c.nbf + bs
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// aliceParity is the parity of Alice's key over pass-order range [s, e) inside block b.
func (c *cascadePass) aliceParity(key Bits, b, s, e int) uint8 {
	if c.spec.kind == passSplit {
		return c.splitParity(key.W, b, s, e)
	}
	return prefixBit(c.pre, e) ^ prefixBit(c.pre, s)
}

// prefixBit is the parity of [0, i) from prefix parities.
func prefixBit(pre []uint64, i int) uint8 {
	if i == 0 {
		return 0
	}
	i--
	return uint8(pre[i>>6] >> uint(i&63) & 1)
}

// bobParity is the parity of Bob's current key over pass-order range [s, e) inside block b.
func (c *cascadePass) bobParity(key Bits, b, s, e int) uint8 {
	switch c.spec.kind {
	case passBlocks:
		return parityRange(key.W, s, e)
	case passShuffled:
		return parityRange(c.sb, s, e)
	default:
		return c.splitParity(key.W, b, s, e)
	}
}

// splitWord is side h's selection mask for word w (h = 1: mask bits set).
func (c *cascadePass) splitWord(h, w int) uint64 {
	if h == 1 {
		return c.mask[w]
	}
	return ^c.mask[w]
}

// splitRank is the number of side-h positions in words before w.
func (c *cascadePass) splitRank(h, w int) int {
	if h == 1 {
		return int(c.ones[w])
	}
	return 64*w - int(c.ones[w])
}

// splitSelect locates the side-h position of global rank r (0-based): word and bit.
func (c *cascadePass) splitSelect(h, r int) (int, uint) {
	w := sort.Search(len(c.mask), func(i int) bool { return c.splitRank(h, i+1) > r })
	x := c.splitWord(h, w)
	for k := r - c.splitRank(h, w); k > 0; k-- {
		x &= x - 1
	}
	return w, uint(bits.TrailingZeros64(x))
}

// splitRankOf maps pass-order position i of a split pass to its side and global rank.
func (c *cascadePass) splitRankOf(i int) (h, r int) {
	f := i / c.fl
	fs := f * c.fl
	if i < fs+c.n0[f] {
		return 0, c.splitRank(0, fs>>6) + i - fs
	}
	return 1, c.splitRank(1, fs>>6) + i - fs - c.n0[f]
}

// splitParity is the parity of kw over pass-order range [s, e) of block b of a split pass.
func (c *cascadePass) splitParity(kw []uint64, b, s, e int) uint8 {
	if s >= e {
		return 0
	}
	h, rs := c.splitRankOf(s)
	_, re := c.splitRankOf(e - 1)
	wl, bl := c.splitSelect(h, rs)
	wh, bh := c.splitSelect(h, re)
	lo := ^uint64(0) << bl
	hi := ^uint64(0) >> (63 - bh)
	if wl == wh {
		return uint8(bits.OnesCount64(kw[wl]&c.splitWord(h, wl)&lo&hi) & 1)
	}
	acc := kw[wl]&c.splitWord(h, wl)&lo ^ kw[wh]&c.splitWord(h, wh)&hi
	for w := wl + 1; w < wh; w++ {
		acc ^= kw[w] & c.splitWord(h, w)
	}
	return uint8(bits.OnesCount64(acc) & 1)
}

// keyPos is the key position at pass-order position i.
func (c *cascadePass) keyPos(i int) int {
	switch c.spec.kind {
	case passBlocks:
		return i
	case passShuffled:
		return int(c.perm[i])
	default:
		w, bit := c.splitSelect(c.splitRankOf(i))
		return w<<6 | int(bit)
	}
}

// flip records Bob's correction of key position x and returns the block of this pass that
// holds it.
func (c *cascadePass) flip(x int) int {
	f := x / c.fl
	var lb int
	switch c.spec.kind {
	case passBlocks:
		lb = (x - f*c.fl) / c.spec.k
	case passShuffled:
		i := c.inv[x]
		c.sb[i>>6] ^= uint64(1) << (i & 63)
		lb = (int(i) - f*c.fl) / c.spec.k
	default:
		lb = int(c.mask[x>>6] >> uint(x&63) & 1)
	}
	b := f*c.nbf + lb
	c.bob[b] ^= 1
	return b
}
