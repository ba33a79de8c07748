package site

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/qkms/qkms/kms"
)

func resvs(ids ...string) []kms.Reservation {
	rs := make([]kms.Reservation, len(ids))
	for i, id := range ids {
		rs[i].KeyID = id
	}
	return rs
}

// A push claims a waiting Fetch only when it carries every reservation the Fetch waits for,
// and a waiter is either claimed or withdrawn, never both.
func TestHandoffClaim(t *testing.T) {
	var h handoffs
	fetch := func() *kms.Command { return &kms.Command{Fetch: &kms.FetchCmd{}} }
	w1 := h.add(fetch(), []string{"a", "b"})
	w2 := h.add(fetch(), []string{"b"})
	w3 := h.add(fetch(), []string{"c"})

	if got := h.claim(resvs("a", "x")); len(got) != 0 {
		t.Fatalf("a push without b claimed %d waiters", len(got))
	}
	got := h.claim(resvs("b", "a"))
	if len(got) != 2 || !(got[0] == w1 && got[1] == w2 || got[0] == w2 && got[1] == w1) {
		t.Fatalf("claimed %v, want w1 and w2", got)
	}
	if w1.withdraw() || w2.withdraw() {
		t.Fatal("a claimed waiter could be withdrawn")
	}
	if again := h.claim(resvs("a", "b")); len(again) != 0 {
		t.Fatalf("waiters claimed twice: %d", len(again))
	}
	if !w3.withdraw() {
		t.Fatal("an unclaimed waiter could not be withdrawn")
	}
	if got := h.claim(resvs("c")); len(got) != 0 {
		t.Fatal("a withdrawn waiter was claimed")
	}
	h.remove(w3)
	if len(h.byID) != 0 {
		t.Fatalf("handoffs left behind: %v", h.byID)
	}

	// settle hands each claimed waiter its own Result, or the proposal's error.
	h.settle(got, []*kms.Result{{Keys: []kms.Key{{ID: "1"}}}, {Keys: []kms.Key{{ID: "2"}}}}, nil)
	ctx := context.Background()
	for i, w := range got {
		res, err := w.outcome(ctx)
		if err != nil || res == nil || res.Keys[0].ID != []string{"1", "2"}[i] {
			t.Fatalf("waiter %d: %v %v", i, res, err)
		}
	}
	w4 := h.add(fetch(), []string{"d"})
	h.settle(h.claim(resvs("d")), nil, errors.New("no leader"))
	if res, err := w4.outcome(ctx); res != nil || err != nil {
		t.Fatalf("after a failed proposal: %v %v, want the caller to go on itself", res, err)
	}
}

func fetchCmd(caller, master string, ids []string) *kms.Command {
	return &kms.Command{ReqID: "fetch/" + caller + "/" + newKeyID(),
		Fetch: &kms.FetchCmd{Master: master, Caller: caller, KeyIDs: ids}}
}

