package site

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"google.golang.org/grpc"

	"github.com/qkms/qkms/identity"
	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/peer"
	"github.com/qkms/qkms/pq"
)

// The post-quantum side of the peer channel (issue 6): every peer message signed with the
// site's ML-DSA-65 identity (peer.Authenticator; the same key as the audit trail's, kept apart
// by FIPS 204 context strings), or, for pushes and pulls of reservations, authenticated with
// the MAC key of a PQ epoch (mackeys.go); and PQ epochs agreed with each peer by an X-Wing
// exchange with key confirmation (package pq), run by the site whose KME ID sorts first and
// recorded, sealed, in both sites' replicated state (kms.EpochCmd) before any key is derived
// from it.

// pqState is a node's identity on the peer channel and its pending exchanges.
type pqState struct {
	auth    *peer.Authenticator
	refresh pq.RefreshPolicy

	mu      sync.Mutex
	keys    map[string]*mldsa65.PublicKey // peer KME -> identity, loaded on first use
	pending map[string]*pq.Responder      // initiator KME -> exchange awaiting its confirmation
	running map[string]bool               // peers with an exchange in flight (initiator side)

	// audit of refused peer messages, bounded so a flood of forgeries cannot flood the log
	rejectSec   atomic.Int64
	rejectCount atomic.Int64
}

// maxRejectAudits bounds the refused peer messages audited per second (the rest are logged).
const maxRejectAudits = 20

func newPQState(n *Node, signer *identity.Signer) *pqState {
	s := &pqState{keys: map[string]*mldsa65.PublicKey{}, pending: map[string]*pq.Responder{}, running: map[string]bool{},
		refresh: pq.RefreshPolicy{MaxKeys: n.cfg.PQRefresh.Keys, MaxAge: n.cfg.PQRefresh.Every}}
	s.auth = &peer.Authenticator{Self: n.cfg.KMEID, Signer: signer, PeerKey: n.peerIdentity,
		Guard: pq.NewReplayGuard(pq.DefaultWindow, pq.DefaultReplayMemory), OnReject: n.peerRejected,
		MACKey: n.macSendKey, MACKeyByID: n.macKeyByID}
	return s
}

// IdentityPublicKeyFile is the file of the site's ML-DSA-65 public key (written beside its
// signing key): what the peer site configures as peers[].identity_pub.
func (n *Node) IdentityPublicKeyFile() string {
	return identity.PublicKeyPath(signingKeyPath(n.cfg))
}

// SetPeerIdentity sets peers[].identity_pub of kme (for Pair, whose sites start one by one).
func (n *Node) SetPeerIdentity(kme, path string) {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	for i := range n.cfg.Peers {
		if n.cfg.Peers[i].KMEID == kme {
			n.cfg.Peers[i].IdentityPub = path
		}
	}
}

// peerIdentity loads a peer's ML-DSA-65 public key from peers[].identity_pub.
func (n *Node) peerIdentity(kme string) (*mldsa65.PublicKey, error) {
	s := n.pq
	s.mu.Lock()
	pk := s.keys[kme]
	s.mu.Unlock()
	if pk != nil {
		return pk, nil
	}
	path := n.peerIdentityPath(kme)
	if path == "" {
		return nil, fmt.Errorf("site: no identity_pub configured for peer %s", kme)
	}
	pk, err := identity.LoadPublicKey(path)
	if err != nil {
		return nil, fmt.Errorf("site: identity of peer %s: %w", kme, err)
	}
	s.mu.Lock()
	s.keys[kme] = pk
	s.mu.Unlock()
	return pk, nil
}

func (n *Node) peerIdentityPath(kme string) string {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	for _, p := range n.cfg.Peers {
		if p.KMEID == kme {
			return p.IdentityPub
		}
	}
	return ""
}

// signedPeers reports whether any peer has an identity configured: then every peer message
// must be signed, and a peer without one cannot talk to this site.
func (n *Node) signedPeers() bool {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	for _, p := range n.cfg.Peers {
		if p.IdentityPub != "" {
			return true
		}
	}
	return false
}

