package site

import (
	"context"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/peer"
)

// Background work runs only on the leader of the site, and restarts from the replicated state
// whenever a node gains leadership: nothing it needs lives only in one node's memory. The
// leader loops go by raft's notifications (leaderChanged), as the push hook does (applied), so
// that the two agree on when this node took over.
const (
	loopTick     = 200 * time.Millisecond
	compareBatch = 256
	// pushBatch: as many reservations per push as the peer accepts in one call. Under load
	// the push loop is what a dec_keys waits for, and each push costs a peer round trip, two
	// signatures and a commit at each site whatever its size (with 512, two 3-node sites at 64
	// keys per request delivered 10-20k keys/s; with 1024, 15-22k).
	pushBatch = peer.MaxReservations
	// pushLinger, pushLingerBelow, pushBusy: see pushLoop. Lingering 2 ms cost 76-88 us of CPU
	// per key at 8 keys per request, 1 ms 85-88 and none 97-105, with the same latency.
	pushLinger      = 2 * time.Millisecond
	pushLingerBelow = 256
	pushBusy        = 10 * time.Millisecond
	expireBatch     = 4096
	rebalanceEvery  = 2 * time.Second
	repushEvery     = 3 * time.Second
	// deferUpdates, deferDelay: the state store commits the entries raft applies together, up
	// to deferUpdates of them or deferDelay after the first (store.WithDeferredCommit): in
	// BenchmarkDeliver 8-14% less CPU per key than a commit per entry, and 4-8% with two
	// 3-node sites, whose nodes apply fewer, larger entries. A crash costs the node the
	// replay of that much of its log at restart.
	deferUpdates = 256
	deferDelay   = 50 * time.Millisecond
	// raftInflight is raft.Config.MaxInflight: the log entries the group-commit loop has in
	// flight. With one, each entry waited for the one before to be applied, and every stage of
	// the pipeline went idle in between. With two (BenchmarkDeliver3 at 8 keys per request, 12
	// alternated pairs): median CPU per key 135 against 154 us and dec_keys p99 45 against 50
	// ms; one node per site, 5 pairs: dec_keys p99 lower in all 5 (by 3-9%), CPU the same.
	raftInflight = 2
	// requestSweepEvery bounds how long an expired request record outlives kms RequestTTL.
	requestSweepEvery = 15 * time.Second
	// rebalanceLow: a site owning less free key than this (bytes), and under a quarter of what
	// the peer owns, asks the peer for blocks.
	rebalanceLow = 1 << 20
)

// leaderChanged is raft.Config.OnLeaderChange: the leader loops start their work at once.
func (n *Node) leaderChanged(leader bool) {
	if !leader {
		n.leading.Store(false)
		return
	}
	n.takeover.Store(true) // before leading: the loops must not miss a quick loss and gain
	n.leading.Store(true)
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *Node) leaderLoops() {
	t := time.NewTicker(loopTick)
	defer t.Stop()
	var lastRebalance, lastRepush time.Time
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-n.kick:
		}
		if !n.leading.Load() {
			continue
		}
		if n.takeover.Swap(false) {
			// Issues applied from here on are queued as they are applied (applied); this
			// finds those applied before this node knew it leads, and those its predecessor
			// committed but never pushed.
			n.requeueUnpushed()
		}
		// Reservations whose push failed wait in the store; retry them with a back-off while the
		// peer is unreachable (the peer can also pull them on demand).
		if n.pushBacklog.Load() && time.Since(lastRepush) > repushEvery {
			lastRepush = time.Now()
			n.pushBacklog.Store(false)
			n.requeueUnpushed()
		}
		n.verifyPending()
		n.refreshEpochs()
		n.expire()
		if time.Since(lastRebalance) > rebalanceEvery {
			lastRebalance = time.Now()
			n.rebalance()
		}
	}
}

// requeueUnpushed queues every live reservation this site issued that the peer has not
// acknowledged yet, after this node became leader.
func (n *Node) requeueUnpushed() {
	var rs []kms.Reservation
	n.db.Unpushed(func(r *kms.Reservation) bool {
		rs = append(rs, *r)
		return true
	})
	for len(rs) > 0 {
		k := min(len(rs), pushBatch)
		n.recordPushed(n.pushReservations(rs[:k]))
		rs = rs[k:]
	}
}

