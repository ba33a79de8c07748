package qkdsim

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// The pipeline of one link. Alice and Bob run as separate goroutines that share nothing but a
// Channel, wrapped by Authenticate. Per block:
//
//	quantum phase (simulateBlock) -> sifting -> parameter estimation (abort on QBER or no
//	single-photon key) -> Cascade -> verification (abort on failure) -> commit (agree on the
//	final length and the authentication key to replace) -> privacy amplification.
//
// The first bytes of each amplified key refill the authentication pads the block consumed
// (Wegman-Carter key recycling), so the key handed out is net of authentication.
//
// Commit messages (unsigned varints): MsgCommit from Alice and MsgCommitReply from Bob, each
// carrying the final length the sender computed and the authentication bits it consumed since
// its last refill. Both ends take the smaller length and the larger consumption.
const (
	MsgCommit uint8 = 0x60 + iota
	MsgCommitReply
)

// ErrKeysDiffer means the simulator found different keys at the two ends after a passed
// verification (probability eps_cor). The block is dropped and the link stops, since the
// authentication pads of the two ends would no longer match.
var ErrKeysDiffer = errors.New("qkdsim: keys differ after verification")

// Block is one block of final key, identical at both ends.
type Block struct {
	ID     string
	Seq    uint64
	Key    []byte // Bits/8 bytes
	Bits   int
	QBER   float64
	LeakEC int64
	EpsSec float64
	EpsCor float64
	Start  time.Time
	End    time.Time
}

// LinkConfig configures a simulated link.
type LinkConfig struct {
	Name           string // prefix of block IDs; default "qkdsim"
	Params         Params
	Distance       float64 // km
	PulsesPerBlock int64   // default 1e9
	Cascade        CascadeVariant
	Seed           uint64 // all randomness of the run derives from it
	EveFraction    float64
	PNS            bool
	Paced          bool   // deliver blocks no faster than the pulse rate allows
	PSK            []byte // pre-shared authentication key; default derived from Seed (demo only)
	// Transport returns the two ends of the classical channel; default Pipe.
	Transport func() (alice, bob Channel, closeFn func(), err error)
	// OnBlock, if set, receives the report of every block, aborted or not.
	OnBlock func(RunStats)
}

// RunStats reports one block or a whole run.
type RunStats struct {
	Preset                string  `json:"preset"`
	DistanceKM            float64 `json:"distance_km"`
	Pulses                int64   `json:"pulses"`
	Blocks                int     `json:"blocks"`
	AbortedBlocks         int     `json:"aborted_blocks"`
	DetectedEvents        int64   `json:"detected_events"`
	SiftedBits            int64   `json:"sifted_bits"`
	SampleBits            int64   `json:"sample_bits"`
	ReconciledBits        int64   `json:"reconciled_bits"`
	QBER                  float64 `json:"qber"`
	PhaseErrorBound       float64 `json:"phase_error_bound"`
	Y1Lower               float64 `json:"y1_lower"`
	E1Upper               float64 `json:"e1_upper"`
	Y1True                float64 `json:"y1_true"`
	E1True                float64 `json:"e1_true"`
	LeakedECBits          int64   `json:"leaked_ec_bits"`
	EfficiencyF           float64 `json:"efficiency_f"`
	VerifyTagBits         int64   `json:"verify_tag_bits"`
	RevealedBits          int64   `json:"revealed_bits"`
	RoundTrips            int64   `json:"round_trips"`
	Messages              int64   `json:"messages"`
	ChannelBytes          int64   `json:"channel_bytes"`
	AmplifiedBits         int64   `json:"amplified_bits"`
	AuthBitsConsumed      int64   `json:"auth_bits_consumed"`
	FinalBits             int64   `json:"final_bits"`
	SecretKeyRatePerPulse float64 `json:"secret_key_rate_per_pulse"`
	SecretKeyRateBps      float64 `json:"secret_key_rate_bps"`
	AnalyticRatePerPulse  float64 `json:"analytic_rate_per_pulse"`
	PLOBPerPulse          Bound   `json:"plob_per_pulse"` // +Inf at 0 km (a lossless channel): JSON null
	Aborted               bool    `json:"aborted"`
	AbortReason           string  `json:"abort_reason"`
	ElapsedSeconds        float64 `json:"elapsed_s"`
	SiftedMbitPerSecond   float64 `json:"sifted_mbit_per_s"` // processing speed, not the physical rate

	errBits int64 // true errors in the reconciled bits (simulator knowledge)
}

