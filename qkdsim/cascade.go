package qkdsim

// Information reconciliation with Cascade (G. Brassard and L. Salvail, "Secret-key
// reconciliation by public discussion", EUROCRYPT 1993, LNCS 765, pp. 410-423).
//
// Bob drives, Alice answers. In each pass the positions are grouped into blocks (cascade_pass.go);
// Alice reveals the parity of every block, and in every block whose parity differs from Bob's
// (an odd number of errors) Bob runs BINARY: he asks the parity of the first half, compares it
// with his own, and recurses into the half that differs until one bit is left, which he flips.
// A flip changes the parity of the block holding that bit in every earlier pass, where it
// exposes an error that was masked by another one; those blocks are searched again (the
// cascade effect). Bob tracks his parity of every block of every open pass incrementally, so
// finding the blocks a flip exposed costs one step per pass.
//
// All binary searches running at one time advance in lock step: one message carries the
// queries of one bisection level of every running search, across all blocks and passes, and
// one reply carries Alice's answers. The number of round trips is thus about the sum over
// passes of log2(block size) plus the depth of the cascade, not the number of errors.
//
// Every parity Alice sends is counted as leaked (the block parities and each bisection
// answer); the parity of a second half is inferred from the block's and costs nothing, and so
// does the last block of every frame in every pass after the first, inferred from the frame's
// total parity (known from pass 1).
//
// Frames: a long key is cut into frames of about 2^20 bits (cascadeFrameLen), each reconciled
// with its own blocks and shuffles but all in the same messages, so the round trips are those
// of one frame while every structure of a frame stays in cache; the schedule's block sizes are
// those for a frame. Everything Bob asks is answered honestly by Alice; her leakage counter
// counts what she actually sent, whatever Bob asks.
//
// Variants (block sizes from the estimated QBER Q, n the key length):
//
//   - original: Brassard & Salvail's k1 = ceil(0.73/Q), k_i = 2 k_{i-1}, 4 passes.
//   - yan: the optimised parameters of J. Martinez-Mateo, C. Pacher, M. Peev, A. Ciurana and
//     V. Martin, "Demystifying the information reconciliation protocol Cascade", Quantum Inf.
//     Comput. 15 (2015) 453-477, option (8), which refines the two-stage schedule of Yan et
//     al. 2008 (small blocks first, then many passes of two blocks of n/2): with
//     alpha = log2(1/Q) - 1/2, k1 = 2^ceil(alpha), k2 = 2^ceil((alpha+12)/2), k3 = 4096 and
//     k_i = n/2 for i >= 4, 14 passes (pass kinds in cascade_pass.go: blocks, columns,
//     columns, then split). The last 11 passes cost two parities (one after
//     inference) plus the searches for the rare surviving error pairs and push the residual
//     frame error rate far below the verification's eps_cor.

import (
	"errors"
	"fmt"
	"io"
	"math"
)

// CascadeVariant selects the Cascade parameters.
type CascadeVariant string

const (
	CascadeOriginal CascadeVariant = "original"
	CascadeYan      CascadeVariant = "yan"
)

// ErrCascadeVariant is returned for a variant name that is neither original nor yan.
var ErrCascadeVariant = errors.New("qkdsim: unknown cascade variant (want original or yan)")

// ParseCascadeVariant maps a user-supplied name to a variant.
func ParseCascadeVariant(s string) (CascadeVariant, error) {
	switch v := CascadeVariant(s); v {
	case CascadeOriginal, CascadeYan:
		return v, nil
	}
	return "", fmt.Errorf("%w: %q", ErrCascadeVariant, s)
}

// ReconcileStats counts what reconciliation revealed and how long it talked.
type ReconcileStats struct {
	LeakedBits int64 // every parity bit revealed on the channel
	RoundTrips int
	Messages   int
}

// minScheduleQBER keeps block sizes finite when the estimate is zero.
const minScheduleQBER = 1e-5

