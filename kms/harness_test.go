package kms_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/kms/kmstest"
)

// t0 is the fixed clock of every scenario; time moves only when a test says so.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	kmeA, kmeB, kmeC = "KME-A", "KME-B", "KME-C"
)

func registry(t testing.TB) *kms.Registry {
	t.Helper()
	r, err := kms.NewRegistry(map[string]string{
		"SAE-A1": kmeA, "SAE-A2": kmeA,
		"SAE-B1": kmeB, "SAE-B2": kmeB, "SAE-B3": kmeB,
		"SAE-C1": kmeC,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// site is one KME: its machine and its store.
type site struct {
	id string
	m  *kms.Machine
	tx *kmstest.Tx
}

// link is two sites joined by a simulated QKD link: both ends receive the same blocks.
type link struct {
	t      testing.TB
	a, b   *site
	now    time.Time
	rng    *rand.Rand
	blocks map[string][]byte // block ID -> its bytes (what the QKD link delivered)
	n      int
	ids    int
}

func newLink(t testing.TB, lim kms.Limits) *link {
	t.Helper()
	reg := registry(t)
	mk := func(id string) *site {
		cfg := kms.Config{Self: id, Limits: lim, Registry: reg, KeyTTL: time.Minute, TombstoneTTL: time.Minute}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		return &site{id: id, m: kms.NewMachine(cfg), tx: kmstest.New()}
	}
	return &link{t: t, a: mk(kmeA), b: mk(kmeB), now: t0, rng: rand.New(rand.NewPCG(1, 2)), blocks: map[string][]byte{}}
}

func (s *site) peer() string {
	if s.id == kmeA {
		return kmeB
	}
	return kmeA
}

func (l *link) apply(s *site, c *kms.Command) *kms.Result {
	l.t.Helper()
	if c.Time.IsZero() {
		c.Time = l.now
	}
	return s.m.Apply(s.tx, c)
}

func (l *link) must(s *site, c *kms.Command) *kms.Result {
	l.t.Helper()
	r := l.apply(s, c)
	if r.Err != nil {
		l.t.Fatalf("%s: %v", s.id, r.Err)
	}
	return r
}

// ingest delivers one block of n bytes to both ends (same order, default owner) and, when
// verify, records a matching tag at both.
func (l *link) ingest(n int, verify bool) string {
	l.t.Helper()
	l.n++
	id := fmt.Sprintf("blk-%04d", l.n)
	bits := make([]byte, n)
	for i := range bits {
		bits[i] = byte(l.rng.Uint32())
	}
	l.blocks[id] = bits
	for _, s := range []*site{l.a, l.b} {
		l.must(s, &kms.Command{Ingest: &kms.IngestCmd{Peer: s.peer(), BlockID: id, Bytes: n, Tag: []byte("tag"), Sealed: bits}})
	}
	if verify {
		l.verify(id, true)
	}
	return id
}

func (l *link) verify(id string, match bool) {
	l.t.Helper()
	for _, s := range []*site{l.a, l.b} {
		l.must(s, &kms.Command{Verify: &kms.VerifyCmd{Peer: s.peer(), BlockID: id, Match: match}})
	}
}

func (l *link) keyIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		l.ids++
		out[i] = fmt.Sprintf("00000000-0000-4000-8000-%012d", l.ids)
	}
	return out
}

func (l *link) issueCmd(s *site, master string, slaves []string, n, bits int) *kms.Command {
	return &kms.Command{Issue: &kms.IssueCmd{
		Self: s.id, Peer: s.peer(), Master: master, Slaves: slaves, Bits: bits, KeyIDs: l.keyIDs(n),
	}}
}

func (l *link) issue(s *site, master string, slaves []string, n, bits int) *kms.Result {
	l.t.Helper()
	return l.apply(s, l.issueCmd(s, master, slaves, n, bits))
}

// push stores at to the reservations from issued.
func (l *link) push(from, to *site, rs []kms.Reservation) *kms.Result {
	l.t.Helper()
	return l.apply(to, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: from.id, Reservations: rs}})
}

func (l *link) fetch(s *site, master, caller string, ids ...string) *kms.Result {
	l.t.Helper()
	return l.apply(s, &kms.Command{Fetch: &kms.FetchCmd{Master: master, Caller: caller, KeyIDs: ids}})
}

// expected returns the bytes the link delivered for a reservation's ranges.
func (l *link) expected(r *kms.Reservation) []byte {
	var out []byte
	for _, rg := range r.Ranges {
		out = append(out, l.blocks[rg.Block][rg.Off:rg.Off+rg.Len]...)
	}
	return out
}

func ids(keys []kms.Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.ID
	}
	return out
}

func wantErr(t testing.TB, got, want error) {
	t.Helper()
	if !errors.Is(got, want) {
		t.Fatalf("error %v, want %v", got, want)
	}
}

func pool(t testing.TB, s *site) kms.Pool {
	t.Helper()
	p, err := s.m.PoolInfo(s.tx, s.peer())
	if err != nil {
		t.Fatal(err)
	}
	return p
}