// authState is what the pipeline needs of an AuthKey.
type authState interface {
	Refill(p []byte)
	Consumed() int64
}

// stages are the post-processing functions the pipeline calls; tests in this package may swap
// them to exercise the pipeline in isolation.
type stages struct {
	cascadeAlice func(Channel, Bits, CascadeVariant) (ReconcileStats, error)
	cascadeBob   func(Channel, Bits, float64, CascadeVariant, io.Reader) (ReconcileStats, error)
	verifyAlice  func(Channel, Bits, io.Reader) (int, error)
	verifyBob    func(Channel, Bits) (int, error)
	amplifyAlice func(Channel, Bits, int, io.Reader) (Bits, error)
	amplifyBob   func(Channel, Bits, int) (Bits, error)
	newAuth      func(psk []byte) (authState, error)
	authenticate func(Channel, authState, bool) Channel
}

func realStages() stages {
	return stages{
		cascadeAlice: CascadeAlice, cascadeBob: CascadeBob,
		verifyAlice: VerifyAlice, verifyBob: VerifyBob,
		amplifyAlice: AmplifyAlice, amplifyBob: AmplifyBob,
		newAuth: func(psk []byte) (authState, error) { return NewAuthKey(psk) },
		authenticate: func(ch Channel, k authState, alice bool) Channel {
			return Authenticate(ch, k.(*AuthKey), alice)
		},
	}
}

// Link is a simulated QKD link producing identical key blocks at both ends.
type Link struct {
	cfg   LinkConfig
	eve   Eve
	st    stages
	seq   uint64
	setup bool
	dead  error

	rawA, rawB   *countingChannel
	chA, chB     Channel
	closeCh      func()
	authA, authB authState
	coveredA     int64 // authentication bits already replaced from produced key
	coveredB     int64
}

// DefaultPulsesPerBlock gives about 10^6-10^7 sifted bits per block at metro distances.
const DefaultPulsesPerBlock = 1_000_000_000

// NewLink validates cfg and returns a link; nothing runs until Run or RunPulses.
func NewLink(cfg LinkConfig) (*Link, error) {
	if err := cfg.Params.Validate(); err != nil {
		return nil, err
	}
	if err := ValidateDistance(cfg.Distance); err != nil {
		return nil, err
	}
	eve := Eve{InterceptFraction: cfg.EveFraction, PNS: cfg.PNS}
	if err := eve.Validate(); err != nil {
		return nil, err
	}
	if cfg.PulsesPerBlock == 0 {
		cfg.PulsesPerBlock = DefaultPulsesPerBlock
	}
	if cfg.PulsesPerBlock < 0 {
		return nil, fmt.Errorf("%w: pulses per block = %d is out of range; allowed [1, 2^62]", ErrInvalidParam, cfg.PulsesPerBlock)
	}
	switch cfg.Cascade {
	case "":
		cfg.Cascade = CascadeYan
	case CascadeOriginal, CascadeYan:
	default:
		return nil, fmt.Errorf("%w: cascade = %q unknown; allowed original, yan", ErrInvalidParam, cfg.Cascade)
	}
	if cfg.Name == "" {
		cfg.Name = "qkdsim"
	}
	if cfg.Transport == nil {
		cfg.Transport = func() (Channel, Channel, func(), error) {
			a, b, _, _, c := Pipe()
			return a, b, c, nil
		}
	}
	return &Link{cfg: cfg, eve: eve, st: realStages()}, nil
}

// streamSeed derives an independent ChaCha8 seed for one purpose of one block.
func streamSeed(seed, seq uint64, label string) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[0:], seed)
	binary.LittleEndian.PutUint64(s[8:], seq)
	copy(s[16:], label)
	return s
}

