package site

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/qkms/qkms/api/etsi014"
	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/peer"
)

// etsiService implements ETSI GS QKD 014 for SAEs on top of the replicated kms state.
type etsiService struct{ n *Node }

func errorsIsApplied(err error) bool { return errors.Is(err, kms.ErrAlreadyApplied) }

func (s etsiService) Status(ctx context.Context, master, slave string) (*etsi014.Status, error) {
	st, err := s.n.status(ctx, master, slave)
	if err != nil {
		return nil, err
	}
	return &etsi014.Status{
		SourceKMEID: st.SourceKMEID, TargetKMEID: st.TargetKMEID,
		MasterSAEID: st.MasterSAEID, SlaveSAEID: st.SlaveSAEID,
		KeySize: st.KeySize, StoredKeyCount: st.StoredKeyCount, MaxKeyCount: st.MaxKeyCount,
		MaxKeyPerRequest: st.MaxKeyPerRequest, MaxKeySize: st.MaxKeySize, MinKeySize: st.MinKeySize,
		MaxSAEIDCount: st.MaxSAEIDCount,
	}, nil
}

func (s etsiService) GetKey(ctx context.Context, master, slave string, req etsi014.KeyRequest) ([]etsi014.DeliveredKey, error) {
	keys, err := s.n.issue(ctx, master, slave, issueRequest{number: req.Number, size: req.Size, additional: req.AdditionalSlaveSAEIDs})
	if err != nil {
		return nil, err
	}
	return deliver(keys), nil
}

func (s etsiService) GetKeyWithIDs(ctx context.Context, slave, master string, keyIDs []string, requestID string) ([]etsi014.DeliveredKey, error) {
	keys, err := s.n.fetch(ctx, slave, master, keyIDs, requestID)
	if err != nil {
		return nil, err
	}
	return deliver(keys), nil
}

// The key delivery paths every API (ETSI 014 REST, gRPC KeyDelivery) goes through, so they
// share semantics, authorization and metrics.

// status is Get status for master and slave, read linearizably.
func (n *Node) status(ctx context.Context, master, slave string) (kms.StatusInfo, error) {
	ctx, cancel := n.requestContext(ctx)
	defer cancel()
	var st kms.StatusInfo
	err := n.rn.Read(ctx, func(tx kms.Tx) error {
		var err error
		st, err = n.machine.Status(tx, master, slave)
		return err
	})
	return st, err
}

// issueRequest is a Get key request as the APIs hand it to issue. number 0 means 1, size 0
// the default key size; ids (optional) are the keys' IDs, else fresh UUIDs are drawn; ttl 0
// means the site's key TTL.
type issueRequest struct {
	number, size int
	additional   []string
	ids          []string
	ttl          time.Duration
}

// issue is Get key at the master's site: validate, propose Issue, queue the reservations for
// the push to the peer site (see push.go), and return the keys for the master.
func (n *Node) issue(ctx context.Context, master, slave string, req issueRequest) ([]kms.Key, error) {
	if err := n.rateLimit(master, opIssue, req.number); err != nil {
		return nil, err
	}
	ctx, cancel := n.requestContext(ctx)
	defer cancel()
	number, size := req.number, req.size
	if number == 0 {
		number = 1
	}
	if size == 0 {
		size = n.machine.Limits().KeySize
	}
	if err := n.machine.ValidateIssue(master, slave, number, size, req.additional); err != nil {
		return nil, err
	}
	peerKME, _ := n.machine.Registry().KME(slave)
	ids := req.ids
	if ids == nil {
		ids = make([]string, number)
		for i := range ids {
			ids[i] = newKeyID()
		}
	}
	ttl := req.ttl
	if ttl <= 0 {
		ttl = n.cfg.KeyTTL
	}
	now := time.Now().UTC()
	res, err := n.issueUnderPolicy(ctx, n.policyFor(master, slave), &kms.Command{
		Time:  now,
		ReqID: "issue/" + ids[0],
		Issue: &kms.IssueCmd{
			Self: n.cfg.KMEID, Peer: peerKME, Master: master,
			Slaves: append([]string{slave}, req.additional...),
			Bits:   size, KeyIDs: ids, Expires: now.Add(ttl),
		},
	})
	if err != nil {
		return nil, err
	}
	// The leader queued res.Reservations for push when it applied the Issue (applied).
	return res.Keys, nil
}