// verifyPending compares the tags of blocks awaiting verification with each peer.
func (n *Node) verifyPending() {
	pending := map[string][]peer.BlockTag{}
	n.db.View(func(tx kms.Tx) error {
		return tx.Pools(func(p *kms.Pool) bool {
			if p.Pending == 0 {
				return true
			}
			// Blocks await verification from their ingest on, so they are the newest: walk
			// back until all of p.Pending is found, then compare the oldest first.
			var tags []peer.BlockTag
			left := p.Pending
			tx.BlocksNewestFirst(p.Peer, func(b *kms.Block) bool {
				if b.State == kms.BlockPending {
					tags = append(tags, peer.BlockTag{BlockID: b.ID, Tag: b.Tag})
					left -= int64(b.Bytes)
				}
				return left > 0
			})
			slices.Reverse(tags)
			if len(tags) > compareBatch {
				tags = tags[:compareBatch]
			}
			if len(tags) > 0 {
				pending[p.Peer] = tags
			}
			return true
		})
	})
	for p, tags := range pending {
		c, err := n.peerClient(p)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		verdicts, err := c.CompareBlocks(ctx, tags)
		cancel()
		if err != nil {
			n.peerFailed(p, err)
			n.log.Debug("compare blocks", "peer", p, "err", err)
			continue
		}
		for _, v := range verdicts {
			if v.Outcome == peer.OutcomeUnknown {
				continue
			}
			match := v.Outcome == peer.OutcomeMatch
			if !match {
				n.log.Warn("block differs from the peer's copy; discarded", "peer", p, "block", v.BlockID)
			}
			if _, err := n.propose(n.ctx, &kms.Command{Verify: &kms.VerifyCmd{Peer: p, BlockID: v.BlockID, Match: match}}); err != nil {
				n.log.Warn("record block verification", "peer", p, "block", v.BlockID, "err", err)
			}
		}
	}
}

func (n *Node) expire() {
	// Look before proposing: an empty Expire would still cost a log entry and its fsync.
	var due []string
	now := time.Now().UTC()
	n.db.View(func(tx kms.Tx) error {
		var err error
		due, err = tx.ExpiredBefore(now, 1)
		return err
	})
	// Request records (kept for retries, with sealed copies of the keys they delivered) expire
	// too; sweep for them now and then even when no reservation is due.
	if len(due) == 0 && time.Since(n.lastSweep) < requestSweepEvery {
		return
	}
	n.lastSweep = time.Now()
	res, err := n.propose(n.ctx, &kms.Command{Time: now, Expire: &kms.ExpireCmd{Limit: expireBatch}})
	if err != nil {
		n.log.Warn("expire keys", "err", err)
		return
	}
	if len(res.Expired) > 0 {
		n.log.Info("keys expired and erased", "count", len(res.Expired))
	}
}

// rebalance asks a peer for blocks when this site owns much less free key than it holds
// for the peer's issuing, so both directions can keep issuing when one drains faster.
func (n *Node) rebalance() {
	for _, peerKME := range n.peerIDs() {
		var own, theirs int64
		n.db.View(func(tx kms.Tx) error {
			p, err := tx.Pool(peerKME)
			if err != nil || p == nil {
				return err
			}
			if own = p.Available; own >= rebalanceLow {
				return nil // enough key of its own: no need to walk the pool's blocks
			}
			return tx.Blocks(peerKME, func(b *kms.Block) bool {
				if b.State == kms.BlockVerified && b.Owner == peerKME && b.Next == 0 {
					theirs += int64(b.Bytes)
				}
				return true
			})
		})
		if theirs == 0 || own*4 >= theirs || own >= rebalanceLow {
			continue
		}
		c, err := n.peerClient(peerKME)
		if err != nil {
			continue
		}
		// The request ID is kept until an answer arrives, so a retry after a lost answer gets
		// the blocks already transferred instead of stranding them at the peer.
		reqID := n.rebalanceReq[peerKME]
		if reqID == "" {
			reqID = uuid.NewString()
			n.rebalanceReq[peerKME] = reqID
		}
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		ids, err := c.RequestBlocks(ctx, reqID, (theirs-own)/2)
		cancel()
		if err != nil {
			n.peerFailed(peerKME, err)
			continue
		}
		if len(ids) == 0 {
			delete(n.rebalanceReq, peerKME)
			continue
		}
		if _, err := n.propose(n.ctx, &kms.Command{ReqID: "take/" + peerKME + "/" + reqID, Transfer: &kms.TransferCmd{Peer: peerKME, BlockIDs: ids, To: n.cfg.KMEID}}); err != nil {
			n.log.Warn("record block transfer", "peer", peerKME, "err", err)
		} else {
			delete(n.rebalanceReq, peerKME)
			n.log.Info("rebalanced block ownership", "peer", peerKME, "blocks", len(ids))
		}
	}
}

func (n *Node) peerIDs() []string {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	ids := make([]string, len(n.cfg.Peers))
	for i, p := range n.cfg.Peers {
		ids[i] = p.KMEID
	}
	return ids
}