func (l *Link) open() error {
	if l.dead != nil {
		return l.dead
	}
	if l.setup {
		return nil
	}
	a, b, closeFn, err := l.cfg.Transport()
	if err != nil {
		return fmt.Errorf("qkdsim: open classical channel: %w", err)
	}
	psk := l.cfg.PSK
	if psk == nil {
		psk = make([]byte, 1<<16)
		rand.NewChaCha8(streamSeed(l.cfg.Seed, math.MaxUint64, "psk")).Read(psk)
	}
	if l.authA, err = l.st.newAuth(psk); err != nil {
		closeFn()
		return fmt.Errorf("qkdsim: bootstrap authentication: %w", err)
	}
	if l.authB, err = l.st.newAuth(psk); err != nil {
		closeFn()
		return fmt.Errorf("qkdsim: bootstrap authentication: %w", err)
	}
	l.rawA, l.rawB = &countingChannel{Channel: a}, &countingChannel{Channel: b}
	l.chA = l.st.authenticate(l.rawA, l.authA, true)
	l.chB = l.st.authenticate(l.rawB, l.authB, false)
	l.closeCh = closeFn
	l.setup = true
	return nil
}

// Close releases the classical channel.
func (l *Link) Close() {
	if l.setup {
		l.closeCh()
	}
	l.dead = ErrChannelClosed
}

// countingChannel counts what one end sends, underneath authentication so tags are included.
type countingChannel struct {
	Channel
	msgs, bytes atomic.Int64
}

func (c *countingChannel) Send(m Message) error {
	c.msgs.Add(1)
	c.bytes.Add(int64(len(m.Body)) + 1)
	return c.Channel.Send(m)
}

// partyOut is one end's outcome of a block.
type partyOut struct {
	est       estimateResult
	rec       ReconcileStats
	tagBits   int
	length    int64
	final     Bits
	refill    int // bytes of amplified key used to refill authentication
	sifted    int64
	detected  int64
	phaseErr  float64
	consumed  int64
	amplified int64
}

// isAbort reports whether err is a deterministic abort both ends reach together.
func isAbort(err error) bool {
	return errors.Is(err, ErrQBERTooHigh) || errors.Is(err, ErrNoSinglePhotonKey) ||
		errors.Is(err, ErrKeyTooShort) || errors.Is(err, ErrVerifyFailed)
}

// precheck aborts before error correction when the estimates leave no key: the QBER threshold
// (Shor-Preskill), no single-photon yield, or no room for the leak f n h(Q) the reconciliation
// is expected to cost.
func (l *Link) precheck(e estimateResult) (FiniteKeyInput, error) {
	p := l.cfg.Params
	fk := FiniteKeyInput{N: int64(e.Key.N), K: e.Input.Sample, SingleFraction: e.Estimate.SingleFraction,
		E1Upper: e.Estimate.E1Upper, EpsSec: p.EpsSec, EpsCor: p.EpsCor}
	if e.Estimate.QBER > p.QBERThreshold {
		return fk, fmt.Errorf("%w: %.4f > %.4f", ErrQBERTooHigh, e.Estimate.QBER, p.QBERThreshold)
	}
	if e.Estimate.Y1Lower <= 0 || FiniteKeyLength(fk) == 0 {
		return fk, fmt.Errorf("%w: Y1 >= %.3g, e1 <= %.4f", ErrNoSinglePhotonKey, e.Estimate.Y1Lower, e.Estimate.E1Upper)
	}
	pred := fk
	pred.LeakEC = int64(math.Ceil(p.F * float64(fk.N) * h(e.Estimate.QBER)))
	if FiniteKeyLength(pred) == 0 {
		return fk, fmt.Errorf("%w: expected error-correction leak exceeds the secret bits", ErrKeyTooShort)
	}
	return fk, nil
}

func cascadeQBER(q float64) float64 { return min(max(q, 1e-3), 0.25) }

