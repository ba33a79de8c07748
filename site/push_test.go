package site

import (
	"context"
	"testing"
	"time"

	"github.com/qkms/qkms/kms"
)

// collectPushes sends what is queued at once when it must not linger, and when it lingers it
// stops as soon as the batch is large enough, not at the end of the linger.
func TestCollectPushesLinger(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := &Node{ctx: ctx, push: make(chan []kms.Reservation, 8)}
	some := func(k int) []kms.Reservation { return make([]kms.Reservation, k) }

	n.push <- some(3)
	if got := n.collectPushes(some(1), 0); len(got) != 4 {
		t.Fatalf("no linger: %d reservations, want the 4 queued", len(got))
	}

	// A linger of an hour: the test would time out if collectPushes waited for it.
	done := make(chan []kms.Reservation)
	go func() { done <- n.collectPushes(some(1), time.Hour) }()
	n.push <- some(pushLingerBelow / 2)
	n.push <- some(pushLingerBelow / 2)
	if got := <-done; len(got) != 1+pushLingerBelow {
		t.Fatalf("linger: %d reservations, want %d", len(got), 1+pushLingerBelow)
	}

	// Shutdown ends a linger too.
	go func() { done <- n.collectPushes(some(2), time.Hour) }()
	cancel()
	if got := <-done; len(got) != 2 {
		t.Fatalf("linger at shutdown: %d reservations, want 2", len(got))
	}
}
