package pq

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
	"time"
)

// macKeys are the MAC keys of one epoch as KME-A and KME-B derive them from their own copies,
// and a lookup as KME-B holds it (KME-A's key under the epoch's ID).
type macKeys struct {
	a, b  *MACKey
	other *MACKey // of another epoch
	atB   func(from, id string) *MACKey
}

func newMACKeys(t testing.TB) *macKeys {
	t.Helper()
	ea, eb := mustEpochs(t)
	eo, _ := mustEpochs(t)
	var k macKeys
	var err error
	for _, p := range []struct {
		e  *Epoch
		to **MACKey
	}{{ea, &k.a}, {eb, &k.b}, {eo, &k.other}} {
		if *p.to, err = DeriveMACKey(p.e); err != nil {
			t.Fatal(err)
		}
	}
	k.atB = func(from, id string) *MACKey {
		if from == "KME-A" && id == k.b.ID {
			return k.b
		}
		return nil
	}
	return &k
}

func mustSealMAC(t testing.TB, k *MACKey, from, to, typ string, payload []byte, now time.Time) []byte {
	t.Helper()
	env, err := SealMAC(k, from, to, typ, payload, now)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// TestMACKeyBothEnds: both ends of an epoch derive the same MAC key, which differs from the
// secret, from the keys derived for SAEs, and from another epoch's.
func TestMACKeyBothEnds(t *testing.T) {
	ea, eb := mustEpochs(t)
	ka, err := DeriveMACKey(ea)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := DeriveMACKey(eb)
	if err != nil {
		t.Fatal(err)
	}
	if ka.ID != ea.ID || ka.key != kb.key {
		t.Fatal("the two ends derived different MAC keys")
	}
	pqc, err := PQCKey(ea, testContext(), 32)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ka.key[:], ea.Secret) || bytes.Equal(ka.key[:], pqc) {
		t.Fatal("the MAC key equals the epoch secret or a derived key")
	}
	if k := newMACKeys(t); k.other.key == ka.key {
		t.Fatal("two epochs gave the same MAC key")
	}
	if _, err := DeriveMACKey(&Epoch{ID: "x", Secret: []byte{1}}); err == nil {
		t.Fatal("derived a MAC key from an epoch without a secret")
	}
	ka.Destroy()
	if ka.key != [32]byte{} {
		t.Fatal("Destroy left the key")
	}
}

func TestMACEnvelopeRoundTrip(t *testing.T) {
	k := newMACKeys(t)
	guard := NewReplayGuard(time.Minute, 0)
	for _, payload := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte{7}, 5000)} {
		env := mustSealMAC(t, k.a, "KME-A", "KME-B", "push", payload, t0)
		if !IsMACEnvelope(env) {
			t.Fatal("IsMACEnvelope = false for a MAC envelope")
		}
		from, typ, got, key, err := OpenMAC(k.atB, "KME-B", env, t0.Add(time.Second), guard)
		if err != nil {
			t.Fatal(err)
		}
		if from != "KME-A" || typ != "push" || !bytes.Equal(got, payload) || key != k.b {
			t.Fatalf("OpenMAC = %q %q %d bytes, key %v", from, typ, len(got), key == k.b)
		}
	}
	// Signed and MAC envelopes share the replay guard.
	s := newSites(t)
	if _, _, _, err := Open(s.peers, "KME-B", mustSeal(t, s.a, "KME-A", "KME-B", MsgReply, nil, t0), t0, guard); err != nil {
		t.Fatal(err)
	}
	if guard.Len() != 4 {
		t.Fatalf("guard remembers %d nonces, want 4", guard.Len())
	}
	if IsMACEnvelope(mustSeal(t, s.a, "KME-A", "KME-B", MsgReply, nil, t0)) {
		t.Fatal("IsMACEnvelope = true for a signed envelope")
	}
}