// The push of reservations carries the Fetch of a dec_keys waiting for them: the waiter gets
// the issued bytes; a Fetch that fails there changes nothing and leaves the caller to go on.
func TestHandoffOnPush(t *testing.T) {
	tp := keyedPair(t, 1, 2, 4096)
	a, b := tp.Sites[0], tp.Sites[1]
	ctx := context.Background()

	issued := issueUnpushed(t, a, b, newKeyIDs(3))
	ids := make([]string, len(issued.Keys))
	for i, k := range issued.Keys {
		ids[i] = k.ID
	}
	// A Fetch by an SAE that is not a slave of these keys fails (401) and is not retried here.
	bad := b.handoff.add(fetchCmd("SAE-B2", "SAE-A1", ids), ids)
	good := b.handoff.add(fetchCmd("SAE-B1", "SAE-A1", ids), ids)
	if acked := a.pushReservations(issued.Reservations); len(acked) != len(ids) {
		t.Fatalf("%d of %d reservations acknowledged", len(acked), len(ids))
	}
	if bad.withdraw() || good.withdraw() {
		t.Fatal("the push did not claim the waiting fetches")
	}
	if res, err := bad.outcome(ctx); res != nil || err != nil {
		t.Fatalf("unauthorized fetch: %v %v, want the caller to go on itself", res, err)
	}
	res, err := good.outcome(ctx)
	if err != nil || res == nil {
		t.Fatalf("handed-off fetch: %v %v", res, err)
	}
	for i, k := range res.Keys {
		if k.ID != ids[i] || !bytes.Equal(k.Bytes, issued.Keys[i].Bytes) {
			t.Fatalf("key %d: got %s, want the issued key %s", i, k.ID, ids[i])
		}
	}
	// Fetched once: the same keys are gone for SAE-B1 now.
	if _, err := tp.client(1, "SAE-B1").GetKeyWithIDs(ctx, "SAE-A1", ids[:1]); statusCode(err) != 400 {
		t.Fatalf("second fetch: %v, want 400", err)
	}

	// Through dec_keys: a fetch waiting for its push gets the keys, by handoff or, if the push
	// comes after pushGrace, by pulling.
	issued = issueUnpushed(t, a, b, newKeyIDs(2))
	ids = []string{issued.Keys[0].ID, issued.Keys[1].ID}
	done := make(chan error, 1)
	var got []kms.Key
	go func() {
		var err error
		got, err = b.fetch(ctx, "SAE-B1", "SAE-A1", ids, "")
		done <- err
	}()
	for waiting := false; !waiting; {
		b.handoff.mu.Lock()
		waiting = len(b.handoff.byID) > 0
		b.handoff.mu.Unlock()
		select {
		case err := <-done:
			t.Fatalf("dec_keys returned before waiting for the push: %v", err)
		default:
			runtime.Gosched()
		}
	}
	a.pushReservations(issued.Reservations)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i, k := range got {
		if k.ID != ids[i] || !bytes.Equal(k.Bytes, issued.Keys[i].Bytes) {
			t.Fatalf("key %d differs from the issued one", i)
		}
	}
}

// An applied PeerReserve wakes the dec_keys waiting for any reservation it stored, a restore
// wakes all of them, and nothing else wakes them.
func TestHandoffWake(t *testing.T) {
	var h handoffs
	w1 := h.add(&kms.Command{Fetch: &kms.FetchCmd{}}, []string{"a", "b"})
	w2 := h.add(&kms.Command{Fetch: &kms.FetchCmd{}}, []string{"c"})
	woken := func(w *fetchWaiter) bool {
		select {
		case <-w.wake:
			return true
		default:
			return false
		}
	}
	h.applied([]*kms.Command{
		{Fetch: &kms.FetchCmd{KeyIDs: []string{"a", "c"}}},
		{PeerReserve: &kms.PeerReserveCmd{Reservations: resvs("x")}},
	})
	if woken(w1) || woken(w2) {
		t.Fatal("woken by commands that stored none of their reservations")
	}
	h.applied([]*kms.Command{{PeerReserve: &kms.PeerReserveCmd{Reservations: resvs("x", "b")}}})
	h.applied([]*kms.Command{{PeerReserve: &kms.PeerReserveCmd{Reservations: resvs("a")}}})
	if !woken(w1) || woken(w1) || woken(w2) {
		t.Fatal("want one pending wake for w1 and none for w2")
	}
	h.applied(nil) // a snapshot replaced the state: everyone reads again
	if !woken(w1) || !woken(w2) {
		t.Fatal("a restore did not wake every waiter")
	}
	h.remove(w2)
	h.applied([]*kms.Command{{PeerReserve: &kms.PeerReserveCmd{Reservations: resvs("c")}}})
	if woken(w2) {
		t.Fatal("a removed waiter was woken")
	}
}

// A dec_keys registers all its IDs, then narrows to those its read found missing: a push of
// just those claims it, and the IDs dropped leave no trace.
func TestHandoffNarrow(t *testing.T) {
	var h handoffs
	w := h.add(&kms.Command{Fetch: &kms.FetchCmd{}}, []string{"a", "b", "c"})
	h.narrow(w, []string{"c"})
	if len(h.byID) != 1 || len(h.byID["c"]) != 1 {
		t.Fatalf("after narrowing: %v", h.byID)
	}
	if got := h.claim(resvs("c")); len(got) != 1 || got[0] != w {
		t.Fatalf("a push of the missing reservation claimed %v", got)
	}
	h.narrow(w, []string{"b"}) // claimed: nothing changes
	h.remove(w)
	if len(h.byID) != 0 {
		t.Fatalf("handoffs left behind: %v", h.byID)
	}
}
