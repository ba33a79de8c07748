package pq

import (
	"container/heap"
	"fmt"
	"sync"
	"time"
)

// ReplayGuard remembers the (sender, nonce) pairs of the envelopes accepted within the
// acceptance window, so that Open can refuse a second delivery of the same envelope. An envelope
// whose timestamp is more than the window away from the receiver's clock (either way: clocks
// of two sites drift) is refused outright, so nonces need only be remembered for one window:
// after that the timestamp check alone refuses their replay.
//
// Memory is bounded by max entries. When a burst of authentic messages fills it, the oldest
// entry is forgotten and the guard raises a floor to its timestamp: from then on, anything not
// newer than the floor is refused as a possible replay. The guard thus never accepts a replay; at
// worst, under more than max messages per window, it refuses some late but genuine messages,
// which the peer channel retries with a fresh envelope. It is safe for concurrent use.
type ReplayGuard struct {
	window time.Duration
	max    int

	mu    sync.Mutex
	seen  map[replayKey]struct{}
	order replayHeap // the same entries, oldest timestamp first
	floor int64      // unix ns; envelopes with ts <= floor are refused
}

type replayKey struct {
	from  string
	nonce [NonceSize]byte
}

type replayEntry struct {
	ts  int64
	key replayKey
}

// DefaultWindow is the acceptance window suggested for peer messages: wide enough for the clock
// drift of NTP-synchronised sites and a retried RPC, narrow enough to keep the guard small.
const DefaultWindow = 2 * time.Minute

// DefaultReplayMemory is the suggested bound on remembered nonces (a few MB at most).
const DefaultReplayMemory = 1 << 16

// NewReplayGuard makes a guard accepting timestamps within window of now and remembering at most
// max nonces. Non-positive arguments take DefaultWindow and DefaultReplayMemory.
func NewReplayGuard(window time.Duration, max int) *ReplayGuard {
	if window <= 0 {
		window = DefaultWindow
	}
	if max <= 0 {
		max = DefaultReplayMemory
	}
	return &ReplayGuard{window: window, max: max, seen: make(map[replayKey]struct{})}
}

// Window is the acceptance window.
func (g *ReplayGuard) Window() time.Duration { return g.window }

// Len is the number of nonces remembered.
func (g *ReplayGuard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.seen)
}

// inWindow is the stateless part of the check, done before the (costly) signature check.
func (g *ReplayGuard) inWindow(ts int64, now time.Time) error {
	d := time.Duration(now.UnixNano() - ts)
	if d > g.window || d < -g.window {
		return fmt.Errorf("sent at %s, %s from this clock, window ±%s: %w",
			time.Unix(0, ts).UTC().Format(time.RFC3339Nano), d.Round(time.Millisecond), g.window, ErrStale)
	}
	return nil
}

// admit records (from, nonce) of an authentic envelope, or refuses it if already seen.
func (g *ReplayGuard) admit(from string, nonce [NonceSize]byte, ts int64, now time.Time) error {
	if err := g.inWindow(ts, now); err != nil {
		return err
	}
	k := replayKey{from, nonce}
	g.mu.Lock()
	defer g.mu.Unlock()
	// Forget what the window check now refuses anyway.
	cutoff := now.UnixNano() - int64(g.window)
	for len(g.order) > 0 && g.order[0].ts < cutoff {
		delete(g.seen, heap.Pop(&g.order).(replayEntry).key)
	}
	if ts <= g.floor {
		return g.errForgotten()
	}
	if _, dup := g.seen[k]; dup {
		return fmt.Errorf("nonce already seen: %w", ErrReplay)
	}
	if len(g.order) >= g.max && ts <= g.order[0].ts {
		// Full, and older than all it remembers: evicting would only refuse it anyway.
		return g.errForgotten()
	}
	for len(g.order) >= g.max {
		e := heap.Pop(&g.order).(replayEntry)
		delete(g.seen, e.key)
		g.floor = max(g.floor, e.ts)
	}
	if ts <= g.floor { // the eviction just raised the floor past this message
		return g.errForgotten()
	}
	g.seen[k] = struct{}{}
	heap.Push(&g.order, replayEntry{ts, k})
	return nil
}

// errForgotten refuses an envelope too old for what the guard still remembers.
func (g *ReplayGuard) errForgotten() error {
	return fmt.Errorf("older than the replay guard's memory (more than %d messages in %s): %w", g.max, g.window, ErrReplay)
}

// replayHeap is a min-heap of entries by timestamp (container/heap).
type replayHeap []replayEntry

func (h replayHeap) Len() int           { return len(h) }
func (h replayHeap) Less(i, j int) bool { return h[i].ts < h[j].ts }
func (h replayHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *replayHeap) Push(x any)        { *h = append(*h, x.(replayEntry)) }
func (h *replayHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