func TestMACEnvelopeRejects(t *testing.T) {
	k := newMACKeys(t)
	good := mustSealMAC(t, k.a, "KME-A", "KME-B", "push", []byte("payload"), t0)
	editAt := func(i int, v byte) []byte { b := bytes.Clone(good); b[i] = v; return b }
	payloadAt := len(good) - MACSize - len("payload")
	// A key with the right ID but other bytes: what an attacker who knows the epoch ID holds.
	forger := &MACKey{ID: k.a.ID}
	forger.key[0] = 1
	for _, tc := range []struct {
		name string
		env  []byte
		self string
		now  time.Time
		want error
	}{
		{"forged: wrong key bytes", mustSealMAC(t, forger, "KME-A", "KME-B", "push", []byte("payload"), t0), "KME-B", t0, ErrBadSignature},
		{"forged: another epoch's key under this ID", mustSealMAC(t, &MACKey{ID: k.a.ID, key: k.other.key}, "KME-A", "KME-B", "push", nil, t0), "KME-B", t0, ErrBadSignature},
		{"unknown epoch", mustSealMAC(t, k.other, "KME-A", "KME-B", "push", nil, t0), "KME-B", t0, ErrUnknownMACKey},
		{"sender not of the epoch", mustSealMAC(t, k.a, "KME-C", "KME-B", "push", nil, t0), "KME-B", t0, ErrUnknownMACKey},
		{"payload edited", editAt(payloadAt, 'P'), "KME-B", t0, ErrBadSignature},
		{"tag edited", editAt(len(good)-5, good[len(good)-5]^1), "KME-B", t0, ErrBadSignature},
		{"type edited", editAt(4+1+1+5+1+5+1, 'X'), "KME-B", t0, ErrBadSignature},
		{"reflected to its sender", good, "KME-A", t0, ErrWrongReceiver},
		{"wrong receiver", good, "KME-C", t0, ErrWrongReceiver},
		{"stale", good, "KME-B", t0.Add(2 * time.Minute), ErrStale},
		{"from the future", good, "KME-B", t0.Add(-2 * time.Minute), ErrStale},
		{"empty", nil, "KME-B", t0, ErrMalformed},
		{"truncated", good[:len(good)-1], "KME-B", t0, ErrMalformed},
		{"extended", append(bytes.Clone(good), 0), "KME-B", t0, ErrMalformed},
		{"bad version", editAt(4, 9), "KME-B", t0, ErrMalformed},
		{"length past end", editAt(5, 200), "KME-B", t0, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from, typ, payload, key, err := OpenMAC(k.atB, tc.self, tc.env, tc.now, NewReplayGuard(time.Minute, 0))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if from != "" || typ != "" || payload != nil || key != nil {
				t.Fatal("a refused envelope returned contents")
			}
		})
	}
}

func TestMACEnvelopeReplay(t *testing.T) {
	k := newMACKeys(t)
	guard := NewReplayGuard(time.Minute, 0)
	env := mustSealMAC(t, k.a, "KME-A", "KME-B", "push", nil, t0)
	if _, _, _, _, err := OpenMAC(k.atB, "KME-B", env, t0, guard); err != nil {
		t.Fatal(err)
	}
	if _, _, _, _, err := OpenMAC(k.atB, "KME-B", env, t0.Add(59*time.Second), guard); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v", err)
	}
	// A forgery is refused before the guard, so forgeries cannot fill it.
	before := guard.Len()
	forged := bytes.Clone(mustSealMAC(t, k.a, "KME-A", "KME-B", "push", nil, t0))
	forged[len(forged)-1] ^= 1
	if _, _, _, _, err := OpenMAC(k.atB, "KME-B", forged, t0, guard); !errors.Is(err, ErrBadSignature) || guard.Len() != before {
		t.Fatalf("forgery: %v, guard %d -> %d", err, before, guard.Len())
	}
}

// TestMACKnownAnswer pins the key derivation and the envelope format: sites of two versions
// must derive the same key and read each other's envelopes. The expected values were checked
// against an independent HKDF-SHA-256 and HMAC-SHA-256 (Python's hmac and hashlib) over the
// inputs SECURITY.md and mac.go describe.
func TestMACKnownAnswer(t *testing.T) {
	e := &Epoch{ID: "00112233445566778899aabbccddeeff", Initiator: "KME-A", Responder: "KME-B", Secret: make([]byte, SecretSize)}
	for i := range e.Secret {
		e.Secret[i] = byte(i)
	}
	for i := range e.Transcript {
		e.Transcript[i] = byte(0xa0 + i)
	}
	k, err := DeriveMACKey(e)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(k.key[:]); got != "b7b9ec48bf58079a11fdd35b8dedcb3d7903d43b1bdd64884b578c76b54cc6e8" {
		t.Fatalf("MAC key %s", got)
	}
	env, _ := hex.DecodeString("514b504d01054b4d452d41054b4d452d42047075736820303031313232333334343535363637373838393961616262636364646565666618eb47f663d980008fcc834379d3f128c3bf378f269a7e88000000066469676573748fc5cd784c499a7e171e645500e1d244cc8b1ccd3b52bbfc1d5df159113cdd73")
	keys := func(from, id string) *MACKey {
		if from == "KME-A" && id == e.ID {
			return k
		}
		return nil
	}
	from, typ, payload, _, err := OpenMAC(keys, "KME-B", env, t0, NewReplayGuard(time.Minute, 0))
	if err != nil || from != "KME-A" || typ != "push" || string(payload) != "digest" {
		t.Fatalf("OpenMAC = %q %q %q, %v", from, typ, payload, err)
	}
}
