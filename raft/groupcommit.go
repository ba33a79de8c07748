package raft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/qkms/qkms/kms"
)

// Group commit: the cost of a raft entry is dominated by two fsyncs (log store, state store)
// and a replication round trip, not by its size. Concurrent proposals are therefore collected
// by one loop into one entry: while MaxInflight entries are outstanding, new proposals queue,
// and the next entry takes everything queued (up to MaxBatch). No timer is involved, so a lone
// proposal is not delayed, and batches grow with load (the "natural batching" of Vault's and
// etcd's proposal pipelines).

type proposal struct {
	ctx  context.Context
	cmds []*kms.Command // consecutive in one entry, in this order
	done chan outcome   // buffered 1
}

type outcome struct {
	res []*kms.Result // one per command
	err error
}

// retryInterval bounds how long a retry waits for news of a leader.
const retryInterval = 50 * time.Millisecond

// Propose replicates c and returns its Result once it has been applied on the leader. On a
// follower the command is forwarded to the leader. Errors wrapping ErrNoLeader mean c had no
// effect; ErrUnknownOutcome (or a context error) means it may have: retry with the same
// ReqID, which the state machine deduplicates. Propose itself retries until ctx ends: always
// when c certainly had no effect, after an unknown outcome only when c has a ReqID. A context
// without deadline gets Config.ProposeTimeout.
func (n *Node) Propose(ctx context.Context, c *kms.Command) (*kms.Result, error) {
	if c == nil {
		return nil, fmt.Errorf("raft: propose nil command: %w", kms.ErrBadRequest)
	}
	res, err := n.ProposeAll(ctx, []*kms.Command{c})
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// ProposeAll is Propose for commands that must be applied one right after the other, in this
// order, with nothing between them: they travel consecutively in one log entry. Each still
// succeeds or fails on its own (its Result). Retries are as for Propose, after an unknown
// outcome only when every command has a ReqID.
func (n *Node) ProposeAll(ctx context.Context, cmds []*kms.Command) ([]*kms.Result, error) {
	if len(cmds) == 0 || slices.Contains(cmds, nil) {
		return nil, fmt.Errorf("raft: propose nil command: %w", kms.ErrBadRequest)
	}
	ctx, cancel := n.withDeadline(ctx)
	defer cancel()
	for {
		changed := n.leaderChanged()
		res, err := n.proposeOnce(ctx, cmds)
		if err == nil {
			return res, nil
		}
		if ctx.Err() != nil || !retryable(err, cmds) {
			return nil, err
		}
		if err := n.awaitRetry(ctx, changed); err != nil {
			return nil, fmt.Errorf("raft: propose: %w", err)
		}
	}
}

// retryable says whether proposing cmds again is safe and may succeed.
func retryable(err error, cmds []*kms.Command) bool {
	switch {
	case errors.Is(err, ErrClosed):
		return false
	case errors.Is(err, ErrNoLeader), errors.Is(err, hraft.ErrNotLeader):
		return true
	case errors.Is(err, ErrUnknownOutcome):
		return !slices.ContainsFunc(cmds, func(c *kms.Command) bool { return c.ReqID == "" })
	}
	return false
}

// awaitRetry waits for a leader change or a short interval, whichever comes first.
func (n *Node) awaitRetry(ctx context.Context, changed <-chan struct{}) error {
	t := time.NewTimer(retryInterval)
	defer t.Stop()
	select {
	case <-changed:
	case <-t.C:
	case <-n.stop:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrUnknownOutcome, ctx.Err())
	}
	return nil
}

func (n *Node) proposeOnce(ctx context.Context, cmds []*kms.Command) ([]*kms.Result, error) {
	select {
	case <-n.stop: // checked first: select below picks at random among ready cases
		return nil, ErrClosed
	default:
	}
	p := &proposal{ctx: ctx, cmds: cmds, done: make(chan outcome, 1)}
	select {
	case n.proposals <- p:
	case <-n.stop:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, fmt.Errorf("raft: propose: %w", ctx.Err())
	}
	select {
	case o := <-p.done:
		return o.res, o.err
	case <-n.stop:
		return nil, fmt.Errorf("%w: %w", ErrUnknownOutcome, ErrClosed)
	case <-ctx.Done():
		// Queued or in flight: it may still be applied.
		return nil, fmt.Errorf("raft: propose: %w: %w", ErrUnknownOutcome, ctx.Err())
	}
}

