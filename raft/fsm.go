package raft

import (
	"errors"
	"fmt"
	"io"
	"sync"

	hraft "github.com/hashicorp/raft"

	"github.com/qkms/qkms/kms"
)

// Applier applies one kms command inside a store transaction. kms.Machine implements it.
// Apply must be deterministic and all-or-nothing per command; failures are carried in the
// Result, never as a storage error.
type Applier interface {
	Apply(tx kms.Tx, c *kms.Command) *kms.Result
}

// Store is what the FSM needs from the node's state store (store.DB implements it). The
// caller owns it: Node.Close does not close it.
type Store interface {
	// Update runs fn in one read-write transaction that also records index as the applied
	// raft index; fn's writes and the index commit together or not at all.
	Update(index uint64, fn func(kms.Tx) error) error
	// View runs fn in a read-only transaction.
	View(fn func(kms.Tx) error) error
	// AppliedIndex is the index recorded by the last committed Update (or Restore).
	AppliedIndex() (uint64, error)
	// Snapshot writes a consistent copy of the whole state, applied index included.
	Snapshot(w io.Writer) (int64, error)
	// Restore replaces all state with a copy written by Snapshot.
	Restore(r io.Reader) error
}

// ErrEntryDecode marks a log entry whose bytes are not a command batch. It cannot happen for
// entries proposed through this package; it is reported, not applied, so that every node
// skips the entry the same way. An entry of a later version (kms.ErrNewerFormat) is not
// skipped: the node stops before it.
var ErrEntryDecode = errors.New("raft: log entry is not a kms command batch")

// fsm is the hraft.BatchingFSM over a Store. Apply and Restore are called by raft from one
// goroutine; applied is read by other goroutines (reads waiting for a read index).
type fsm struct {
	applier Applier
	store   Store
	// onFatal is called (once, from its own goroutine) when the store fails to commit or an
	// entry is of a later version (kms.ErrNewerFormat): the node's state would fall behind its
	// log, so the node must stop serving.
	onFatal func(error)
	// onApplied, when set, is told the commands of each entry of an Update with their
	// Results, and nil, nil after a Restore (Config.OnApplied).
	onApplied func(cmds []*kms.Command, res []*kms.Result)

	mu      sync.Mutex
	applied uint64        // highest index whose effects are in the store
	changed chan struct{} // closed and replaced whenever applied moves
	fatal   error
}

var _ hraft.BatchingFSM = (*fsm)(nil)

func newFSM(a Applier, s Store, onFatal func(error)) (*fsm, error) {
	idx, err := s.AppliedIndex()
	if err != nil {
		return nil, fmt.Errorf("raft: read applied index of the state store: %w", err)
	}
	return &fsm{applier: a, store: s, onFatal: onFatal, applied: idx, changed: make(chan struct{})}, nil
}

// appliedIndex returns the applied index and a channel closed when it next changes.
func (f *fsm) appliedIndex() (uint64, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied, f.changed
}

func (f *fsm) setApplied(idx uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if idx != f.applied {
		f.applied = idx
		close(f.changed)
		f.changed = make(chan struct{})
	}
}

// Apply implements hraft.FSM for raft versions or paths that do not batch.
func (f *fsm) Apply(l *hraft.Log) interface{} {
	return f.ApplyBatch([]*hraft.Log{l})[0]
}