// cascadeSchedule returns the passes of variant v for an n-bit key at estimated QBER q.
func cascadeSchedule(v CascadeVariant, q float64, n int) ([]passSpec, error) {
	if !(q >= 0 && q < 0.5) {
		return nil, fmt.Errorf("qkdsim: cascade: QBER %v outside [0, 0.5)", q)
	}
	if n < 1 || n > cascadeMaxBits {
		return nil, fmt.Errorf("qkdsim: cascade: key length %d outside [1, %d]", n, cascadeMaxBits)
	}
	q = math.Max(q, minScheduleQBER)
	clamp := func(k float64) int { return int(math.Min(math.Max(k, 1), float64(n))) }
	var specs []passSpec
	switch v {
	case CascadeOriginal:
		k := math.Ceil(0.73 / q)
		for i := 0; i < 4; i++ {
			kind := passShuffled
			if i == 0 {
				kind = passBlocks
			}
			specs = append(specs, passSpec{kind: kind, k: clamp(k)})
			k *= 2
		}
	case CascadeYan:
		alpha := math.Log2(1/q) - 0.5
		specs = append(specs,
			passSpec{kind: passBlocks, k: clamp(math.Exp2(math.Ceil(alpha)))},
			passSpec{kind: passColumns, k: clamp(math.Exp2(math.Ceil((alpha + 12) / 2)))},
			passSpec{kind: passColumns, k: clamp(4096)})
		for len(specs) < 14 {
			specs = append(specs, passSpec{kind: passSplit})
		}
	default:
		return nil, fmt.Errorf("%w: %q", ErrCascadeVariant, string(v))
	}
	return specs, nil
}

// CascadeAlice answers Bob's parity queries on her key until he is done. Her key is unchanged.
// On an error the caller closes the channel so that Bob stops too.
func CascadeAlice(ch Channel, key Bits, v CascadeVariant) (ReconcileStats, error) {
	var st ReconcileStats
	recv := func() (Message, error) {
		m, err := ch.Recv()
		if err != nil {
			return m, fmt.Errorf("qkdsim: cascade: alice: receive: %w", err)
		}
		st.Messages++
		return m, nil
	}
	m, err := recv()
	if err != nil {
		return st, err
	}
	if m.Type != MsgCascade {
		return st, fmt.Errorf("qkdsim: cascade: alice: unexpected message type %#x, want hello", m.Type)
	}
	h, err := decodeCascadeHello(m.Body)
	if err != nil {
		return st, err
	}
	if h.n != key.N {
		return st, fmt.Errorf("qkdsim: cascade: alice: Bob reconciles %d bits, Alice holds %d", h.n, key.N)
	}
	// Bob chooses the parameters; Alice's variant only documents the caller's intent, since
	// Alice's answers do not depend on it.
	_ = v
	var (
		passes []*cascadePass
		qs     []cascadeQuery
	)
	send := func(w *parityWriter) error {
		if err := ch.Send(Message{Type: MsgCascadeReply, Body: w.bytes()}); err != nil {
			return fmt.Errorf("qkdsim: cascade: alice: send: %w", err)
		}
		st.LeakedBits += int64(w.count)
		st.RoundTrips++
		st.Messages++
		return nil
	}
	open := func() error {
		p := len(passes)
		c := newCascadePass(h.specs[p], key, h.seed, p, false, h.frame)
		passes = append(passes, c)
		w := newParityWriter(c.nb)
		for b := 0; b < c.nb; b++ {
			if p > 0 && c.lastInFrame(b) {
				continue // Bob infers it from the frame's total parity, known since pass 1
			}
			s, e := c.blockRange(b)
			w.add(c.aliceParity(key, b, s, e))
		}
		return send(w)
	}
	if err := open(); err != nil {
		return st, err
	}
	for {
		m, err := recv()
		if err != nil {
			return st, err
		}
		switch {
		case m.Type == MsgCascadeDone:
			if len(m.Body) != 0 {
				return st, fmt.Errorf("qkdsim: cascade: alice: malformed done (%d bytes)", len(m.Body))
			}
			return st, nil
		case m.Type != MsgCascade || len(m.Body) == 0:
			return st, fmt.Errorf("qkdsim: cascade: alice: unexpected message type %#x", m.Type)
		case m.Body[0] == cascadeOpOpen:
			p, err := decodeCascadeOpen(m.Body)
			if err != nil {
				return st, err
			}
			if p != len(passes) || p >= len(h.specs) {
				return st, fmt.Errorf("qkdsim: cascade: alice: Bob opens pass %d, next is %d of %d", p, len(passes), len(h.specs))
			}
			if err := open(); err != nil {
				return st, err
			}
		case m.Body[0] == cascadeOpQuery:
			qs, err = decodeCascadeQueries(m.Body, qs[:0])
			if err != nil {
				return st, err
			}
			w := newParityWriter(len(qs))
			for _, q := range qs {
				if int(q.p) >= len(passes) {
					return st, fmt.Errorf("qkdsim: cascade: alice: query for pass %d, %d open", q.p, len(passes))
				}
				c := passes[q.p]
				b := c.blockOf(int(q.s), int(q.e))
				if b < 0 {
					return st, fmt.Errorf("qkdsim: cascade: alice: query range [%d, %d) of pass %d is not inside one block", q.s, q.e, q.p)
				}
				w.add(c.aliceParity(key, b, int(q.s), int(q.e)))
			}
			if err := send(w); err != nil {
				return st, err
			}
		default:
			return st, fmt.Errorf("qkdsim: cascade: alice: unknown operation %d", m.Body[0])
		}
	}
}