// peerServerOptions adds message authentication to the peer server.
func (n *Node) peerServerOptions() []grpc.ServerOption {
	opts := peer.ServerOptions(n.serverTLS)
	return append(opts, grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if !n.signedPeers() {
			return h(ctx, req) // no peer identity configured: mTLS only
		}
		return n.pq.auth.ServerInterceptor(nil)(ctx, req, info, h)
	}))
}

// peerRejected audits a refused peer message (a forgery, a replay, a stale or unsigned one).
func (n *Node) peerRejected(method, from string, err error) {
	n.log.Warn("peer message refused", "rpc", method, "from", from, "err", err)
	now := time.Now().Unix()
	s := n.pq
	if s.rejectSec.Swap(now) != now {
		s.rejectCount.Store(0)
	}
	if s.rejectCount.Add(1) > maxRejectAudits {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		defer cancel()
		detail := err.Error()
		if len(detail) > 1024 {
			detail = detail[:1024]
		}
		if _, err := n.propose(ctx, &kms.Command{Admin: &kms.AdminCmd{Action: method, Actor: "kme:" + from,
			Outcome: "rejected", Peer: from, Detail: detail}}); err != nil {
			n.log.Warn("could not audit a refused peer message", "err", err)
		}
	}()
}

// initiates says whether this site runs the exchanges with peerKME (its KME ID sorts first).
func (n *Node) initiates(peerKME string) bool { return n.cfg.KMEID < peerKME }

// OfferEpoch answers the initiator's offer; nothing is recorded until its confirmation.
func (s peerService) OfferEpoch(ctx context.Context, from string, offer []byte) ([]byte, error) {
	n := s.n
	if n.initiates(from) {
		return nil, fmt.Errorf("%w: site: %s runs the epoch exchanges with %s, not the reverse", kms.ErrBadRequest, n.cfg.KMEID, from)
	}
	o, err := pq.ParseOffer(offer)
	if err != nil {
		return nil, err
	}
	rs, reply, err := pq.Respond(from, n.cfg.KMEID, o)
	if err != nil {
		return nil, err
	}
	n.pq.mu.Lock()
	if old := n.pq.pending[from]; old != nil {
		old.Close()
	}
	n.pq.pending[from] = rs
	n.pq.mu.Unlock()
	return reply.Marshal(), nil
}

// ConfirmEpoch verifies the initiator's tag and records the epoch; a tag that does not verify
// ends the exchange with no epoch.
func (s peerService) ConfirmEpoch(ctx context.Context, from string, confirm []byte) (string, error) {
	n := s.n
	c, err := pq.ParseConfirmation(confirm)
	if err != nil {
		return "", err
	}
	n.pq.mu.Lock()
	rs := n.pq.pending[from]
	if rs != nil && rs.ID() == c.ID {
		delete(n.pq.pending, from)
	}
	n.pq.mu.Unlock()
	if rs == nil || rs.ID() != c.ID {
		return "", fmt.Errorf("site: confirmation from %s: %w", from, pq.ErrWrongExchange)
	}
	defer rs.Close()
	ep, err := rs.Confirm(c, time.Now().UTC())
	if err != nil {
		n.log.Warn("PQ epoch confirmation failed; no epoch", "peer", from, "err", err)
		return "", fmt.Errorf("site: epoch with %s: %w", from, err)
	}
	if err := n.recordEpoch(ctx, from, ep); err != nil {
		return "", err
	}
	return c.ID.String(), nil
}

// recordEpoch seals ep with the store's master key and records it in the replicated state.
func (n *Node) recordEpoch(ctx context.Context, peerKME string, ep *pq.Epoch) error {
	defer ep.Destroy()
	plain := ep.Marshal()
	sealed, err := n.db.Seal(peerKME, kms.EpochBlockID(ep.ID), plain)
	size := len(plain)
	clear(plain)
	if err != nil {
		return fmt.Errorf("site: seal epoch %s: %w", ep.ID, err)
	}
	_, err = n.propose(ctx, &kms.Command{ReqID: "epoch/" + ep.ID,
		Epoch: &kms.EpochCmd{Peer: peerKME, ID: ep.ID, Created: ep.Created, Sealed: sealed, Size: size}})
	if err != nil && !errorsIsApplied(err) {
		return fmt.Errorf("site: record epoch %s with %s: %w", ep.ID, peerKME, err)
	}
	return nil
}

