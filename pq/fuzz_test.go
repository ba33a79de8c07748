package pq

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// Every decoder of outside input: envelopes, the three exchange messages (and Finish/Confirm on
// whatever they decode to), and stored epochs. None may panic; a failure must carry a sentinel.

func FuzzOpen(f *testing.F) {
	s := newSites(f)
	for _, p := range [][]byte{nil, []byte("payload")} {
		f.Add(mustSeal(f, s.a, "KME-A", "KME-B", MsgOffer, p, t0))
	}
	f.Add([]byte("QKPE\x01"))
	f.Fuzz(func(t *testing.T, env []byte) {
		guard := NewReplayGuard(time.Minute, 4)
		from, typ, payload, err := Open(s.peers, "KME-B", env, t0, guard)
		if err != nil {
			if from != "" || typ != "" || payload != nil {
				t.Fatal("refused envelope returned contents")
			}
			for _, e := range []error{ErrMalformed, ErrWrongReceiver, ErrUnknownSender, ErrStale, ErrBadSignature, ErrReplay} {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("error without a sentinel: %v", err)
		}
		// Accepted: it must be authentic, so a second delivery is a replay.
		if _, _, _, err := Open(s.peers, "KME-B", env, t0, guard); !errors.Is(err, ErrReplay) {
			t.Fatalf("accepted envelope accepted twice: %v", err)
		}
	})
}

func FuzzExchangeMessages(f *testing.F) {
	in, offer, _ := NewExchange("KME-A", "KME-B")
	_, reply, _ := Respond("KME-A", "KME-B", offer)
	_, conf, _ := in.Finish(reply, t0)
	for _, b := range [][]byte{offer.Marshal(), reply.Marshal(), conf.Marshal(), nil} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if o, err := ParseOffer(b); err == nil {
			if !bytes.Equal(o.Marshal(), b) {
				t.Fatal("offer does not re-encode to its input")
			}
			Respond("KME-A", "KME-B", o) // may refuse the key; must not panic
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatal(err)
		}
		if r, err := ParseReply(b); err == nil {
			if !bytes.Equal(r.Marshal(), b) {
				t.Fatal("reply does not re-encode to its input")
			}
			in, offer, _ := NewExchange("KME-A", "KME-B")
			r.ID = offer.ID
			if ep, c, err := in.Finish(r, t0); err == nil || ep != nil || c != nil {
				t.Fatalf("Finish accepted a reply made without the key: %v", err)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatal(err)
		}
		if c, err := ParseConfirmation(b); err == nil {
			if !bytes.Equal(c.Marshal(), b) {
				t.Fatal("confirmation does not re-encode to its input")
			}
			_, offer, _ := NewExchange("KME-A", "KME-B")
			rs, _, _ := Respond("KME-A", "KME-B", offer)
			c.ID = rs.ID()
			if ep, err := rs.Confirm(c, t0); err == nil || ep != nil {
				t.Fatalf("Confirm accepted a made-up tag: %v", err)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatal(err)
		}
	})
}

func FuzzParseEpoch(f *testing.F) {
	ea, _ := mustEpochs(f)
	f.Add(ea.Marshal())
	f.Add([]byte("QKEP\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEpoch(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatal(err)
			}
			return
		}
		if len(e.Secret) != SecretSize {
			t.Fatalf("parsed epoch with a %d-byte secret", len(e.Secret))
		}
		if _, err := PQCKey(e, KeyContext{KeyID: "k", SourceKME: e.Initiator, TargetKME: e.Responder, MasterSAE: "m", SlaveSAEs: []string{"s"}}, 32); err != nil {
			t.Fatalf("parsed epoch derives nothing: %v", err)
		}
	})
}

func FuzzOpenMAC(f *testing.F) {
	k := newMACKeys(f)
	for _, p := range [][]byte{nil, []byte("payload")} {
		f.Add(mustSealMAC(f, k.a, "KME-A", "KME-B", "push", p, t0))
	}
	f.Add([]byte("QKPM\x01"))
	f.Fuzz(func(t *testing.T, env []byte) {
		guard := NewReplayGuard(time.Minute, 4)
		from, typ, payload, key, err := OpenMAC(k.atB, "KME-B", env, t0, guard)
		if err != nil {
			if from != "" || typ != "" || payload != nil || key != nil {
				t.Fatal("refused envelope returned contents")
			}
			for _, e := range []error{ErrMalformed, ErrWrongReceiver, ErrUnknownMACKey, ErrStale, ErrBadSignature, ErrReplay} {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("error without a sentinel: %v", err)
		}
		if !IsMACEnvelope(env) || key != k.b {
			t.Fatal("accepted an envelope that is not a MAC envelope under KME-B's key")
		}
		if _, _, _, _, err := OpenMAC(k.atB, "KME-B", env, t0, guard); !errors.Is(err, ErrReplay) {
			t.Fatalf("accepted envelope accepted twice: %v", err)
		}
	})
}
