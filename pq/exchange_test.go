package pq

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// runExchange runs a whole exchange between KME-A and KME-B through the wire encodings, letting
// tamper rewrite each encoded message in flight, and returns both epochs and the first error.
func runExchange(t testing.TB, tamper func(msg string, b []byte) []byte) (ea, eb *Epoch, err error) {
	t.Helper()
	if tamper == nil {
		tamper = func(_ string, b []byte) []byte { return b }
	}
	in, offer, err := NewExchange("KME-A", "KME-B")
	if err != nil {
		t.Fatal(err)
	}
	o, err := ParseOffer(tamper(MsgOffer, offer.Marshal()))
	if err != nil {
		t.Fatal(err)
	}
	rs, reply, err := Respond("KME-A", "KME-B", o)
	if err != nil {
		return nil, nil, err
	}
	r, err := ParseReply(tamper(MsgReply, reply.Marshal()))
	if err != nil {
		t.Fatal(err)
	}
	ea, conf, err := in.Finish(r, t0)
	if err != nil {
		if ea != nil || conf != nil {
			t.Fatal("Finish failed but returned an epoch or a confirmation")
		}
		return nil, nil, err
	}
	c, err := ParseConfirmation(tamper(MsgConfirm, conf.Marshal()))
	if err != nil {
		t.Fatal(err)
	}
	eb, err = rs.Confirm(c, t0.Add(time.Millisecond))
	if err != nil {
		if eb != nil {
			t.Fatal("Confirm failed but returned an epoch")
		}
		return ea, nil, err
	}
	return ea, eb, nil
}

func TestExchangeAgrees(t *testing.T) {
	ea, eb, err := runExchange(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ea.Secret, eb.Secret) || len(ea.Secret) != SecretSize {
		t.Fatalf("secrets differ or have the wrong size (%d bytes)", len(ea.Secret))
	}
	if ea.ID != eb.ID || ea.Transcript != eb.Transcript || ea.Initiator != "KME-A" || eb.Responder != "KME-B" {
		t.Fatalf("epochs disagree: %v / %v", ea, eb)
	}
	ea2, _, err := runExchange(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ea.Secret, ea2.Secret) || ea.ID == ea2.ID {
		t.Fatal("two exchanges gave the same epoch")
	}
}

// flip returns b with one bit changed at position i (negative: from the end).
func flip(i int) func([]byte) []byte {
	return func(b []byte) []byte {
		b = bytes.Clone(b)
		if i < 0 {
			i += len(b)
		}
		b[i] ^= 0x01
		return b
	}
}

func TestExchangeTampered(t *testing.T) {
	const header = 4 + 1 + 16 // magic, version, exchange ID
	for _, tc := range []struct {
		name string
		msg  string
		edit func([]byte) []byte
		// wantA: Finish fails (A never gets an epoch); otherwise only Confirm fails.
		wantA bool
	}{
		{"public key, ML-KEM part", MsgOffer, flip(header + 600), true},
		{"public key, X25519 part", MsgOffer, flip(-1), true},
		{"ciphertext, ML-KEM part (implicit rejection)", MsgReply, flip(header + 10), true},
		{"ciphertext, X25519 part", MsgReply, flip(header + 1090), true},
		{"responder tag", MsgReply, flip(-1), true},
		{"initiator tag", MsgConfirm, flip(-1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ea, eb, err := runExchange(t, func(msg string, b []byte) []byte {
				if msg == tc.msg {
					return tc.edit(b)
				}
				return b
			})
			if !errors.Is(err, ErrConfirmation) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrConfirmation", err)
			}
			if eb != nil {
				t.Fatal("responder got an epoch")
			}
			if tc.wantA && ea != nil {
				t.Fatal("initiator got an epoch")
			}
		})
	}
}

