package site

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pki"
)

// Link health is read from the blocks' own records (ingest time, QBER, size), which every node
// of the site holds, so any node answers ListLinks the same way.
const (
	// linkWindow is the span of recent blocks over which QBER and key rate are averaged.
	linkWindow = time.Minute
	// linkUpAfter: a link whose last block is older than this is reported down. Simulated and
	// vendor links deliver a block every few seconds when healthy.
	linkUpAfter = 30 * time.Second
)

// ListLinks reports, per peer, where its key comes from and how the link is doing: up (a block
// arrived recently), QBER and secret key rate over the last linkWindow of ingested blocks, the
// time of the last block, and how many blocks were discarded (tag mismatch with the peer, or
// pending when the pool was zeroized).
func (s adminService) ListLinks(ctx context.Context, _ *keyspb.ListLinksRequest) (*keyspb.ListLinksResponse, error) {
	if err := s.requireAdmin(ctx); err != nil {
		return nil, err
	}
	now := time.Now()
	out := &keyspb.ListLinksResponse{}
	err := s.n.rn.Read(ctx, func(tx kms.Tx) error {
		var peers []string
		if err := tx.Pools(func(p *kms.Pool) bool { peers = append(peers, p.Peer); return true }); err != nil {
			return err
		}
		for _, peer := range peers {
			l := &keyspb.Link{PeerKmeId: peer, Source: s.n.linkSource(peer)}
			var last, first time.Time
			var bits, qberBits float64
			err := tx.Blocks(peer, func(b *kms.Block) bool {
				if b.State == kms.BlockDiscarded {
					l.BlocksDiscarded++
				}
				if b.Ingested.After(last) {
					last = b.Ingested
				}
				if now.Sub(b.Ingested) <= linkWindow {
					if first.IsZero() || b.Ingested.Before(first) {
						first = b.Ingested
					}
					bits += float64(b.Bytes) * 8
					qberBits += b.QBER * float64(b.Bytes) * 8
				}
				return true
			})
			if err != nil {
				return err
			}
			if !last.IsZero() {
				l.LastBlock = timestamppb.New(last)
				l.Up = now.Sub(last) <= linkUpAfter
			}
			if bits > 0 {
				// Over the window, or since the first block when the link is younger than it.
				span := min(linkWindow, now.Sub(first))
				if span > 0 {
					l.KeyRateBps = bits / span.Seconds()
				}
				l.Qber = qberBits / bits
			}
			out.Links = append(out.Links, l)
		}
		return nil
	})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read links: %v; retry, or ask another node of the site", err)
	}
	return out, nil
}

// linkSource names where the site takes the key it shares with peer.
func (n *Node) linkSource(peer string) string {
	for _, u := range n.cfg.Upstream {
		if u.Peer == peer {
			return "etsi014 upstream " + u.URL
		}
	}
	return "qkdsim"
}

// Zeroize erases this site's pool for a peer (kms.ZeroizeCmd): every block's material is
// destroyed and every key of the pool not yet fetched here is voided. It is recorded in the
// audit trail with the caller and the reason. The peer site keeps its copy of the blocks;
// zeroize it there too to retire the link's key on both sides.
func (s adminService) Zeroize(ctx context.Context, req *keyspb.ZeroizeRequest) (*keyspb.ZeroizeResponse, error) {
	peer := req.GetPeerKmeId()
	id, err := s.adminOnPeer(ctx, peer)
	if err != nil {
		return nil, err
	}
	var exists bool
	if err := s.n.rn.Read(ctx, func(tx kms.Tx) error {
		p, err := tx.Pool(peer)
		exists = p != nil
		return err
	}); err != nil {
		return nil, status.Errorf(codes.Unavailable, "read pools: %v; retry, or ask another node of the site", err)
	}
	if !exists {
		return nil, status.Errorf(codes.NotFound, "%s has no pool for %q; list the pools with `qkmsctl pools`", s.n.cfg.KMEID, peer)
	}
	res, err := s.n.propose(ctx, &kms.Command{Zeroize: &kms.ZeroizeCmd{Peer: peer, Actor: id.ID, Reason: req.GetReason()}})
	switch {
	case err == nil:
	case errors.Is(err, kms.ErrBadRequest):
		return nil, status.Error(codes.InvalidArgument, kms.Message(err))
	default:
		return nil, status.Errorf(codes.Unavailable, "zeroize not confirmed (%v); check `qkmsctl pools` and retry", err)
	}
	s.n.log.Warn("pool zeroized", "peer", peer, "by", id.ID, "blocks", len(res.Zeroized), "keys_voided", len(res.Expired))
	return &keyspb.ZeroizeResponse{BlocksErased: int64(len(res.Zeroized)), KeysVoided: int64(len(res.Expired))}, nil
}

// SetLinkPaused pauses (or resumes) the issuing of QKD key on the link with peerKME through
// the replicated log, so every node of the site agrees; policies that allow pqc keep serving
// from the PQ epoch meanwhile. actor and reason go to the audit trail.
func (n *Node) SetLinkPaused(ctx context.Context, peerKME string, paused bool, actor, reason string) error {
	if actor == "" {
		actor = "local"
	}
	_, err := n.propose(ctx, &kms.Command{Link: &kms.LinkCmd{Peer: peerKME, Paused: paused, Actor: actor, Reason: reason}})
	return err
}

// PauseLink stops the issuing of QKD key on the link with a peer (kms.LinkCmd).
func (s adminService) PauseLink(ctx context.Context, req *keyspb.LinkRequest) (*keyspb.LinkResponse, error) {
	return s.setLink(ctx, req, true)
}

// ResumeLink resumes the issuing of QKD key on the link with a peer.
func (s adminService) ResumeLink(ctx context.Context, req *keyspb.LinkRequest) (*keyspb.LinkResponse, error) {
	return s.setLink(ctx, req, false)
}

func (s adminService) setLink(ctx context.Context, req *keyspb.LinkRequest, paused bool) (*keyspb.LinkResponse, error) {
	peer := req.GetPeerKmeId()
	id, err := s.adminOnPeer(ctx, peer)
	if err != nil {
		return nil, err
	}
	known := false
	for _, p := range s.n.cfg.Peers {
		known = known || p.KMEID == peer
	}
	if !known {
		return nil, status.Errorf(codes.NotFound, "%s has no link with %q; see `qkmsctl links`", s.n.cfg.KMEID, peer)
	}
	switch err := s.n.SetLinkPaused(ctx, peer, paused, id.ID, req.GetReason()); {
	case err == nil:
	case errors.Is(err, kms.ErrBadRequest):
		return nil, status.Error(codes.InvalidArgument, kms.Message(err))
	default:
		return nil, status.Errorf(codes.Unavailable, "not confirmed (%v); retry", err)
	}
	s.n.log.Warn("link pause changed", "peer", peer, "paused", paused, "by", id.ID)
	return &keyspb.LinkResponse{Paused: paused}, nil
}

// adminOnPeer checks that the caller is an admin and peer a well-formed KME ID, and returns the
// caller's identity for the audit record of the action.
func (s adminService) adminOnPeer(ctx context.Context, peer string) (pki.Identity, error) {
	if err := s.requireAdmin(ctx); err != nil {
		return pki.Identity{}, err
	}
	id, err := caller(ctx)
	if err != nil {
		return pki.Identity{}, err
	}
	if err := pki.CheckID(peer); err != nil {
		return pki.Identity{}, status.Errorf(codes.InvalidArgument, "peer_kme_id: %v", err)
	}
	return id, nil
}
