package raft

import (
	"context"
	"errors"
	"fmt"

	hraft "github.com/hashicorp/raft"

	"github.com/qkms/qkms/kms"
)

// Read runs fn on a state that reflects every write acknowledged before Read was called
// (linearizable). On the leader: a Barrier once per term makes sure entries of earlier terms
// are applied (Raft thesis §6.4, step 1), fn runs on the local store, and VerifyLeader
// afterwards proves no newer leader could have acknowledged a write meanwhile. On a
// follower: the leader returns its read index (its applied index, confirmed by the same
// checks) and fn runs once the local store has applied at least that much.
//
// fn may run more than once (a leader that lost leadership retries as a follower); only the
// run of a nil-returning Read counts. fn's own error is returned as is.
func (n *Node) Read(ctx context.Context, fn func(kms.Tx) error) error {
	ctx, cancel := n.withDeadline(ctx)
	defer cancel()
	for {
		changed := n.leaderChanged()
		err := n.readOnce(ctx, fn)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !(errors.Is(err, ErrNoLeader) || errors.Is(err, hraft.ErrNotLeader)) {
			return err
		}
		if err := n.awaitRetry(ctx, changed); err != nil {
			if errors.Is(err, ErrUnknownOutcome) { // a read has no outcome to be unsure of
				return fmt.Errorf("raft: read: %w: %w", ErrNoLeader, ctx.Err())
			}
			return fmt.Errorf("raft: read: %w", err)
		}
	}
}

// ReadStale runs fn on the local store without any check: fast, possibly behind the leader.
func (n *Node) ReadStale(fn func(kms.Tx) error) error {
	return n.cfg.Store.View(fn)
}

func (n *Node) readOnce(ctx context.Context, fn func(kms.Tx) error) error {
	if n.raft.State() == hraft.Leader {
		if err := n.ensureBarrier(); err != nil {
			return err
		}
		if err := n.cfg.Store.View(fn); err != nil {
			return err
		}
		if err := n.await(n.raft.VerifyLeader()); err != nil {
			return fmt.Errorf("raft: read: verify leadership: %w (%v)", hraft.ErrNotLeader, err)
		}
		return nil
	}
	resp, err := n.forward(ctx, &wireRequest{Op: opReadIndex})
	if err != nil {
		return err
	}
	if err := n.waitApplied(ctx, resp.Index); err != nil {
		return err
	}
	return n.cfg.Store.View(fn)
}

// ensureBarrier issues a Barrier the first time this node reads as leader in a term, so its
// store holds every entry committed by earlier leaders.
func (n *Node) ensureBarrier() error {
	term := n.raft.CurrentTerm()
	n.barrierMu.Lock()
	done := n.barrierTerm == term
	n.barrierMu.Unlock()
	if done {
		return nil
	}
	if err := n.await(n.raft.Barrier(n.cfg.ForwardTimeout)); err != nil {
		return fmt.Errorf("raft: barrier after gaining leadership: %w (%v)", hraft.ErrNotLeader, err)
	}
	n.barrierMu.Lock()
	n.barrierTerm = term
	n.barrierMu.Unlock()
	return nil
}

// leaderReadIndex is the leader's side of a follower's linearizable read. The applied index
// is used rather than the commit index because entries raft does not hand to the FSM (no-op,
// barrier) would never show up in a follower's applied index; every acknowledged write has
// been applied on the leader, so the applied index covers it.
func (n *Node) leaderReadIndex() (uint64, error) {
	if n.raft.State() != hraft.Leader {
		return 0, hraft.ErrNotLeader
	}
	if err := n.ensureBarrier(); err != nil {
		return 0, err
	}
	idx, _ := n.fsm.appliedIndex()
	if err := n.await(n.raft.VerifyLeader()); err != nil {
		return 0, fmt.Errorf("raft: read index: %w (%v)", hraft.ErrNotLeader, err)
	}
	return idx, nil
}

// AppliedChanged returns a channel that is closed when this node's state store next applies
// log entries: a waiter for some replicated effect re-reads after it fires. Get the channel
// before reading, so that no change between the read and the wait is missed.
func (n *Node) AppliedChanged() <-chan struct{} {
	_, changed := n.fsm.appliedIndex()
	return changed
}

// waitApplied returns once the local store has applied index idx.
func (n *Node) waitApplied(ctx context.Context, idx uint64) error {
	for {
		applied, changed := n.fsm.appliedIndex()
		if applied >= idx {
			return nil
		}
		select {
		case <-changed:
		case <-n.stop:
			return ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("raft: wait for index %d (applied %d): %w", idx, applied, ctx.Err())
		}
	}
}
