package site

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/qkms/qkms/kms"
)

// Handoff: a dec_keys that overtook the push of its reservations waits for them (see
// ensureReservations). Without help it would then propose its Fetch, a second trip through the
// site's log after the PeerReserve that stored them. Instead it leaves its Fetch with the
// node's handoffs while it waits; the push, arriving at this node, claims every waiting Fetch
// whose reservations it carries, and proposes the Fetches right behind its PeerReserve, in the
// same log entry (raft.Node.ProposeAll). The dec_keys then answers as soon as that entry is
// applied. A Fetch that fails there changes nothing (kms.Machine applies commands
// all-or-nothing and records no failed request), so the dec_keys then goes its ordinary way:
// pull what is still missing and propose the Fetch itself, under the same request ID, which
// also covers a handed-off Fetch whose outcome is unknown.

// Waiter states: a waiter is claimed by one push or withdrawn by its dec_keys, never both.
const (
	waiting int32 = iota
	claimed
	withdrawn
)

// fetchWaiter is a dec_keys waiting at this node for the push of its reservations.
type fetchWaiter struct {
	fetch   *kms.Command // its Fetch, request ID included
	missing []string     // the key IDs it waits for: all of the Fetch's, then those not stored (narrow)
	state   atomic.Int32
	done    chan handedOff // buffered 1: the claiming push sends once
	// wake (buffered 1) is signalled when an applied PeerReserve stored one of the missing
	// reservations, wherever it was pushed or pulled (handoffs.applied).
	wake chan struct{}
}

// handedOff is what became of a claimed waiter's Fetch: its Result, or the error of the
// proposal that carried it.
type handedOff struct {
	res *kms.Result
	err error
}

// delivered is the Result of a handed-off Fetch that delivered its keys, and nil when it
// failed or its outcome is unknown.
func (o handedOff) delivered() *kms.Result {
	if o.err != nil || o.res.Err != nil {
		return nil
	}
	return o.res
}

// signal wakes the waiter to read the store again (once, however often it is signalled
// before it reads).
func (w *fetchWaiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default: // already signalled
	}
}

// withdraw ends the wait unclaimed; false means a push claimed it first, and its outcome
// will come on done.
func (w *fetchWaiter) withdraw() bool { return w.state.CompareAndSwap(waiting, withdrawn) }

// outcome waits for a claimed waiter's Fetch. It returns the Result when the Fetch delivered
// keys, and nil when the caller must go on itself (the Fetch failed, or its outcome is unknown
// and the caller's retry under the same request ID settles it).
func (w *fetchWaiter) outcome(ctx context.Context) (*kms.Result, error) {
	select {
	case o := <-w.done:
		return o.delivered(), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: the fetch went with the push of its reservations and its outcome is unknown; retry later", kms.ErrNotConfirmed)
	}
}

// handoffs holds this node's waiting dec_keys by the key IDs they wait for.
type handoffs struct {
	mu   sync.Mutex
	byID map[string][]*fetchWaiter
}

// add registers a dec_keys waiting for missing; remove it when the wait ends.
func (h *handoffs) add(fetch *kms.Command, missing []string) *fetchWaiter {
	w := &fetchWaiter{fetch: fetch, missing: missing, done: make(chan handedOff, 1), wake: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byID == nil {
		h.byID = map[string][]*fetchWaiter{}
	}
	for _, id := range missing {
		h.byID[id] = append(h.byID[id], w)
	}
	return w
}

// narrow makes a waiting w wait for missing only: a push need carry no reservation stored
// already to claim it.
func (h *handoffs) narrow(w *fetchWaiter, missing []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.state.Load() != waiting {
		return
	}
	h.removeLocked(w)
	w.missing = missing
	for _, id := range missing {
		h.byID[id] = append(h.byID[id], w)
	}
}

func (h *handoffs) remove(w *fetchWaiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(w)
}

func (h *handoffs) removeLocked(w *fetchWaiter) {
	for _, id := range w.missing {
		ws := slices.DeleteFunc(h.byID[id], func(x *fetchWaiter) bool { return x == w })
		if len(ws) == 0 {
			delete(h.byID, id)
		} else {
			h.byID[id] = ws
		}
	}
}

// claim takes the waiters every one of whose missing reservations is among rs: their Fetches
// can be applied right after rs are stored.
func (h *handoffs) claim(rs []kms.Reservation) []*fetchWaiter {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.byID) == 0 {
		return nil
	}
	var pushed map[string]bool // built on the first candidate
	var out []*fetchWaiter
	for i := range rs {
		for _, w := range h.byID[rs[i].KeyID] {
			if w.state.Load() != waiting {
				continue
			}
			if pushed == nil {
				pushed = make(map[string]bool, len(rs))
				for j := range rs {
					pushed[rs[j].KeyID] = true
				}
			}
			if !slices.ContainsFunc(w.missing, func(id string) bool { return !pushed[id] }) &&
				w.state.CompareAndSwap(waiting, claimed) {
				out = append(out, w)
			}
		}
	}
	for _, w := range out {
		h.removeLocked(w)
	}
	return out
}

// applied wakes the waiters for reservations that applied commands stored
// (raft.Config.OnApplied). It runs once the state store applied them, so a woken waiter
// that reads the store (MissingReservations, or any read, which commits deferred updates
// first) finds them. A PeerReserve that refused some reservation wakes its
// waiters too; they read the store and find what is really there. nil (a snapshot replaced
// the state) wakes every waiter.
func (h *handoffs) applied(cmds []*kms.Command) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.byID) == 0 {
		return
	}
	if cmds == nil {
		for _, ws := range h.byID {
			for _, w := range ws {
				w.signal()
			}
		}
		return
	}
	for _, c := range cmds {
		if c.PeerReserve == nil {
			continue
		}
		for i := range c.PeerReserve.Reservations {
			for _, w := range h.byID[c.PeerReserve.Reservations[i].KeyID] {
				w.signal()
			}
		}
	}
}

// settle hands claimed waiters the Results of their Fetches (res[i] for ws[i]), or err.
func (h *handoffs) settle(ws []*fetchWaiter, res []*kms.Result, err error) {
	for i, w := range ws {
		if err != nil {
			w.done <- handedOff{err: err}
		} else {
			w.done <- handedOff{res: res[i]}
		}
	}
}
