package site

import (
	"context"
	"time"

	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/peer"
)

// Reservations reach the slave's site by push: enc_keys hands its new reservations to the push
// loop and waits (at most pushWait) until the peer has stored them, so the matching dec_keys,
// which the master's SAE triggers as soon as it has the key IDs, finds them locally instead of
// pulling them first (a peer round trip, two signatures and a log entry more). The loop sends
// everything queued in one call per peer, so concurrent requests share a round trip (group
// commit for the peer channel). A push that fails or takes longer changes nothing for the
// master: its keys are issued, the reservation waits in the store (pushBacklog) and the peer
// can still pull it on demand.

// pushWait bounds how long enc_keys waits for its reservations to reach the peer.
const pushWait = 500 * time.Millisecond

type pushJob struct {
	rs   []kms.Reservation
	done chan struct{} // closed once the peer answered (or the push failed)
}

// pushAndWait queues reservations for the push loop and waits until they were pushed, ctx
// ends or pushWait passes, whichever comes first.
func (n *Node) pushAndWait(ctx context.Context, rs []kms.Reservation) {
	if len(rs) == 0 {
		return
	}
	job := pushJob{rs: rs, done: make(chan struct{})}
	select {
	case n.push <- job:
	default:
		// Queue full: the reservations stay unpushed in the store until the backlog scan.
		n.pushBacklog.Store(true)
		return
	}
	t := time.NewTimer(pushWait)
	defer t.Stop()
	select {
	case <-job.done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// pushLoop sends queued reservations to their peers, everything waiting in one batch.
func (n *Node) pushLoop() {
	for {
		var jobs []pushJob
		select {
		case <-n.ctx.Done():
			return
		case j := <-n.push:
			jobs = append(jobs, j)
		}
		var rs []kms.Reservation
		rs = append(rs, jobs[0].rs...)
	drain:
		for len(rs) < pushBatch {
			select {
			case j := <-n.push:
				jobs = append(jobs, j)
				rs = append(rs, j.rs...)
			default:
				break drain
			}
		}
		acked := n.pushReservations(rs)
		for _, j := range jobs {
			close(j.done)
		}
		n.recordPushed(acked)
	}
}

// pushReservations sends reservations to their peers and returns the key IDs they stored.
func (n *Node) pushReservations(rs []kms.Reservation) []string {
	byPeer := map[string][]kms.Reservation{}
	for _, r := range rs {
		byPeer[r.Peer] = append(byPeer[r.Peer], r)
	}
	var acked []string
	for p, list := range byPeer {
		c, err := n.peerClient(p)
		if err != nil {
			n.pushBacklog.Store(true)
			n.log.Warn("push reservations: no peer channel", "peer", p, "err", err)
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		acc, rej, err := c.PushReservations(ctx, list)
		cancel()
		if err != nil {
			n.peerFailed(p, err)
			n.pushBacklog.Store(true)
			n.log.Warn("push reservations failed; retrying later, and the peer can pull on demand", "peer", p, "keys", len(list), "err", err)
			continue
		}
		for _, r := range rej {
			n.log.Warn("peer rejected reservation", "peer", p, "key_id", r.KeyID, "reason", r.Reason, "detail", r.Detail)
			if r.Reason == peer.RejectRetryLater {
				n.pushBacklog.Store(true)
			}
		}
		acked = append(acked, acc...)
	}
	return acked
}

// recordPushed records in the site's log that the peer holds these reservations, so they are
// not pushed again after a leader change.
func (n *Node) recordPushed(keyIDs []string) {
	if len(keyIDs) == 0 {
		return
	}
	if _, err := n.propose(n.ctx, &kms.Command{MarkPushed: &kms.MarkPushedCmd{KeyIDs: keyIDs}}); err != nil {
		n.log.Warn("record pushed reservations", "err", err)
	}
}
