package raft

import (
	"errors"
	"fmt"

	hraft "github.com/hashicorp/raft"
)

// Snapshot takes a snapshot now (an operator's request) and compacts the log behind it.
// Having nothing new since the last snapshot is not an error.
func (n *Node) Snapshot() error {
	if err := n.raft.Snapshot().Error(); err != nil && !errors.Is(err, hraft.ErrNothingNewToSnapshot) {
		return fmt.Errorf("raft: snapshot: %w", err)
	}
	return nil
}

// onlyNonCommands reports whether the log still holds entries [from, to] and none of them
// is a command. Raft snapshots at its own applied index, which counts entries the FSM never
// sees (no-op, barrier); a store behind the snapshot only by such entries is not behind.
func (n *Node) onlyNonCommands(from, to uint64) bool {
	const maxScan = 4096
	if to-from >= maxScan {
		return false
	}
	for i := from; i <= to; i++ {
		var l hraft.Log
		if err := n.logs.GetLog(i, &l); err != nil || l.Type == hraft.LogCommand {
			return false
		}
	}
	return true
}

// recoverState checks the state store against the raft directory before raft starts. Raft
// runs with NoSnapshotRestoreOnStart because the store is durable and knows its applied
// index; the snapshot is restored only when the store is behind it (the store was lost or
// replaced by an older copy). A store that has applied entries while the raft directory is
// empty belongs to some other raft history; serving from it could diverge, so the node
// refuses to start.
func (n *Node) recoverState(hasState bool) error {
	applied, _ := n.fsm.appliedIndex()
	if !hasState {
		if applied > 0 {
			return fmt.Errorf("raft: the state store has applied log index %d but the raft directory %s holds no raft state: "+
				"the data directory is inconsistent; restore the raft directory or start this node with an empty state store", applied, n.cfg.Dir)
		}
		return nil
	}
	metas, err := n.snaps.List()
	if err != nil {
		return fmt.Errorf("raft: list snapshots in %s: %w", n.cfg.Dir, err)
	}
	if len(metas) == 0 || metas[0].Index <= applied || n.onlyNonCommands(applied+1, metas[0].Index) {
		return nil
	}
	meta, rc, err := n.snaps.Open(metas[0].ID)
	if err != nil {
		return fmt.Errorf("raft: open snapshot %s: %w", metas[0].ID, err)
	}
	n.log.Warn("raft: state store is behind the last snapshot; restoring it", "applied", applied, "snapshot_index", meta.Index)
	if err := n.fsm.Restore(rc); err != nil {
		return err
	}
	return nil
}