// CascadeBob corrects key in place towards Alice's, given the estimated QBER. Bob drives the
// protocol and draws the shuffles from rnd. On an error the caller closes the channel so that
// Alice stops too; key is then partly corrected and must not be used.
func CascadeBob(ch Channel, key Bits, qber float64, v CascadeVariant, rnd io.Reader) (ReconcileStats, error) {
	return cascadeBobFrames(ch, key, qber, v, rnd, cascadeFrameLen(key.N, cascadeFrameBits))
}

// cascadeFrameBits is the target frame length: Cascade's parameters (and its published
// benchmarks) are for frames of about 10^6 bits, and a frame's structures then fit in cache.
const cascadeFrameBits = 1 << 20

// cascadeFrameLen cuts n bits into frames of equal length, a multiple of 64, at most target
// (rounded up to 64); a key of at most 1.5 target bits is one frame.
func cascadeFrameLen(n, target int) int {
	if 2*n <= 3*target {
		return n
	}
	nf := (n + target - 1) / target
	fl := ((n+nf-1)/nf + 63) &^ 63
	return min(fl, n)
}

// cascadeTailDiv: a pass that is not the last stops settling when 1/cascadeTailDiv of its
// peak number of searches are still running (settle).
const cascadeTailDiv = 16

// cascadeBobFrames is CascadeBob with frames of fl bits (fl = n or a multiple of 64).
func cascadeBobFrames(ch Channel, key Bits, qber float64, v CascadeVariant, rnd io.Reader, fl int) (ReconcileStats, error) {
	if fl <= 0 || fl >= key.N || fl%64 != 0 {
		fl = key.N
	}
	specs, err := cascadeSchedule(v, qber, fl)
	if err != nil {
		return ReconcileStats{}, err
	}
	b := &cascadeBob{ch: ch, key: key, fl: fl, specs: specs, reuse: v == CascadeYan, early: v == CascadeYan}
	defer func() {
		for _, c := range b.passes {
			c.release()
		}
	}()
	if _, err := io.ReadFull(rnd, b.seed[:]); err != nil {
		return b.st, fmt.Errorf("qkdsim: cascade: draw shuffle seed: %w", err)
	}
	if err := b.run(); err != nil {
		return b.st, err
	}
	return b.st, nil
}

// cascadeSearch is one running BINARY: pass-order range [s, e) of block blk of pass p, where
// Alice's parity a differs from Bob's.
type cascadeSearch struct {
	p    uint8
	blk  uint32
	s, e uint32
	a    uint8
	node uint32 // position in the block's bisection tree (sub-block reuse)
}