// commit exchanges final lengths and authentication consumption; both ends keep the smaller
// length and the larger consumption, so they continue identically.
func commit(ch Channel, alice bool, length, consumed int64) (int64, int64, error) {
	body := binary.AppendUvarint(binary.AppendUvarint(nil, uint64(length)), uint64(consumed))
	sendT, recvT := MsgCommit, MsgCommitReply
	if !alice {
		sendT, recvT = MsgCommitReply, MsgCommit
	}
	var m Message
	var err error
	if alice {
		if err = ch.Send(Message{Type: sendT, Body: body}); err == nil {
			m, err = ch.Recv()
		}
	} else {
		if m, err = ch.Recv(); err == nil {
			err = ch.Send(Message{Type: sendT, Body: body})
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("qkdsim: commit: %w", err)
	}
	if m.Type != recvT {
		return 0, 0, fmt.Errorf("qkdsim: commit: unexpected message type %#x", m.Type)
	}
	pl, pc, err := decodeCommit(m.Body)
	if err != nil {
		return 0, 0, err
	}
	return min(length, pl), max(consumed, pc), nil
}

func decodeCommit(body []byte) (length, consumed int64, err error) {
	a, k := binary.Uvarint(body)
	if k <= 0 || a > 1<<40 {
		return 0, 0, errors.New("qkdsim: commit: bad length")
	}
	b, k2 := binary.Uvarint(body[k:])
	if k2 <= 0 || b > 1<<40 || k+k2 != len(body) {
		return 0, 0, errors.New("qkdsim: commit: bad consumption")
	}
	return int64(a), int64(b), nil
}

// party runs one end's post-processing for a block.
func (l *Link) party(ch Channel, alice bool, ra rawAlice, rb rawBob, rnd io.Reader, auth authState, covered int64) (partyOut, error) {
	var o partyOut
	var s siftResult
	var err error
	p := l.cfg.Params
	if alice {
		s, err = siftAlice(ch, ra)
	} else {
		s, err = siftBob(ch, rb)
	}
	if err != nil {
		return o, err
	}
	o.sifted = s.SiftedBits()
	o.detected = s.Detected[0] + s.Detected[1] + s.Detected[2]
	if alice {
		o.est, err = estimateAlice(ch, p, ra, s, rnd)
	} else {
		o.est, err = estimateBob(ch, p, s)
	}
	if err != nil {
		return o, err
	}
	fk, err := l.precheck(o.est)
	o.phaseErr = fk.PhaseErrorBound()
	if err != nil {
		return o, err
	}
	key := o.est.Key
	if alice {
		o.rec, err = l.st.cascadeAlice(ch, key, l.cfg.Cascade)
	} else {
		o.rec, err = l.st.cascadeBob(ch, key, cascadeQBER(o.est.Estimate.QBER), l.cfg.Cascade, rnd)
	}
	if err != nil {
		return o, fmt.Errorf("qkdsim: reconcile: %w", err)
	}
	if alice {
		o.tagBits, err = l.st.verifyAlice(ch, key, rnd)
	} else {
		o.tagBits, err = l.st.verifyBob(ch, key)
	}
	if err != nil {
		return o, err
	}
	fk.LeakEC, fk.TagBits = o.rec.LeakedBits, int64(o.tagBits)
	length := FiniteKeyLength(fk) &^ 7 // whole bytes, for Block.Key
	consumed := auth.Consumed() - covered
	length, consumed, err = commit(ch, alice, length, consumed)
	if err != nil {
		return o, err
	}
	o.consumed = consumed
	o.length = length
	o.refill = int((consumed + 7) / 8)
	if length < int64(8*o.refill)+8 {
		return o, fmt.Errorf("%w: %d bits after error correction, %d needed to replace authentication key",
			ErrKeyTooShort, length, 8*o.refill)
	}
	if alice {
		o.final, err = l.st.amplifyAlice(ch, key, int(length), rnd)
	} else {
		o.final, err = l.st.amplifyBob(ch, key, int(length))
	}
	if err != nil {
		return o, fmt.Errorf("qkdsim: amplify: %w", err)
	}
	if o.final.N != int(length) {
		return o, fmt.Errorf("qkdsim: amplify returned %d bits, want %d", o.final.N, length)
	}
	o.amplified = length
	return o, nil
}

// runBlock runs one block of the given number of pulses. On success it returns the final key
// (identical at both ends, checked) and the block's report; on an abort the report says why.
func (l *Link) runBlock(ctx context.Context, pulses int64) ([]byte, RunStats, error) {
	p := l.cfg.Params
	seq := l.seq
	l.seq++
	start := time.Now()
	st := RunStats{Preset: p.Preset, DistanceKM: l.cfg.Distance, Pulses: pulses, Blocks: 1,
		AnalyticRatePerPulse: AnalyticRate(p, l.cfg.Distance), PLOBPerPulse: Bound(PLOB(p, l.cfg.Distance))}
	if err := l.open(); err != nil {
		return nil, st, err
	}
	rng := rand.New(rand.NewChaCha8(streamSeed(l.cfg.Seed, seq, "physics")))
	ra, rb, truth, err := simulateBlock(p, l.cfg.Distance, l.eve, pulses, rng)
	if err != nil {
		return nil, st, err
	}
	st.Y1True, st.E1True = truth.Model.Y1, truth.Model.E1

	msgs0 := l.rawA.msgs.Load() + l.rawB.msgs.Load()
	bytes0 := l.rawA.bytes.Load() + l.rawB.bytes.Load()
	var oa, ob partyOut
	var ea, eb error
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, l.closeCh)
	wg.Add(2)
	go func() {
		defer wg.Done()
		oa, ea = l.party(l.chA, true, ra, rawBob{}, rand.NewChaCha8(streamSeed(l.cfg.Seed, seq, "alice")), l.authA, l.coveredA)
		if ea != nil && !isAbort(ea) {
			l.closeCh()
		}
	}()
	go func() {
		defer wg.Done()
		ob, eb = l.party(l.chB, false, rawAlice{}, rb, rand.NewChaCha8(streamSeed(l.cfg.Seed, seq, "bob")), l.authB, l.coveredB)
		if eb != nil && !isAbort(eb) {
			l.closeCh()
		}
	}()
	wg.Wait()
	stopped := !stop()

	st.DetectedEvents = oa.detected
	st.SiftedBits = oa.sifted
	st.SampleBits = oa.est.Input.Sample
	st.ReconciledBits = int64(oa.est.Key.N)
	st.QBER = oa.est.Estimate.QBER
	st.PhaseErrorBound = oa.phaseErr
	st.Y1Lower, st.E1Upper = oa.est.Estimate.Y1Lower, oa.est.Estimate.E1Upper
	st.LeakedECBits = oa.rec.LeakedBits
	st.RoundTrips = int64(oa.rec.RoundTrips)
	st.VerifyTagBits = int64(oa.tagBits)
	st.RevealedBits = oa.est.Revealed + oa.rec.LeakedBits + int64(oa.tagBits)
	st.Messages = l.rawA.msgs.Load() + l.rawB.msgs.Load() - msgs0
	st.ChannelBytes = l.rawA.bytes.Load() + l.rawB.bytes.Load() - bytes0
	if oa.est.Key.N > 0 && ob.est.Key.N == oa.est.Key.N {
		// Errors before reconciliation: Bob's key is corrected in place only after this point in
		// the party goroutine, so count on the sifted-and-sampled inputs via the raw truth.
		st.errBits = truth.Errors[ClassSignal] - oa.est.Input.Errors[ClassSignal]
		if hq := h(float64(st.errBits) / float64(oa.est.Key.N)); hq > 0 && oa.rec.LeakedBits > 0 {
			st.EfficiencyF = float64(oa.rec.LeakedBits) / (float64(oa.est.Key.N) * hq)
		}
	}
	st.ElapsedSeconds = time.Since(start).Seconds()
	if st.ElapsedSeconds > 0 {
		st.SiftedMbitPerSecond = float64(st.SiftedBits) / st.ElapsedSeconds / 1e6
	}

	switch {
	case stopped || ctx.Err() != nil:
		l.dead = ErrChannelClosed
		return nil, st, ctx.Err()
	case ea == nil && eb == nil:
	case sameAbort(ea, eb):
		st.Aborted, st.AbortReason, st.AbortedBlocks = true, ea.Error(), 1
		return nil, st, nil
	default:
		l.dead = errors.Join(ea, eb)
		l.closeCh()
		return nil, st, fmt.Errorf("qkdsim: block %d: %w", seq, l.dead)
	}
	if oa.final.N != ob.final.N || subtle.ConstantTimeCompare(oa.final.Bytes(), ob.final.Bytes()) != 1 {
		l.dead = ErrKeysDiffer
		l.closeCh()
		return nil, st, fmt.Errorf("qkdsim: block %d: %w", seq, ErrKeysDiffer)
	}
	key := oa.final.Bytes()
	l.authA.Refill(key[:oa.refill])
	l.authB.Refill(ob.final.Bytes()[:ob.refill])
	l.coveredA += 8 * int64(oa.refill)
	l.coveredB += 8 * int64(ob.refill)
	st.AmplifiedBits = oa.amplified
	st.AuthBitsConsumed = oa.consumed
	out := key[oa.refill:]
	st.FinalBits = int64(8 * len(out))
	st.SecretKeyRatePerPulse = float64(st.FinalBits) / float64(pulses)
	st.SecretKeyRateBps = st.SecretKeyRatePerPulse * p.PulseRate
	return out, st, nil
}