// refreshEpochs starts an exchange with every peer this site initiates with whose current
// epoch is missing or due (pq.RefreshPolicy). Leader loop only; exchanges run in the
// background, one per peer at a time.
func (n *Node) refreshEpochs() {
	now := time.Now()
	n.peersMu.Lock()
	peers := append([]PeerConfig(nil), n.cfg.Peers...)
	n.peersMu.Unlock()
	for _, p := range peers {
		peerKME := p.KMEID
		if !n.initiates(peerKME) {
			continue
		}
		var cur *kms.EpochInfo
		n.rn.ReadStale(func(tx kms.Tx) error {
			pool, err := tx.Pool(peerKME)
			if err == nil && pool != nil {
				if e := pool.CurrentEpoch(); e != nil {
					c := *e
					cur = &c
				}
			}
			return err
		})
		due := cur == nil || (n.pq.refresh.MaxKeys > 0 && cur.Keys >= n.pq.refresh.MaxKeys) ||
			(n.pq.refresh.MaxAge > 0 && now.Sub(cur.Created) >= n.pq.refresh.MaxAge)
		if !due {
			continue
		}
		n.pq.mu.Lock()
		busy := n.pq.running[peerKME]
		n.pq.running[peerKME] = true
		n.pq.mu.Unlock()
		if busy {
			continue
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer func() { n.pq.mu.Lock(); delete(n.pq.running, peerKME); n.pq.mu.Unlock() }()
			ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
			defer cancel()
			if err := n.runExchange(ctx, peerKME); err != nil && n.ctx.Err() == nil {
				n.log.Warn("PQ epoch exchange failed; will retry", "peer", peerKME, "err", err)
			}
		}()
	}
}

// errExchange marks a failed exchange (for tests).
var errExchange = errors.New("site: PQ epoch exchange failed")

// runExchange runs one exchange as initiator: offer, reply (checked by Finish: a reply whose
// confirmation tag does not verify yields no epoch), confirm; the epoch is recorded here only
// after the peer recorded it.
func (n *Node) runExchange(ctx context.Context, peerKME string) error {
	in, offer, err := pq.NewExchange(n.cfg.KMEID, peerKME)
	if err != nil {
		return err
	}
	defer in.Close()
	var replyB []byte
	if err := n.withPeer(peerKME, func(c *peer.Client) error {
		replyB, err = c.OfferEpoch(ctx, offer.Marshal())
		return err
	}); err != nil {
		return fmt.Errorf("%w: offer: %w", errExchange, err)
	}
	return n.finishExchange(ctx, peerKME, in, replyB)
}

func (n *Node) finishExchange(ctx context.Context, peerKME string, in *pq.Initiator, replyB []byte) error {
	reply, err := pq.ParseReply(replyB)
	if err != nil {
		return fmt.Errorf("%w: reply: %w", errExchange, err)
	}
	ep, conf, err := in.Finish(reply, time.Now().UTC())
	if err != nil {
		return fmt.Errorf("%w: %w", errExchange, err)
	}
	var id string
	if err := n.withPeer(peerKME, func(c *peer.Client) error {
		id, err = c.ConfirmEpoch(ctx, conf.Marshal())
		return err
	}); err != nil {
		ep.Destroy()
		return fmt.Errorf("%w: confirm: %w", errExchange, err)
	}
	if id != ep.ID {
		ep.Destroy()
		return fmt.Errorf("%w: peer recorded epoch %q, not %s", errExchange, id, ep.ID)
	}
	return n.recordEpoch(ctx, peerKME, ep)
}