type blockRef struct {
	p   uint8
	blk uint32
}

type cascadeBob struct {
	ch      Channel
	key     Bits
	fl      int // frame length
	specs   []passSpec
	reuse   bool // sub-block reuse, for the optimised variant
	early   bool // open the next pass during the cascade tail (settle), optimised variant only
	seed    [32]byte
	passes  []*cascadePass
	total   []uint8 // parity of each frame of Alice's key
	active  []cascadeSearch
	pending []blockRef // blocks that may have become odd
	queries []cascadeQuery
	st      ReconcileStats
}

func (b *cascadeBob) send(body []byte, typ uint8) error {
	if err := b.ch.Send(Message{Type: typ, Body: body}); err != nil {
		return fmt.Errorf("qkdsim: cascade: bob: send: %w", err)
	}
	b.st.Messages++
	return nil
}

// recvParities receives Alice's reply with want parity bits.
func (b *cascadeBob) recvParities(want int) ([]byte, error) {
	m, err := b.ch.Recv()
	if err != nil {
		return nil, fmt.Errorf("qkdsim: cascade: bob: receive: %w", err)
	}
	b.st.Messages++
	if m.Type != MsgCascadeReply {
		return nil, fmt.Errorf("qkdsim: cascade: bob: unexpected message type %#x, want reply", m.Type)
	}
	p, err := decodeCascadeReply(m.Body, want)
	if err != nil {
		return nil, err
	}
	b.st.RoundTrips++
	b.st.LeakedBits += int64(want)
	return p, nil
}

func (b *cascadeBob) run() error {
	for p, spec := range b.specs {
		var req []byte
		if p == 0 {
			req = encodeCascadeHello(cascadeHello{n: b.key.N, frame: b.fl, seed: b.seed, specs: b.specs})
		} else {
			req = encodeCascadeOpen(p)
		}
		if err := b.send(req, MsgCascade); err != nil {
			return err
		}
		// Build the pass while Alice builds hers.
		c := newCascadePass(spec, b.key, b.seed, p, true, b.fl)
		if b.reuse {
			c.enableReuse()
		}
		nf := (b.key.N + b.fl - 1) / b.fl
		want := c.nb
		if p > 0 {
			want -= nf
		}
		par, err := b.recvParities(want)
		if err != nil {
			return err
		}
		acc := make([]uint8, nf)
		i := 0
		for blk := range c.alice {
			f := blk / c.nbf
			if p > 0 && c.lastInFrame(blk) {
				c.alice[blk] = b.total[f] ^ acc[f]
				continue
			}
			c.alice[blk] = replyBit(par, i)
			acc[f] ^= c.alice[blk]
			i++
		}
		if p == 0 {
			b.total = acc
		}
		b.passes = append(b.passes, c)
		for blk := range c.alice {
			if c.alice[blk] != c.bob[blk] {
				b.pending = append(b.pending, blockRef{p: uint8(p), blk: uint32(blk)})
			}
		}
		if err := b.settle(b.early && p < len(b.specs)-1); err != nil {
			return err
		}
	}
	return b.send(nil, MsgCascadeDone)
}

// flip corrects key position x and queues the blocks of every open pass that it made odd.
func (b *cascadeBob) flip(x int) {
	b.key.Flip(x)
	for p, c := range b.passes {
		blk := c.flip(x)
		if c.bob[blk] != c.alice[blk] {
			b.pending = append(b.pending, blockRef{p: uint8(p), blk: uint32(blk)})
		}
	}
}

