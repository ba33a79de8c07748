package site

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/peer"
)

// peerService answers the other sites' KMEs on the peer channel. Every answer is idempotent:
// comparing a tag twice, storing a reservation twice or pulling twice changes nothing more.
type peerService struct{ n *Node }

func (s peerService) CompareBlocks(ctx context.Context, from string, tags []peer.BlockTag) ([]peer.Verdict, error) {
	n := s.n
	if len(n.upstreams) > 0 {
		n.fetchUpstream(ctx, from, n.unknownBlocks(from, tags))
	}
	out := make([]peer.Verdict, len(tags))
	var verify []*kms.Command
	err := n.rn.ReadStale(func(tx kms.Tx) error { // Verify re-checks the block's state when applied
		for i, t := range tags {
			out[i] = peer.Verdict{BlockID: t.BlockID, Outcome: peer.OutcomeUnknown}
			b, err := tx.Block(from, t.BlockID)
			if err != nil {
				return err
			}
			if b == nil {
				continue
			}
			match := subtle.ConstantTimeCompare(b.Tag, t.Tag) == 1
			switch {
			case b.State == kms.BlockDiscarded:
				out[i].Outcome = peer.OutcomeMismatch
			case match:
				out[i].Outcome = peer.OutcomeMatch
			default:
				out[i].Outcome = peer.OutcomeMismatch
			}
			if b.State == kms.BlockPending {
				verify = append(verify, &kms.Command{Verify: &kms.VerifyCmd{Peer: from, BlockID: t.BlockID, Match: match}})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, c := range verify {
		if _, err := n.propose(ctx, c); err != nil {
			return nil, err
		}
		if !c.Verify.Match {
			n.log.Warn("block differs from the peer's copy; discarded", "peer", from, "block", c.Verify.BlockID)
		}
	}
	return out, nil
}

func (s peerService) PushReservations(ctx context.Context, from string, rs []kms.Reservation) ([]string, []peer.Reject, error) {
	n := s.n
	// Fetches of dec_keys waiting here for these reservations go right behind them.
	ws := n.handoff.claim(rs)
	cmds := make([]*kms.Command, 1, 1+len(ws))
	cmds[0] = &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: from, Reservations: rs}}
	for _, w := range ws {
		cmds = append(cmds, w.fetch)
	}
	res, err := n.proposeAll(ctx, cmds)
	if err == nil {
		n.handoff.settle(ws, res[1:], nil)
		err = res[0].Err
	} else {
		n.handoff.settle(ws, nil, err)
	}
	if err == nil || errorsIsApplied(err) {
		ids := make([]string, len(rs))
		for i := range rs {
			ids[i] = rs[i].KeyID
		}
		return ids, nil, nil
	}
	if len(rs) == 1 {
		reason := peer.RejectInvalid
		if errors.Is(err, kms.ErrNotConfirmed) {
			reason = peer.RejectRetryLater
		}
		return nil, []peer.Reject{{KeyID: rs[0].KeyID, Reason: reason, Detail: err.Error()}}, nil
	}
	// One bad reservation must not hold back the others: store them one by one.
	var acc []string
	var rej []peer.Reject
	for i := range rs {
		a, r, err := s.PushReservations(ctx, from, rs[i:i+1])
		if err != nil {
			return acc, rej, err
		}
		acc, rej = append(acc, a...), append(rej, r...)
	}
	return acc, rej, nil
}

func (s peerService) PullReservations(ctx context.Context, from string, keyIDs []string) ([]kms.Reservation, error) {
	n := s.n
	var out []kms.Reservation
	err := n.rn.Read(ctx, func(tx kms.Tx) error {
		for _, id := range keyIDs {
			r, err := tx.Reservation(id)
			if err != nil {
				return err
			}
			// Only reservations this site issued on its link with the caller, still live.
			if r == nil || r.Owner != n.cfg.KMEID || r.Peer != from || r.State != kms.KeyIssued {
				continue
			}
			out = append(out, *r)
		}
		return nil
	})
	return out, err
}

func (s peerService) RequestBlocks(ctx context.Context, from, requestID string, wantBytes int64) ([]string, error) {
	n := s.n
	var give []string
	err := n.rn.ReadStale(func(tx kms.Tx) error { // Transfer re-checks that each block is untouched
		p, err := tx.Pool(from)
		if err != nil || p == nil {
			return err
		}
		// Keep at least half of what this site owns; give untouched blocks from the back, none
		// larger than what is left of the budget (a site owning one block keeps it).
		budget := min(wantBytes, p.Available/2)
		for i := len(p.Owned) - 1; i >= 0 && budget > 0; i-- {
			b, err := tx.Block(from, p.Owned[i])
			if err != nil {
				return err
			}
			if b == nil || b.Next != 0 || b.State != kms.BlockVerified || int64(b.Bytes) > budget {
				continue
			}
			give = append(give, b.ID)
			budget -= int64(b.Bytes)
		}
		return nil
	})
	if err != nil || len(give) == 0 {
		return nil, err
	}
	res, err := n.propose(ctx, &kms.Command{ReqID: "give/" + from + "/" + requestID,
		Transfer: &kms.TransferCmd{Peer: from, BlockIDs: give, To: from}})
	if err != nil {
		return nil, fmt.Errorf("site: transfer blocks to %s: %w", from, err)
	}
	return res.Transferred, nil
}

func (n *Node) unknownBlocks(peerKME string, tags []peer.BlockTag) []string {
	var ids []string
	n.db.View(func(tx kms.Tx) error {
		for _, t := range tags {
			if b, err := tx.Block(peerKME, t.BlockID); err == nil && b == nil {
				ids = append(ids, t.BlockID)
			}
		}
		return nil
	})
	return ids
}
