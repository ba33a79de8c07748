package pq_test

import (
	"bytes"
	"fmt"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/qkms/qkms/identity"
	"github.com/qkms/qkms/pq"
)

// Example runs an epoch exchange between two sites through signed envelopes and derives the same
// pqc-fallback key at both ends. In qkms the envelopes travel over the peer channel and each site
// keeps one ReplayGuard for all its peer handlers.
func Example() {
	now := time.Now()
	idA, _ := identity.Generate()
	idB, _ := identity.Generate()
	atA := map[string]*mldsa65.PublicKey{"KME-B": idB.Public()} // from identity.LoadPublicKey
	atB := map[string]*mldsa65.PublicKey{"KME-A": idA.Public()}
	guardA, guardB := pq.NewReplayGuard(pq.DefaultWindow, 0), pq.NewReplayGuard(pq.DefaultWindow, 0)

	// A -> B: offer.
	in, offer, _ := pq.NewExchange("KME-A", "KME-B")
	env, _ := pq.Seal(idA, "KME-A", "KME-B", pq.MsgOffer, offer.Marshal(), now)
	from, _, payload, _ := pq.Open(atB, "KME-B", env, now, guardB)
	o, _ := pq.ParseOffer(payload)
	rs, reply, _ := pq.Respond(from, "KME-B", o)

	// B -> A: reply; A keeps its epoch only if B's tag verifies.
	env, _ = pq.Seal(idB, "KME-B", "KME-A", pq.MsgReply, reply.Marshal(), now)
	_, _, payload, _ = pq.Open(atA, "KME-A", env, now, guardA)
	r, _ := pq.ParseReply(payload)
	epochA, conf, err := in.Finish(r, now)
	if err != nil {
		fmt.Println(err)
		return
	}

	// A -> B: confirmation; B keeps its epoch only if A's tag verifies.
	env, _ = pq.Seal(idA, "KME-A", "KME-B", pq.MsgConfirm, conf.Marshal(), now)
	_, _, payload, _ = pq.Open(atB, "KME-B", env, now, guardB)
	c, _ := pq.ParseConfirmation(payload)
	epochB, err := rs.Confirm(c, now)
	if err != nil {
		fmt.Println(err)
		return
	}

	// Both sites derive key "k1" without it crossing the wire.
	kc := pq.KeyContext{KeyID: "k1", SourceKME: "KME-A", TargetKME: "KME-B", MasterSAE: "SAE-A1", SlaveSAEs: []string{"SAE-B1"}}
	ka, _ := pq.PQCKey(epochA, kc, 32)
	kb, _ := pq.PQCKey(epochB, kc, 32)
	fmt.Println("same key:", bytes.Equal(ka, kb))

	// A replayed envelope is refused.
	_, _, _, err = pq.Open(atB, "KME-B", env, now, guardB)
	fmt.Println(err != nil)
	// Output:
	// same key: true
	// true
}