// TestExchangeWrongParties: a responder that believes it talks to someone else (an offer relayed
// from another KME) ends with different transcripts, caught by confirmation.
func TestExchangeWrongParties(t *testing.T) {
	in, offer, err := NewExchange("KME-A", "KME-B")
	if err != nil {
		t.Fatal(err)
	}
	_, reply, err := Respond("KME-C", "KME-B", offer)
	if err != nil {
		t.Fatal(err)
	}
	if ep, _, err := in.Finish(reply, t0); !errors.Is(err, ErrConfirmation) || ep != nil {
		t.Fatalf("Finish = %v, %v; want ErrConfirmation and no epoch", ep, err)
	}
}

func TestExchangeOneShot(t *testing.T) {
	in, offer, _ := NewExchange("KME-A", "KME-B")
	rs, reply, err := Respond("KME-A", "KME-B", offer)
	if err != nil {
		t.Fatal(err)
	}
	other := *reply
	other.ID[0] ^= 1
	if _, _, err := in.Finish(&other, t0); !errors.Is(err, ErrWrongExchange) {
		t.Fatalf("reply for another exchange: %v", err)
	}
	bad := *reply
	bad.Tag[0] ^= 1
	if _, _, err := in.Finish(&bad, t0); !errors.Is(err, ErrConfirmation) {
		t.Fatalf("bad tag: %v", err)
	}
	if ep, _, err := in.Finish(reply, t0); !errors.Is(err, ErrExchangeDone) || ep != nil {
		t.Fatalf("genuine reply after a failed one: %v, %v; want ErrExchangeDone", ep, err)
	}
	rs.Close()
	if _, err := rs.Confirm(&Confirmation{ID: rs.ID()}, t0); !errors.Is(err, ErrExchangeDone) {
		t.Fatalf("Confirm after Close: %v", err)
	}
}

func TestExchangeArguments(t *testing.T) {
	for _, pair := range [][2]string{{"", "B"}, {"A", ""}, {"A", "A"}, {string(make([]byte, 256)), "B"}} {
		if _, _, err := NewExchange(pair[0], pair[1]); err == nil {
			t.Errorf("NewExchange(%q, %q) succeeded", pair[0], pair[1])
		}
	}
	if _, _, err := Respond("A", "B", nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("Respond(nil offer) = %v", err)
	}
	in, _, _ := NewExchange("A", "B")
	if _, _, err := in.Finish(nil, t0); !errors.Is(err, ErrMalformed) {
		t.Errorf("Finish(nil) = %v", err)
	}
}

func TestExchangeMessagesRoundTrip(t *testing.T) {
	in, offer, _ := NewExchange("KME-A", "KME-B")
	_, reply, _ := Respond("KME-A", "KME-B", offer)
	ep, conf, err := in.Finish(reply, t0)
	if err != nil || ep == nil {
		t.Fatal(err)
	}
	o, err := ParseOffer(offer.Marshal())
	if err != nil || o.ID != offer.ID || !bytes.Equal(o.PublicKey, offer.PublicKey) {
		t.Fatalf("offer: %v", err)
	}
	r, err := ParseReply(reply.Marshal())
	if err != nil || r.ID != reply.ID || r.Tag != reply.Tag || !bytes.Equal(r.Ciphertext, reply.Ciphertext) {
		t.Fatalf("reply: %v", err)
	}
	c, err := ParseConfirmation(conf.Marshal())
	if err != nil || *c != *conf {
		t.Fatalf("confirmation: %v", err)
	}
	// Each parser refuses the others' messages and every truncation.
	for _, b := range [][]byte{offer.Marshal(), reply.Marshal(), conf.Marshal()} {
		n := 0
		for _, parse := range []func([]byte) error{
			func(b []byte) error { _, err := ParseOffer(b); return err },
			func(b []byte) error { _, err := ParseReply(b); return err },
			func(b []byte) error { _, err := ParseConfirmation(b); return err },
		} {
			if parse(b) == nil {
				n++
			}
			if err := parse(b[:len(b)-1]); !errors.Is(err, ErrMalformed) {
				t.Errorf("truncated message: %v", err)
			}
		}
		if n != 1 {
			t.Errorf("%d parsers accept one message", n)
		}
	}
}
