package site

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/qkms/qkms/kms"
)

// Per-SAE rate limits (issue 6, hardening): a token bucket per (SAE, operation), counted in
// keys, so one SAE that loops on enc_keys or dec_keys cannot drain a pool the other SAEs of the
// site share, or monopolise the site's replicated log. The check runs before anything is
// proposed, so a refused request consumes no key (DESIGN.md invariant 4) and no log entry.
//
// The buckets live in each node's memory: they are not replicated, a restart refills them, and
// in a site of several nodes an SAE that spreads its requests over the nodes gets up to the
// limit at each node. That is enough for the purpose (protecting the pools from one runaway
// client) without putting a write into the log for every request.

// RateLimit bounds the keys one SAE may take per second through one operation (Get key and
// Get key with key IDs are counted separately).
type RateLimit struct {
	// KeysPerSecond is the sustained rate; 0 means unlimited.
	KeysPerSecond float64 `yaml:"keys_per_second"`
	// Burst is how many keys the SAE may take at once after a quiet period, which is also the
	// largest request it can make. 0: one second's worth (at least 1).
	Burst int `yaml:"burst"`
}

// RateLimitDefault is the key of Config.RateLimit that applies to SAEs not listed by name.
const RateLimitDefault = "*"

// The operations a bucket is kept for.
const (
	opIssue = "enc_keys" // Get key, at the master's site
	opFetch = "dec_keys" // Get key with key IDs, at a slave's site
)

func (l RateLimit) burst() float64 {
	if l.Burst > 0 {
		return float64(l.Burst)
	}
	return max(1, math.Ceil(l.KeysPerSecond))
}

func (l RateLimit) validate(sae string) error {
	if l.KeysPerSecond < 0 || math.IsNaN(l.KeysPerSecond) || math.IsInf(l.KeysPerSecond, 0) || l.Burst < 0 {
		return fmt.Errorf("site: config: rate_limit %s: keys_per_second and burst must be finite and not negative (0 means unlimited)", sae)
	}
	return nil
}

// bucket is a token bucket (Turner, "New directions in communications", 1986; the shaper of
// RFC 2697 with one rate and one bucket): it holds up to burst tokens, refills at rate tokens
// per second, and a request for n keys passes only if n tokens are there, taking them.
type bucket struct {
	tokens float64
	last   time.Time
}

// take takes n tokens at now under limit l, or says how long until n tokens will be there.
// It takes nothing when it refuses.
func (b *bucket) take(l RateLimit, n int, now time.Time) (ok bool, wait time.Duration) {
	burst := l.burst()
	if b.last.IsZero() {
		b.tokens = burst
	} else if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = min(burst, b.tokens+dt*l.KeysPerSecond)
	}
	b.last = now
	need := float64(n)
	if need <= b.tokens {
		b.tokens -= need
		return true, 0
	}
	if need > burst {
		return false, -1 // never: the request is larger than the bucket
	}
	return false, time.Duration((need - b.tokens) / l.KeysPerSecond * float64(time.Second))
}

// rateLimiter holds a node's buckets. Its zero value is ready: it takes the limits from the
// node's Config on first use.
type rateLimiter struct {
	mu      sync.Mutex
	loaded  bool
	limits  map[string]RateLimit
	buckets map[[2]string]*bucket // (SAE, operation)
	now     func() time.Time      // tests replace it
}

// SetRateLimits replaces the node's per-SAE rate limits (keyed by SAE ID, RateLimitDefault for
// every SAE not listed) and refills every bucket.
func (n *Node) SetRateLimits(limits map[string]RateLimit) error {
	for sae, l := range limits {
		if err := l.validate(sae); err != nil {
			return err
		}
	}
	r := &n.rate
	r.mu.Lock()
	defer r.mu.Unlock()
	r.loaded, r.limits, r.buckets = true, limits, nil
	return nil
}

// rateLimit takes keys tokens from the bucket of (sae, op), or answers kms.ErrRateLimited with
// a message telling the SAE to slow down.
func (n *Node) rateLimit(sae, op string, keys int) error {
	r := &n.rate
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.loaded {
		r.loaded, r.limits = true, n.cfg.RateLimit
	}
	l, ok := r.limits[sae]
	if !ok {
		l = r.limits[RateLimitDefault]
	}
	if l.KeysPerSecond <= 0 {
		return nil
	}
	if r.buckets == nil {
		r.buckets = map[[2]string]*bucket{}
	}
	k := [2]string{sae, op}
	b := r.buckets[k]
	if b == nil {
		b = &bucket{}
		r.buckets[k] = b
	}
	now := time.Now()
	if r.now != nil {
		now = r.now()
	}
	keys = max(keys, 1)
	ok, wait := b.take(l, keys, now)
	if ok {
		return nil
	}
	n.log.Debug("rate limit", "sae", sae, "op", op, "keys", keys)
	if wait < 0 {
		return &kms.Error{Kind: kms.ErrRateLimited, Msg: fmt.Sprintf(
			"%s for %d keys exceeds the rate limit of SAE %s (%g keys/s, at most %d keys at once); ask for fewer keys per request",
			op, keys, sae, l.KeysPerSecond, int(l.burst()))}
	}
	return &kms.Error{Kind: kms.ErrRateLimited, Msg: fmt.Sprintf(
		"SAE %s is over its rate limit for %s (%g keys/s, burst %d); slow down and retry in %s",
		sae, op, l.KeysPerSecond, int(l.burst()), wait.Round(time.Millisecond)+time.Millisecond)}
}
