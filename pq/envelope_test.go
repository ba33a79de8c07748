package pq

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/qkms/qkms/identity"
)

type sites struct {
	a, b, c *identity.Signer
	peers   map[string]*mldsa65.PublicKey // as known at KME-B
}

func newSites(t testing.TB) *sites {
	t.Helper()
	var s sites
	for _, p := range []**identity.Signer{&s.a, &s.b, &s.c} {
		k, err := identity.Generate()
		if err != nil {
			t.Fatal(err)
		}
		*p = k
	}
	s.peers = map[string]*mldsa65.PublicKey{"KME-A": s.a.Public(), "KME-C": s.c.Public()}
	return &s
}

func mustSeal(t testing.TB, id *identity.Signer, from, to, typ string, payload []byte, now time.Time) []byte {
	t.Helper()
	env, err := Seal(id, from, to, typ, payload, now)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func TestEnvelopeRoundTrip(t *testing.T) {
	s := newSites(t)
	guard := NewReplayGuard(time.Minute, 0)
	for _, payload := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte{7}, 5000)} {
		env := mustSeal(t, s.a, "KME-A", "KME-B", MsgOffer, payload, t0)
		from, typ, got, err := Open(s.peers, "KME-B", env, t0.Add(time.Second), guard)
		if err != nil {
			t.Fatal(err)
		}
		if from != "KME-A" || typ != MsgOffer || !bytes.Equal(got, payload) {
			t.Fatalf("Open = %q %q %d bytes", from, typ, len(got))
		}
	}
	if guard.Len() != 3 {
		t.Fatalf("guard remembers %d nonces, want 3", guard.Len())
	}
}

func TestEnvelopeRejects(t *testing.T) {
	s := newSites(t)
	good := mustSeal(t, s.a, "KME-A", "KME-B", MsgReply, []byte("payload"), t0)
	// editAt rewrites the signed part at offset i (the payload, header fields).
	editAt := func(i int, v byte) []byte { b := bytes.Clone(good); b[i] = v; return b }
	payloadAt := len(good) - mldsa65.SignatureSize - len("payload")
	for _, tc := range []struct {
		name string
		env  []byte
		self string
		now  time.Time
		want error
	}{
		{"forged: signed by C as A", mustSeal(t, s.c, "KME-A", "KME-B", MsgReply, []byte("payload"), t0), "KME-B", t0, ErrBadSignature},
		{"forged: signed by unknown key", mustSeal(t, s.b, "KME-A", "KME-B", MsgReply, nil, t0), "KME-B", t0, ErrBadSignature},
		{"payload edited", editAt(payloadAt, 'P'), "KME-B", t0, ErrBadSignature},
		{"signature edited", editAt(len(good)-5, good[len(good)-5]^1), "KME-B", t0, ErrBadSignature},
		{"type edited", editAt(4+1+1+5+1+5+1, 'X'), "KME-B", t0, ErrBadSignature},
		{"wrong receiver", good, "KME-C", t0, ErrWrongReceiver},
		{"unknown sender", mustSeal(t, s.b, "KME-D", "KME-B", MsgReply, nil, t0), "KME-B", t0, ErrUnknownSender},
		{"stale", good, "KME-B", t0.Add(2 * time.Minute), ErrStale},
		{"from the future", good, "KME-B", t0.Add(-2 * time.Minute), ErrStale},
		{"empty", nil, "KME-B", t0, ErrMalformed},
		{"truncated", good[:len(good)-1], "KME-B", t0, ErrMalformed},
		{"extended", append(bytes.Clone(good), 0), "KME-B", t0, ErrMalformed},
		{"bad magic", editAt(0, 'X'), "KME-B", t0, ErrMalformed},
		{"bad version", editAt(4, 9), "KME-B", t0, ErrMalformed},
		{"length past end", editAt(5, 200), "KME-B", t0, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from, typ, payload, err := Open(s.peers, tc.self, tc.env, tc.now, NewReplayGuard(time.Minute, 0))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if from != "" || typ != "" || payload != nil {
				t.Fatal("a refused envelope returned contents")
			}
		})
	}
}

