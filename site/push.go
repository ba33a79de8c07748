package site

import (
	"context"
	"time"

	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/peer"
)

// Reservations reach the slave's site by push: the site's leader hands the reservations of
// each Issue it applies to the push loop (applied), and enc_keys answers at once. The loop
// sends everything queued in one call per peer, so concurrent requests share a round trip and
// a signature (group commit for the peer channel). The matching dec_keys, which the master's
// SAE triggers once it has passed the key IDs to its partner, usually finds the reservations
// stored; when it overtakes the push it waits for it (pushGrace, see ensureReservations)
// before pulling. A push that fails changes nothing for the master: its keys are issued, the
// reservation waits in the store (pushBacklog) and the peer can still pull it on demand.

// applied is raft.Config.OnApplied. It wakes the dec_keys waiting here for pushed
// reservations (handoff.go) and, on the leader, queues for push the reservations of every
// Issue the site committed, whichever node's enc_keys proposed it: one push loop per site
// then batches them all. With enc_keys spread over three nodes, each node had pushed its
// own, in three times as many pushes (each a round trip, two ML-DSA signatures and a log
// entry at each site). A node that loses leadership before applying leaves its reservations
// unpushed in the store, where the next leader finds them (requeueUnpushed).
func (n *Node) applied(cmds []*kms.Command, res []*kms.Result) {
	n.handoff.applied(cmds)
	if !n.leading.Load() {
		return
	}
	for i, c := range cmds {
		if c.Issue != nil && res[i] != nil && res[i].Err == nil {
			n.queuePush(res[i].Reservations)
		}
	}
}

// queuePush hands reservations to the push loop without waiting for the peer.
func (n *Node) queuePush(rs []kms.Reservation) {
	if len(rs) == 0 {
		return
	}
	select {
	case n.push <- rs:
	default:
		// Queue full: the reservations stay unpushed in the store until the backlog scan.
		n.pushBacklog.Store(true)
	}
}

// pushLoop sends queued reservations to their peers, everything waiting in one batch.
//
// Under load it also lingers: a push costs a round trip, an ML-DSA signature at each end and a
// log entry at each site whatever its size, so when the last push was sent less than pushBusy
// ago, the loop waits up to pushLinger for more reservations before sending fewer than
// pushLingerBelow. In BenchmarkDeliver this cut the pushes by about 40% and the CPU a key
// costs by 7-15% with dec_keys latency unchanged (docs/benchmarks.md). After a quiet spell a
// push goes at once, so a lone request does not wait.
func (n *Node) pushLoop() {
	var last time.Time // when the last push was sent
	for {
		var rs []kms.Reservation
		select {
		case <-n.ctx.Done():
			return
		case j := <-n.push:
			rs = append(rs, j...)
		}
		linger := time.Duration(0)
		if time.Since(last) < pushBusy {
			linger = pushLinger
		}
		rs = n.collectPushes(rs, linger)
		last = time.Now()
		// Recording the acknowledgement is a commit at this site; it must not hold the next push,
		// which dec_keys at the peer may be waiting for.
		if acked := n.pushReservations(rs); len(acked) > 0 {
			select {
			case n.pushed <- acked:
			case <-n.ctx.Done():
				return
			}
		}
	}
}

// collectPushes adds what else is queued to rs, up to pushBatch, and waits up to linger for
// more while rs is under pushLingerBelow.
func (n *Node) collectPushes(rs []kms.Reservation, linger time.Duration) []kms.Reservation {
	var deadline <-chan time.Time
	for len(rs) < pushBatch {
		select {
		case j := <-n.push:
			rs = append(rs, j...)
			continue
		default:
		}
		if linger <= 0 || len(rs) >= pushLingerBelow {
			return rs
		}
		if deadline == nil {
			t := time.NewTimer(linger)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case j := <-n.push:
			rs = append(rs, j...)
		case <-deadline:
			return rs
		case <-n.ctx.Done():
			return rs
		}
	}
	return rs
}

// markLoop records the pushes the peer acknowledged, what is waiting (up to a few pushes'
// worth) in one MarkPushed.
func (n *Node) markLoop() {
	for {
		var ids []string
		select {
		case <-n.ctx.Done():
			return
		case j := <-n.pushed:
			ids = append(ids, j...)
		}
	drain:
		for len(ids) < 4*pushBatch {
			select {
			case j := <-n.pushed:
				ids = append(ids, j...)
			default:
				break drain
			}
		}
		n.recordPushed(ids)
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
			n.observeUnsent(p, len(list))
			n.pushBacklog.Store(true)
			n.log.Warn("push reservations: no peer channel", "peer", p, "err", err)
			continue
		}
		for len(list) > 0 {
			chunk := list[:min(len(list), peer.MaxReservations)] // the batch may overshoot pushBatch
			list = list[len(chunk):]
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			start := time.Now()
			acc, rej, err := c.PushReservations(ctx, chunk)
			cancel()
			n.observePush(p, len(chunk), len(acc), len(rej), time.Since(start), err)
			if err != nil {
				n.observeUnsent(p, len(list)) // the rest of the batch is not sent either
				n.peerFailed(p, err)
				n.pushBacklog.Store(true)
				n.log.Warn("push reservations failed; retrying later, and the peer can pull on demand", "peer", p, "keys", len(chunk)+len(list), "err", err)
				break
			}
			for _, r := range rej {
				n.log.Warn("peer rejected reservation", "peer", p, "key_id", r.KeyID, "reason", r.Reason, "detail", r.Detail)
				if r.Reason == peer.RejectRetryLater {
					n.pushBacklog.Store(true)
				}
			}
			acked = append(acked, acc...)
		}
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
