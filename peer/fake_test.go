package peer

import (
	"bytes"
	"context"
	"crypto/subtle"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pq"
)

// fakeService is an in-memory site: tags of its blocks, reservations it stores or issued,
// blocks it owns, and a record of the calls it served.
type fakeService struct {
	self string

	mu        sync.Mutex
	calls     int
	froms     []string
	tags      map[string][]byte          // block ID -> tag
	pending   map[string]bool            // blocks ingested but not verified here
	stored    map[string]kms.Reservation // key ID -> reservation (pushed or issued here)
	owned     []string                   // untouched blocks owned here, 1000 bytes each
	transfers map[string][]string        // request ID -> blocks transferred
	responder *pq.Responder              // pending epoch exchange
	epochs    []*pq.Epoch                // confirmed epochs
}

func newFakeService(self string) *fakeService {
	return &fakeService{
		self:      self,
		tags:      map[string][]byte{},
		pending:   map[string]bool{},
		stored:    map[string]kms.Reservation{},
		transfers: map[string][]string{},
	}
}

func (f *fakeService) record(from string) {
	f.calls++
	f.froms = append(f.froms, from)
}

func (f *fakeService) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeService) CompareBlocks(_ context.Context, from string, tags []BlockTag) ([]Verdict, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(from)
	out := make([]Verdict, len(tags))
	for i, t := range tags {
		mine, ok := f.tags[t.BlockID]
		switch {
		case !ok:
			out[i] = Verdict{t.BlockID, OutcomeUnknown}
		case subtle.ConstantTimeCompare(mine, t.Tag) == 1:
			out[i] = Verdict{t.BlockID, OutcomeMatch}
		default:
			out[i] = Verdict{t.BlockID, OutcomeMismatch}
		}
	}
	return out, nil
}

func (f *fakeService) PushReservations(_ context.Context, from string, rs []kms.Reservation) ([]string, []Reject, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(from)
	var acc []string
	var rej []Reject
next:
	for _, r := range rs {
		if old, ok := f.stored[r.KeyID]; ok {
			if reflect.DeepEqual(old, r) {
				acc = append(acc, r.KeyID)
			} else {
				rej = append(rej, Reject{r.KeyID, RejectInvalid, "another reservation holds this key ID"})
			}
			continue
		}
		for _, g := range r.Ranges {
			if f.pending[g.Block] {
				rej = append(rej, Reject{r.KeyID, RejectRetryLater, fmt.Sprintf("block %s not verified here yet", g.Block)})
				continue next
			}
		}
		f.stored[r.KeyID] = r
		acc = append(acc, r.KeyID)
	}
	return acc, rej, nil
}

func (f *fakeService) PullReservations(_ context.Context, from string, keyIDs []string) ([]kms.Reservation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(from)
	var out []kms.Reservation
	for _, id := range keyIDs {
		if r, ok := f.stored[id]; ok && r.Owner == f.self && r.Peer == from {
			out = append(out, r)
		}
	}
	return out, nil
}

func (f *fakeService) RequestBlocks(_ context.Context, from, requestID string, wantBytes int64) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(from)
	if done, ok := f.transfers[requestID]; ok {
		return done, nil
	}
	var moved []string
	for got := int64(0); got < wantBytes && len(f.owned) > 0; got += 1000 {
		moved = append(moved, f.owned[0])
		f.owned = f.owned[1:]
	}
	f.transfers[requestID] = moved
	return moved, nil
}

func (f *fakeService) OfferEpoch(_ context.Context, from string, offer []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(from)
	o, err := pq.ParseOffer(offer)
	if err != nil {
		return nil, err
	}
	rs, reply, err := pq.Respond(from, f.self, o)
	if err != nil {
		return nil, err
	}
	f.responder = rs
	return reply.Marshal(), nil
}

func (f *fakeService) ConfirmEpoch(_ context.Context, from string, confirm []byte) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(from)
	c, err := pq.ParseConfirmation(confirm)
	if err != nil {
		return "", err
	}
	if f.responder == nil {
		return "", pq.ErrWrongExchange
	}
	ep, err := f.responder.Confirm(c, time.Now())
	if err != nil {
		return "", err
	}
	f.epochs = append(f.epochs, ep)
	return ep.ID, nil
}

var _ Service = (*fakeService)(nil)

// tagOf is a stand-in tag; the real one is a keyed MAC computed by the site.
func tagOf(s string) []byte { return bytes.Repeat([]byte(s), 32/len(s)+1)[:32] }