func sameAbort(a, b error) bool {
	for _, s := range []error{ErrQBERTooHigh, ErrNoSinglePhotonKey, ErrKeyTooShort, ErrVerifyFailed} {
		if errors.Is(a, s) && errors.Is(b, s) {
			return true
		}
	}
	return false
}

// Run produces blocks until ctx is done or an error that is not an abort occurs, handing
// identical Blocks to alice and bob. Aborted blocks (QBER, no single-photon key, verification)
// yield no Block; OnBlock still reports them. In Paced mode a block is delivered no sooner than
// PulsesPerBlock/PulseRate after the previous one, so key arrives at the physical rate.
func (l *Link) Run(ctx context.Context, alice, bob func(Block) error) error {
	defer l.Close()
	period := time.Duration(float64(l.cfg.PulsesPerBlock) / l.cfg.Params.PulseRate * float64(time.Second))
	next := time.Now()
	for {
		seq := l.seq
		start := time.Now()
		key, st, err := l.runBlock(ctx, l.cfg.PulsesPerBlock)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if l.cfg.OnBlock != nil {
			l.cfg.OnBlock(st)
		}
		if l.cfg.Paced {
			next = next.Add(period)
			if d := time.Until(next); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-t.C:
				}
			}
		}
		if key == nil {
			continue
		}
		mk := func() Block {
			return Block{ID: fmt.Sprintf("%s-%d", l.cfg.Name, seq), Seq: seq, Key: append([]byte(nil), key...),
				Bits: 8 * len(key), QBER: st.QBER, LeakEC: st.LeakedECBits, EpsSec: l.cfg.Params.EpsSec,
				EpsCor: l.cfg.Params.EpsCor, Start: start, End: time.Now()}
		}
		if err := alice(mk()); err != nil {
			return fmt.Errorf("qkdsim: deliver block %d to alice: %w", seq, err)
		}
		if err := bob(mk()); err != nil {
			return fmt.Errorf("qkdsim: deliver block %d to bob: %w", seq, err)
		}
		clear(key)
	}
}

