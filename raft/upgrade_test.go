package raft

import (
	"bytes"
	"errors"
	"io"
	"testing"

	hraft "github.com/hashicorp/raft"

	"github.com/qkms/qkms/kms"
)

// TestApplyStopsAtNewerEntry: an entry of a later format version is neither applied nor
// skipped. The entries before it are applied, the applied index stops just before it, the node
// is told to stop, and every later batch fails the same way, so a restart with an upgraded
// binary applies the entry and everything after it.
func TestApplyStopsAtNewerEntry(t *testing.T) {
	s := newMemStore()
	stopped := make(chan error, 1)
	f, err := newFSM(&countApplier{}, s, func(err error) { stopped <- err })
	if err != nil {
		t.Fatal(err)
	}
	good := func(id string) []byte {
		b, err := encodeBatch([]*kms.Command{ingest(id, 1)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	newer := []byte{99, 0} // batch version 99
	out := f.ApplyBatch([]*hraft.Log{
		{Index: 1, Type: hraft.LogCommand, Data: good("a")},
		{Index: 2, Type: hraft.LogCommand, Data: newer},
		{Index: 3, Type: hraft.LogCommand, Data: good("b")},
	})
	if _, ok := out[0].([]*kms.Result); !ok {
		t.Fatalf("entry 1: %v, want results", out[0])
	}
	for i := 1; i < 3; i++ {
		if err, ok := out[i].(error); !ok || !errors.Is(err, kms.ErrNewerFormat) {
			t.Fatalf("entry %d: %v, want ErrNewerFormat", i+1, out[i])
		}
	}
	if idx, _ := f.appliedIndex(); idx != 1 {
		t.Fatalf("applied index %d, want 1 (the entry before the newer one)", idx)
	}
	if got := s.available("KME-B"); got != 1 {
		t.Fatalf("available %d: want only entry 1's block", got)
	}
	if err := <-stopped; !errors.Is(err, kms.ErrNewerFormat) {
		t.Fatalf("node stopped with %v", err)
	}
	out = f.ApplyBatch([]*hraft.Log{{Index: 4, Type: hraft.LogCommand, Data: good("c")}})
	if err, ok := out[0].(error); !ok || !errors.Is(err, kms.ErrNewerFormat) {
		t.Fatalf("after stopping: %v", out[0])
	}
	if idx, _ := f.appliedIndex(); idx != 1 || s.available("KME-B") != 1 {
		t.Fatalf("an entry after the newer one was applied: index %d", idx)
	}
	// Raft counts entries 2 and 3 as applied: a snapshot filed under their index would let a
	// restart skip them.
	if _, err := f.Snapshot(); !errors.Is(err, kms.ErrNewerFormat) {
		t.Fatalf("snapshot after stopping: %v", err)
	}
}

// TestLeaderRefusesUnreadableForward: a leader does not append a forwarded batch its own state
// machine cannot read (a follower of a later version), so the site's nodes never stop at it.
func TestLeaderRefusesUnreadableForward(t *testing.T) {
	n := singleLeader(t)
	last := n.raft.LastIndex()
	for _, batch := range [][]byte{{99, 0}, {3, 1, 42, 0}, {7}} {
		resp := n.fwdSrv.handle(&wireRequest{Op: opPropose, Batch: batch})
		if err := fromWireError(resp.Err); !errors.Is(err, ErrEntryDecode) {
			t.Fatalf("batch %v: %v, want ErrEntryDecode", batch, err)
		}
	}
	if got := n.raft.LastIndex(); got != last {
		t.Fatalf("log grew from %d to %d", last, got)
	}
	if _, err := n.Propose(ctxT(t), ingest("after", 1)); err != nil {
		t.Fatalf("the leader stopped serving: %v", err)
	}
}

// After a snapshot replaced all state, OnApplied is told so with nil: a waiter cannot know
// which commands the snapshot covered, so it must read again.
func TestOnAppliedAfterRestore(t *testing.T) {
	src := newMemStore()
	f, err := newFSM(&countApplier{}, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := encodeBatch([]*kms.Command{ingest("a", 1)})
	if err != nil {
		t.Fatal(err)
	}
	var heard [][]*kms.Command
	f.onApplied = func(cmds []*kms.Command, _ []*kms.Result) { heard = append(heard, cmds) }
	f.ApplyBatch([]*hraft.Log{{Index: 1, Type: hraft.LogCommand, Data: b}})
	var img bytes.Buffer
	if _, err := src.Snapshot(&img); err != nil {
		t.Fatal(err)
	}
	if err := f.Restore(io.NopCloser(&img)); err != nil {
		t.Fatal(err)
	}
	if len(heard) != 2 || len(heard[0]) != 1 || heard[1] != nil {
		t.Fatalf("heard %v, want the ingest, then nil for the restore", heard)
	}
}