// ApplyBatch applies every command of every new entry in one store transaction carrying the
// index of the last entry. The response for a command entry is a []*kms.Result with one
// Result per command of the entry, or an error when the entry could not be applied.
// Entries at or below the store's applied index were applied before a restart or are
// contained in a restored snapshot, and are skipped.
func (f *fsm) ApplyBatch(logs []*hraft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	f.mu.Lock()
	applied, fatal := f.applied, f.fatal
	f.mu.Unlock()
	if fatal != nil {
		for i := range out {
			out[i] = fatal
		}
		return out
	}

	type entry struct {
		pos  int
		cmds []*kms.Command
		res  []*kms.Result
	}
	var work []entry
	var last uint64
	var tooNew error // an entry of a later version: apply what precedes it, then stop
	for i, l := range logs {
		if l.Index <= applied {
			continue
		}
		if l.Type != hraft.LogCommand {
			last = l.Index
			continue
		}
		cmds, err := decodeBatch(l.Data)
		if errors.Is(err, kms.ErrNewerFormat) {
			tooNew = fmt.Errorf("raft: log entry %d: %w; upgrade this node to the version the site's other nodes run: it stops here so that its state does not part from theirs", l.Index, err)
			for j := i; j < len(out); j++ {
				out[j] = tooNew
			}
			break
		}
		last = l.Index
		if err != nil {
			out[i] = fmt.Errorf("%w: index %d: %v", ErrEntryDecode, l.Index, err)
			continue
		}
		work = append(work, entry{pos: i, cmds: cmds})
	}
	if tooNew != nil {
		defer f.stop(tooNew)
	}
	if last == 0 {
		return out
	}
	if len(work) == 0 {
		// Only configuration entries: nothing to write. Not recording their index is
		// harmless; a restart replays them and they touch no state.
		f.setApplied(last)
		return out
	}
	err := f.store.Update(last, func(tx kms.Tx) error {
		for i := range work {
			e := &work[i]
			e.res = make([]*kms.Result, len(e.cmds))
			for j, c := range e.cmds {
				e.res[j] = f.applier.Apply(tx, c)
			}
			out[e.pos] = e.res
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("raft: commit entries up to index %d to the state store: %w", last, err)
		for i := range out {
			out[i] = err
		}
		f.stop(err)
		return out
	}
	f.setApplied(last)
	if f.onApplied != nil {
		for _, e := range work {
			if len(e.cmds) > 0 { // nil means a restore
				f.onApplied(e.cmds, e.res)
			}
		}
	}
	return out
}

// stop makes every later apply fail with err and has the node stop serving (onFatal, once).
func (f *fsm) stop(err error) {
	f.mu.Lock()
	first := f.fatal == nil
	if first {
		f.fatal = err
	}
	f.mu.Unlock()
	if first && f.onFatal != nil {
		go f.onFatal(err)
	}
}

// Snapshot implements hraft.FSM. The copy is taken in Persist, concurrently with later
// applies, so it may hold entries past the index raft files it under; that is safe because
// the copy carries its own applied index and those entries are skipped when replayed.
func (f *fsm) Snapshot() (hraft.FSMSnapshot, error) {
	f.mu.Lock()
	fatal := f.fatal
	f.mu.Unlock()
	if fatal != nil {
		// Raft counts the entries this FSM stopped at as applied; a snapshot filed under
		// their index would let a restart skip them.
		return nil, fmt.Errorf("raft: no snapshot of a state machine that stopped: %w", fatal)
	}
	return &fsmSnapshot{store: f.store}, nil
}

// Restore implements hraft.FSM: all state is replaced by the snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.store.Restore(rc); err != nil {
		return fmt.Errorf("raft: restore state store from snapshot: %w", err)
	}
	idx, err := f.store.AppliedIndex()
	if err != nil {
		return fmt.Errorf("raft: read applied index after restore: %w", err)
	}
	f.setApplied(idx)
	if f.onApplied != nil {
		f.onApplied(nil, nil) // all state replaced: every waiter reads again
	}
	return nil
}

type fsmSnapshot struct{ store Store }

func (s *fsmSnapshot) Persist(sink hraft.SnapshotSink) error {
	if _, err := s.store.Snapshot(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("raft: write snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// encodeBatch and decodeBatch are the log entry format: one entry holds a batch of commands,
// in the kms package's versioned encoding.
func encodeBatch(cmds []*kms.Command) ([]byte, error) { return kms.EncodeBatch(cmds) }

func decodeBatch(b []byte) ([]*kms.Command, error) { return kms.DecodeBatch(b) }