// RunPulses sends total pulses in blocks of PulsesPerBlock and returns the summed report.
// progress, if set, is called after each block.
func RunPulses(ctx context.Context, cfg LinkConfig, total int64, progress func(done, total int64)) (RunStats, error) {
	if total <= 0 {
		return RunStats{}, fmt.Errorf("%w: pulses = %d is out of range; allowed >= 1", ErrInvalidParam, total)
	}
	l, err := NewLink(cfg)
	if err != nil {
		return RunStats{}, err
	}
	defer l.Close()
	p := l.cfg.Params
	sum := RunStats{Preset: p.Preset, DistanceKM: cfg.Distance,
		AnalyticRatePerPulse: AnalyticRate(p, cfg.Distance), PLOBPerPulse: Bound(PLOB(p, cfg.Distance))}
	start := time.Now()
	var wQ, wPhi, wSample, wKey, errBits float64
	for done := int64(0); done < total; {
		n := min(l.cfg.PulsesPerBlock, total-done)
		key, st, err := l.runBlock(ctx, n)
		if err != nil {
			return sum, err
		}
		clear(key)
		done += n
		sum.Pulses += n
		sum.Blocks++
		sum.AbortedBlocks += st.AbortedBlocks
		if st.Aborted && !sum.Aborted {
			sum.Aborted, sum.AbortReason = true, st.AbortReason
		}
		sum.DetectedEvents += st.DetectedEvents
		sum.SiftedBits += st.SiftedBits
		sum.SampleBits += st.SampleBits
		sum.ReconciledBits += st.ReconciledBits
		sum.LeakedECBits += st.LeakedECBits
		sum.VerifyTagBits += st.VerifyTagBits
		sum.RevealedBits += st.RevealedBits
		sum.RoundTrips += st.RoundTrips
		sum.Messages += st.Messages
		sum.ChannelBytes += st.ChannelBytes
		sum.AmplifiedBits += st.AmplifiedBits
		sum.AuthBitsConsumed += st.AuthBitsConsumed
		sum.FinalBits += st.FinalBits
		sum.Y1True, sum.E1True = st.Y1True, st.E1True
		sum.Y1Lower, sum.E1Upper = st.Y1Lower, st.E1Upper
		wQ += st.QBER * float64(st.SampleBits)
		wSample += float64(st.SampleBits)
		wPhi += st.PhaseErrorBound * float64(st.ReconciledBits)
		wKey += float64(st.ReconciledBits)
		if st.LeakedECBits > 0 {
			errBits += float64(st.errBits)
		}
		if progress != nil {
			progress(done, total)
		}
	}
	if wSample > 0 {
		sum.QBER = wQ / wSample
	}
	if wKey > 0 {
		sum.PhaseErrorBound = wPhi / wKey
	}
	if hq := h(errBits / float64(max(sum.ReconciledBits, 1))); hq > 0 && sum.LeakedECBits > 0 {
		sum.EfficiencyF = float64(sum.LeakedECBits) / (float64(sum.ReconciledBits) * hq)
	}
	sum.SecretKeyRatePerPulse = float64(sum.FinalBits) / float64(sum.Pulses)
	sum.SecretKeyRateBps = sum.SecretKeyRatePerPulse * p.PulseRate
	sum.ElapsedSeconds = time.Since(start).Seconds()
	if sum.ElapsedSeconds > 0 {
		sum.SiftedMbitPerSecond = float64(sum.SiftedBits) / sum.ElapsedSeconds / 1e6
	}
	return sum, nil
}