// fetch is Get key with key IDs at a slave's site: wait for (or pull) the reservations that
// have not arrived yet, then propose Fetch, unless the push of the reservations carried it
// (handoff.go). requestID, the slave's idempotency key or "", names the Fetch's request
// record, so that a retry gets the keys the first call took (kms.Machine.replay) for as long
// as the record is kept (kms RequestTTL). It is scoped to the slave, whose ID comes from its
// certificate: no SAE can name another's request.
func (n *Node) fetch(ctx context.Context, slave, master string, keyIDs []string, requestID string) ([]kms.Key, error) {
	if err := n.rateLimit(slave, opFetch, len(keyIDs)); err != nil {
		return nil, err
	}
	ctx, cancel := n.requestContext(ctx)
	defer cancel()
	reqID := "fetch/" + slave + "/" + newKeyID()
	if requestID != "" {
		reqID = "fetch/" + slave + "/idem/" + requestID
	}
	cmd := &kms.Command{
		ReqID: reqID,
		Fetch: &kms.FetchCmd{Master: master, Caller: slave, KeyIDs: keyIDs},
	}
	res, err := n.ensureReservations(ctx, master, cmd)
	if err != nil {
		return nil, err
	}
	if res == nil {
		if res, err = n.propose(ctx, cmd); err != nil {
			return nil, err
		}
	}
	return res.Keys, nil
}

// pushGrace is how long a dec_keys that overtook the push of its reservations waits for it
// before pulling them from the issuing site (a peer round trip with two signatures, and a log
// entry more). A push normally lands within milliseconds of enc_keys; an ID the master's site
// never issued costs this wait before it is reported as not found.
const pushGrace = 200 * time.Millisecond

// ensureReservations makes sure this site holds the reservations of the keys fetch asks for,
// issued at the master's site: it waits up to pushGrace for the ones not received yet to be
// pushed, then pulls what is still missing. Unknown IDs stay unknown: Fetch then answers "not
// found". While it waits, a push reaching this node may apply fetch itself (handoff.go): its
// Result is then returned, and nil otherwise (the caller proposes fetch).
func (n *Node) ensureReservations(ctx context.Context, master string, fetch *kms.Command) (*kms.Result, error) {
	owner, ok := n.machine.Registry().KME(master)
	if !ok || owner == n.cfg.KMEID {
		return nil, nil // Fetch will report them as not found
	}
	outcome := fetchPresent
	defer func() { n.observeFetchWait(owner, outcome) }()
	// Register before the read: a reservation applied after it wakes w (handoffs.applied).
	w := n.handoff.add(fetch, fetch.Fetch.KeyIDs)
	defer n.handoff.remove(w)
	settled := false // a push carried the Fetch, which did not deliver
	// The applied state, deferred updates included, with no check of leadership: an ID missed
	// here is waited for or pulled needlessly, and storing a reservation twice is a no-op; the
	// Fetch itself goes through the log.
	missing, err := n.db.MissingReservations(fetch.Fetch.KeyIDs)
	if err == nil && len(missing) > 0 {
		outcome = fetchPushed // unless what follows finds otherwise
		n.handoff.narrow(w, missing)
		grace := time.NewTimer(pushGrace)
		defer grace.Stop()
	wait:
		for {
			select {
			case o := <-w.done: // a push carried the Fetch, and its entry is applied
				if res := o.delivered(); res != nil {
					outcome = fetchHandoff
					return res, nil
				}
				settled = true
				break wait
			case <-w.wake:
			case <-grace.C:
				break wait
			case <-ctx.Done():
				break wait
			}
			// The IDs of one enc_keys travel in one push: check the first, then the rest.
			var first []string
			if first, err = n.db.MissingReservations(missing[:1]); err != nil {
				break wait
			}
			if len(first) == 0 {
				if missing, err = n.db.MissingReservations(missing); err != nil || len(missing) == 0 {
					break wait
				}
			}
		}
	}
	if !settled && !w.withdraw() { // a push claimed the Fetch
		var res *kms.Result
		if res, err = w.outcome(ctx); res != nil || err != nil {
			outcome = fetchHandoff
			if err != nil {
				outcome = fetchError
			}
			return res, err
		}
		settled = true
	}
	if settled {
		// The handed-off Fetch failed, or its outcome is unknown: go on as if it had not been
		// handed off.
		missing, err = n.db.MissingReservations(w.missing)
	}
	switch {
	case err != nil:
		outcome = fetchError
		return nil, err
	case ctx.Err() != nil:
		outcome = fetchUnavailable
		return nil, fmt.Errorf("%w: the reservations have not arrived from %s yet; retry later", kms.ErrNotConfirmed, owner)
	case len(missing) == 0:
		return nil, nil
	}
	var rs []kms.Reservation
	err = n.withPeer(owner, func(c *peer.Client) error {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		var err error
		rs, err = c.PullReservations(pctx, missing)
		return err
	})
	if err != nil {
		outcome = fetchUnavailable
		return nil, fmt.Errorf("%w: the issuing site %s cannot be reached; retry later", kms.ErrNotConfirmed, owner)
	}
	if len(rs) == 0 {
		outcome = fetchNotIssued
		return nil, nil
	}
	// No request ID: storing a reservation is idempotent by key ID already.
	_, err = n.propose(ctx, &kms.Command{PeerReserve: &kms.PeerReserveCmd{From: owner, Reservations: rs}})
	if err != nil && !errorsIsApplied(err) {
		outcome = fetchError
		return nil, err
	}
	outcome = fetchPulled
	return nil, nil
}