// TestEnvelopeSealArguments: signed and MAC envelopes refuse the same bad arguments.
func TestEnvelopeSealArguments(t *testing.T) {
	s := newSites(t)
	k := newMACKeys(t)
	long := string(make([]byte, 256))
	seals := map[string]func(from, to, typ string, payload []byte) ([]byte, error){
		"Seal": func(from, to, typ string, payload []byte) ([]byte, error) {
			return Seal(s.a, from, to, typ, payload, t0)
		},
		"SealMAC": func(from, to, typ string, payload []byte) ([]byte, error) {
			return SealMAC(k.a, from, to, typ, payload, t0)
		},
	}
	for name, seal := range seals {
		for _, tc := range []struct {
			from, to, typ string
			n             int
		}{{"", "B", "t", 0}, {"A", "", "t", 0}, {"A", "B", "", 0}, {long, "B", "t", 0}, {"A", "B", "t", MaxPayload + 1}} {
			if _, err := seal(tc.from, tc.to, tc.typ, make([]byte, tc.n)); err == nil {
				t.Errorf("%s(%q, %q, %q, %d bytes) succeeded", name, tc.from, tc.to, tc.typ, tc.n)
			}
		}
	}
	if _, err := Seal(nil, "A", "B", "t", nil, t0); err == nil {
		t.Error("Seal without identity succeeded")
	}
	if _, err := SealMAC(nil, "A", "B", "t", nil, t0); err == nil {
		t.Error("SealMAC without a key succeeded")
	}
	if _, _, _, err := Open(s.peers, "KME-B", nil, t0, nil); err == nil {
		t.Error("Open without guard succeeded")
	}
	if _, _, _, _, err := OpenMAC(k.atB, "KME-B", nil, t0, nil); err == nil {
		t.Error("OpenMAC without guard succeeded")
	}
}

func TestReplay(t *testing.T) {
	s := newSites(t)
	guard := NewReplayGuard(time.Minute, 0)
	env := mustSeal(t, s.a, "KME-A", "KME-B", MsgReply, nil, t0)
	if _, _, _, err := Open(s.peers, "KME-B", env, t0, guard); err != nil {
		t.Fatal(err)
	}
	for _, now := range []time.Time{t0, t0.Add(59 * time.Second)} {
		if _, _, _, err := Open(s.peers, "KME-B", env, now, guard); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay at %s: %v", now, err)
		}
	}
	// Past the window the timestamp refuses it, even after the guard forgot the nonce.
	if _, _, _, err := Open(s.peers, "KME-B", env, t0.Add(61*time.Second), guard); !errors.Is(err, ErrStale) {
		t.Fatalf("replay after the window: %v", err)
	}
	// A forgery with a fresh nonce does not reach the guard's memory.
	forged := mustSeal(t, s.c, "KME-A", "KME-B", MsgReply, nil, t0)
	before := guard.Len()
	Open(s.peers, "KME-B", forged, t0, guard)
	if guard.Len() != before {
		t.Fatal("a forged envelope was remembered")
	}
}

// TestReplayGuardBounded drives the guard directly: it never holds more than max nonces, forgets
// those older than the window, and refuses (never accepts) what it can no longer judge.
func TestReplayGuardBounded(t *testing.T) {
	const max = 8
	g := NewReplayGuard(time.Minute, max)
	nonce := func(i int) (n [NonceSize]byte) { binary.BigEndian.PutUint64(n[:], uint64(i)); return n }
	at := func(i int) int64 { return t0.Add(time.Duration(i) * time.Millisecond).UnixNano() }
	now := t0.Add(time.Second)
	for i := range 3 * max {
		if err := g.admit("KME-A", nonce(i), at(i), now); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if g.Len() > max {
			t.Fatalf("guard holds %d nonces, bound %d", g.Len(), max)
		}
	}
	for i := range 3 * max { // every replay refused, remembered or not
		if err := g.admit("KME-A", nonce(i), at(i), now); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay of %d: %v", i, err)
		}
	}
	// The same nonce from another sender is another message.
	if err := g.admit("KME-C", nonce(3*max-1), at(3*max), now); err != nil {
		t.Fatalf("other sender: %v", err)
	}
	// Once the window has passed, the old entries are dropped and the floor no longer matters.
	later := now.Add(2 * time.Minute)
	if err := g.admit("KME-A", nonce(1000), later.UnixNano(), later); err != nil {
		t.Fatalf("fresh message after the window: %v", err)
	}
	if g.Len() != 1 {
		t.Fatalf("guard holds %d nonces after the window, want 1", g.Len())
	}
}
