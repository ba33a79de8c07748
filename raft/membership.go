package raft

import (
	"context"
	"errors"
	"fmt"

	hraft "github.com/hashicorp/raft"
)

// ErrJoinRefused: the node asked to join could not be reached over mutual TLS with the
// site's CA; it was not added.
var ErrJoinRefused = errors.New("raft: join refused")

// Member is one server of the site's raft configuration.
type Member struct {
	ID     string
	Addr   string
	Voter  bool
	Leader bool
}

// Join adds node id, reachable at addr (its internal listener), as a voter. It may be called
// on any node; followers forward it to the leader. Joining a member already present with
// the same address is a no-op. The new node must present a certificate of the site's CA, or
// raft cannot reach it.
func (n *Node) Join(ctx context.Context, id, addr string) error {
	if id == "" || addr == "" {
		return errors.New("raft: join: node ID and address are required")
	}
	return n.membership(ctx, &wireRequest{Op: opJoin, ID: id, Addr: addr}, func() error {
		// Adding a voter that cannot be reached would leave a small site without quorum
		// (Raft thesis §4.2.1), so first prove the node answers with a certificate of the
		// site's CA.
		c, err := n.sl.dial(ctx, addr, protoForward, n.cfg.ForwardTimeout)
		if err != nil {
			return fmt.Errorf("%w: node %s at %s is unreachable or its certificate is not from this site's CA: %w", ErrJoinRefused, id, addr, err)
		}
		_ = c.Close()
		return n.raft.AddVoter(hraft.ServerID(id), hraft.ServerAddress(addr), 0, n.cfg.ForwardTimeout).Error()
	})
}

// Remove takes node id out of the site. Followers forward it to the leader.
func (n *Node) Remove(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("raft: remove: node ID is required")
	}
	return n.membership(ctx, &wireRequest{Op: opRemove, ID: id}, func() error {
		return n.raft.RemoveServer(hraft.ServerID(id), 0, n.cfg.ForwardTimeout).Error()
	})
}

func (n *Node) membership(ctx context.Context, req *wireRequest, local func() error) error {
	ctx, cancel := n.withDeadline(ctx)
	defer cancel()
	for {
		changed := n.leaderChanged()
		var err error
		if n.raft.State() == hraft.Leader {
			err = local()
		} else {
			_, err = n.forward(ctx, req)
		}
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !(errors.Is(err, ErrNoLeader) || errors.Is(err, hraft.ErrNotLeader)) {
			return fmt.Errorf("raft: %s %s: %w", req.Op, req.ID, err)
		}
		if err := n.awaitRetry(ctx, changed); err != nil {
			return fmt.Errorf("raft: %s %s: %w", req.Op, req.ID, err)
		}
	}
}

// Members lists the site's raft configuration.
func (n *Node) Members() ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft: read configuration: %w", err)
	}
	_, leader := n.raft.LeaderWithID()
	var out []Member
	for _, s := range f.Configuration().Servers {
		out = append(out, Member{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == hraft.Voter, Leader: s.ID == leader})
	}
	return out, nil
}

// Leader returns the current leader as known here; empty when there is none.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this node is the leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == hraft.Leader }

// State is this node's raft state: "Follower", "Candidate", "Leader" or "Shutdown".
func (n *Node) State() string { return n.raft.State().String() }

// ID is this node's ID; Addr its advertised internal address.
func (n *Node) ID() string   { return n.cfg.ID }
func (n *Node) Addr() string { return string(n.transport.LocalAddr()) }

// Stats returns raft's counters (term, indexes, state, ...) plus the FSM's applied index.
func (n *Node) Stats() map[string]string {
	s := n.raft.Stats()
	idx, _ := n.fsm.appliedIndex()
	s["fsm_applied_index"] = fmt.Sprint(idx)
	return s
}

// AppliedIndex is the highest log index whose effects are in the local store.
func (n *Node) AppliedIndex() uint64 {
	idx, _ := n.fsm.appliedIndex()
	return idx
}