// commitLoop turns queued proposals into log entries, at most MaxInflight at a time.
func (n *Node) commitLoop() {
	defer n.wg.Done()
	slots := make(chan struct{}, n.cfg.MaxInflight)
	for {
		select {
		case slots <- struct{}{}:
		case <-n.stop:
			return
		}
		var batch []*proposal
		select {
		case p := <-n.proposals:
			batch = append(batch, p)
		case <-n.stop:
			return
		}
		cmds := len(batch[0].cmds)
	drain:
		for cmds < n.cfg.MaxBatch { // a group may overshoot it: it is never split
			select {
			case p := <-n.proposals:
				batch = append(batch, p)
				cmds += len(p.cmds)
			default:
				break drain
			}
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer func() { <-slots }()
			n.commit(batch)
		}()
	}
}

// commit proposes one batch as one log entry, here or at the leader, and hands every caller
// its own Result.
func (n *Node) commit(batch []*proposal) {
	live := batch[:0]
	for _, p := range batch {
		// A caller that gave up before its command was sent is told nothing (it already
		// returned an unknown outcome) and its command is not proposed.
		if p.ctx.Err() == nil {
			live = append(live, p)
		}
	}
	if len(live) == 0 {
		return
	}
	var cmds []*kms.Command
	for _, p := range live {
		cmds = append(cmds, p.cmds...)
	}
	res, err := n.proposeBatch(cmds)
	if err == nil && len(res) != len(cmds) {
		err = fmt.Errorf("%w: raft: %d results for %d commands", ErrUnknownOutcome, len(res), len(cmds))
	}
	for _, p := range live {
		if err != nil {
			p.done <- outcome{err: err}
			continue
		}
		k := len(p.cmds)
		p.done <- outcome{res: res[:k:k]}
		res = res[k:]
	}
}

// proposeBatch replicates cmds as one log entry, forwarding to the leader when this node is
// not the leader.
func (n *Node) proposeBatch(cmds []*kms.Command) ([]*kms.Result, error) {
	data, err := encodeBatch(cmds)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", kms.ErrBadRequest, err)
	}
	if n.raft.State() == hraft.Leader {
		res, err := n.applyEntry(data)
		if !errors.Is(err, hraft.ErrNotLeader) {
			return res, err
		}
	}
	// A forward to a leader that died would hold the loop until ForwardTimeout; give up as
	// soon as another leader is observed (the outcome is then unknown, and callers retry).
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ForwardTimeout)
	defer cancel()
	changed := n.leaderChanged()
	go func() {
		select {
		case <-changed:
			cancel()
		case <-ctx.Done():
		}
	}()
	resp, err := n.forward(ctx, &wireRequest{Op: opPropose, Batch: data})
	if err != nil {
		return nil, err
	}
	res := make([]*kms.Result, len(resp.Results))
	for i := range resp.Results {
		res[i] = fromWireResult(&resp.Results[i])
	}
	return res, nil
}

// applyEntry appends one encoded batch to the log on this (leader) node and waits until the
// FSM applied it here. Errors wrap hraft.ErrNotLeader when the entry was certainly not
// appended, ErrUnknownOutcome when it may have been.
func (n *Node) applyEntry(data []byte) ([]*kms.Result, error) {
	f := n.raft.Apply(data, n.cfg.ForwardTimeout)
	if err := n.await(f); err != nil {
		switch {
		case errors.Is(err, hraft.ErrNotLeader), errors.Is(err, hraft.ErrEnqueueTimeout):
			return nil, fmt.Errorf("raft: apply: %w", hraft.ErrNotLeader)
		default: // ErrLeadershipLost, ErrRaftShutdown, ...
			return nil, fmt.Errorf("%w: %w", ErrUnknownOutcome, err)
		}
	}
	switch r := f.Response().(type) {
	case []*kms.Result:
		return r, nil
	case error:
		if errors.Is(r, ErrEntryDecode) {
			return nil, fmt.Errorf("%w: %w", kms.ErrBadRequest, r)
		}
		return nil, fmt.Errorf("%w: %w", ErrUnknownOutcome, r)
	default:
		return nil, fmt.Errorf("%w: raft: unexpected FSM response %T", ErrUnknownOutcome, r)
	}
}

// withDeadline gives ctx the node's ProposeTimeout unless the caller set a deadline already.
func (n *Node) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, n.cfg.ProposeTimeout)
}