// startSearches starts a BINARY in every queued block that is odd and not already searched.
func (b *cascadeBob) startSearches() {
	for len(b.pending) > 0 {
		r := b.pending[len(b.pending)-1]
		b.pending = b.pending[:len(b.pending)-1]
		c := b.passes[r.p]
		if c.busy[r.blk] || c.alice[r.blk] == c.bob[r.blk] {
			continue
		}
		s, e := c.blockRange(int(r.blk))
		a, node := c.alice[r.blk], 1
		if c.tree != nil {
			// Descend through the sub-blocks whose parities earlier bisections revealed,
			// following the one that now differs; this costs Alice nothing.
			for e-s > 1 {
				known, al := c.treeGet(int(r.blk), node)
				if !known {
					break
				}
				m := s + (e-s)/2
				if c.bobParity(b.key, int(r.blk), s, m) != al {
					e, a, node = m, al, 2*node
				} else {
					s, a, node = m, a^al, 2*node+1
				}
			}
		}
		if e-s == 1 {
			b.flip(c.keyPos(s))
			continue
		}
		c.busy[r.blk] = true
		b.active = append(b.active, cascadeSearch{p: r.p, blk: r.blk, s: uint32(s), e: uint32(e), a: a, node: uint32(node)})
	}
}

// settle runs binary searches, one bisection level of all of them per round trip, until no
// block of any open pass is odd or, with early, until at most 1/cascadeTailDiv of the most
// searches it saw running are left.
//
// Most round trips of a pass are its tail: a few long chains of the cascade effect, each link
// a search in one pass whose correction exposes an odd block in another (at 2% QBER on 10^6
// bits, some 600 of the 900 round trips with under 1/16 of the searches running). Settling
// early opens the next pass while those chains run, so its searches share their round trips
// instead of following them. The next pass's blocks may then be odd because of an error a
// chain was about to fix, which costs some extra parities. Measured on 10^6-bit frames (3
// runs each) at 1/2/5/8% QBER:
//
//	settle fully:  f 1.030/1.035/1.040/1.052, round trips 1035/938/765/2212
//	tail 1/64:     f 1.042/1.045/1.049/1.066, round trips  658/575/429/944
//	tail 1/16:     f 1.065/1.065/1.062/1.080, round trips  399/377/299/550
//	tail 1/8:      f 1.081/1.082/1.071/1.088, round trips  307/275/236/404
//
// Every round trip costs two 64-bit authentication tags of key, so at 2% the parities plus
// tags fall from 266k to 199k bits per frame with 1/16, which keeps f well inside the
// targets (1.10 at 1-5%, 1.12 at 8%). The last pass settles completely, so Cascade ends, as
// before, with every block of every pass even.
func (b *cascadeBob) settle(early bool) error {
	peak := 0
	for {
		b.startSearches()
		peak = max(peak, len(b.active))
		if len(b.active) == 0 || early && len(b.active) <= peak/cascadeTailDiv {
			return nil
		}
		b.queries = b.queries[:0]
		for _, sr := range b.active {
			b.queries = append(b.queries, cascadeQuery{p: sr.p, s: sr.s, e: sr.s + (sr.e-sr.s)/2})
		}
		if err := b.send(encodeCascadeQueries(b.queries), MsgCascade); err != nil {
			return err
		}
		par, err := b.recvParities(len(b.queries))
		if err != nil {
			return err
		}
		next := b.active[:0]
		for i, sr := range b.active {
			c := b.passes[sr.p]
			blk := int(sr.blk)
			m := sr.s + (sr.e-sr.s)/2
			al := replyBit(par, i)
			if c.tree != nil {
				c.treeSet(blk, int(sr.node), al)
			}
			// Compare with Bob's key as it is now: corrections made earlier in this round by
			// other searches are accounted for, so a range is only followed while it really
			// holds an odd number of errors.
			if c.bobParity(b.key, blk, int(sr.s), int(m)) != al {
				sr.e, sr.a, sr.node = m, al, 2*sr.node
			} else if ar := sr.a ^ al; c.bobParity(b.key, blk, int(m), int(sr.e)) != ar {
				sr.s, sr.a, sr.node = m, ar, 2*sr.node+1
			} else {
				// Another correction made the range even; look at the block afresh.
				c.busy[blk] = false
				b.pending = append(b.pending, blockRef{p: sr.p, blk: sr.blk})
				continue
			}
			if sr.e-sr.s == 1 {
				c.busy[blk] = false
				b.flip(c.keyPos(int(sr.s)))
				continue
			}
			next = append(next, sr)
		}
		b.active = next
	}
}