// SimulateAsymptotic samples the counts of pulses pulses (no bits) and computes the key length
// with ideal decoy estimation (true Y1, e1, as with infinitely many decoys) and an
// error-correction leak of f n h(QBER), with no finite-size terms. This is the regime of
// AnalyticRate, reached by sampling instead of formulas.
func SimulateAsymptotic(p Params, km float64, eve Eve, pulses int64, seed uint64) (RunStats, error) {
	if err := p.Validate(); err != nil {
		return RunStats{}, err
	}
	if err := ValidateDistance(km); err != nil {
		return RunStats{}, err
	}
	if err := eve.Validate(); err != nil {
		return RunStats{}, err
	}
	if pulses <= 0 {
		return RunStats{}, fmt.Errorf("%w: pulses = %d is out of range; allowed >= 1", ErrInvalidParam, pulses)
	}
	rng := rand.New(rand.NewChaCha8(streamSeed(seed, 0, "asymptotic")))
	m := physicalClasses(p, p.Transmittance(km), eve)
	sent, det := sampleCounts(p, m, pulses, rng)
	st := RunStats{Preset: p.Preset, DistanceKM: km, Pulses: pulses, Blocks: 1, Y1True: m.Y1, E1True: m.E1,
		Y1Lower: m.Y1, E1Upper: m.E1, PhaseErrorBound: m.E1, EfficiencyF: p.F,
		AnalyticRatePerPulse: AnalyticRate(p, km), PLOBPerPulse: Bound(PLOB(p, km))}
	var sifted, errs [3]int64
	for k := range det {
		sifted[k] = binomial(rng, det[k], p.SiftFraction())
		errs[k] = binomial(rng, sifted[k], m.E[k])
		st.DetectedEvents += det[k]
		st.SiftedBits += sifted[k]
	}
	n := sifted[ClassSignal]
	st.ReconciledBits = n
	if n > 0 && sent[ClassSignal] > 0 {
		st.QBER = float64(errs[ClassSignal]) / float64(n)
		gain := float64(det[ClassSignal]) / float64(sent[ClassSignal])
		single := min(m.Y1*p.Mu*math.Exp(-p.Mu)/gain, 1)
		st.LeakedECBits = int64(math.Ceil(p.F * float64(n) * h(st.QBER)))
		st.FinalBits = AsymptoticLength(n, single, m.E1, st.QBER, p.F)
	}
	if st.QBER > p.QBERThreshold {
		st.FinalBits, st.Aborted, st.AbortReason = 0, true, ErrQBERTooHigh.Error()
	} else if st.FinalBits == 0 {
		st.Aborted, st.AbortReason = true, ErrKeyTooShort.Error()
	}
	st.SecretKeyRatePerPulse = float64(st.FinalBits) / float64(pulses)
	st.SecretKeyRateBps = st.SecretKeyRatePerPulse * p.PulseRate
	return st, nil
}