// newKeyID returns a time-ordered UUID (version 7, RFC 9562): 48 bits of milliseconds, then 74
// random bits. Key IDs and request IDs key the store's reservation and request-record
// buckets; random (version 4) IDs would scatter every batch's records over the B+trees' leaf
// pages, and the pages a commit dirties, spills and writes would grow with the number of keys
// stored. Ordered IDs append at the right edge, and a batch dirties a few pages. The ID only
// names a key (SAEs exchange it in the clear); its issue time to the millisecond is no secret.
// Like uuid.NewString it panics only if the system's random source fails.
func newKeyID() string { return uuid.Must(uuid.NewV7()).String() }

// requestContext bounds an SAE request: a site without a leader (an election, a partition)
// answers 503 after Config.RequestTimeout instead of holding the SAE.
func (n *Node) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, n.cfg.RequestTimeout)
}

func deliver(keys []kms.Key) []etsi014.DeliveredKey {
	out := make([]etsi014.DeliveredKey, len(keys))
	for i, k := range keys {
		prov := provenanceOf(k)
		ext := provenanceExt[prov]
		if ext == nil {
			ext = map[string]any{"qkms_provenance": string(prov)}
		}
		out[i] = etsi014.DeliveredKey{ID: k.ID, Bytes: k.Bytes, Extension: ext}
	}
	return out
}

// provenanceExt holds the key_extension of each known provenance, shared by every key
// delivered with it (the handler only reads extensions). Never write to these maps.
var provenanceExt = map[kms.Provenance]map[string]any{
	kms.ProvenanceQKD:    {"qkms_provenance": string(kms.ProvenanceQKD)},
	kms.ProvenanceHybrid: {"qkms_provenance": string(kms.ProvenanceHybrid)},
	kms.ProvenancePQC:    {"qkms_provenance": string(kms.ProvenancePQC)},
}

// provenanceOf is a delivered key's provenance (QKD when the reservation does not say).
func provenanceOf(k kms.Key) kms.Provenance {
	if k.Res != nil && k.Res.Provenance != "" {
		return k.Res.Provenance
	}
	return kms.ProvenanceQKD
}
