package site

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pki"
)

// adminService is the operators' interface of one node (qkms.v1.Admin). Only certificates
// with the admin role may call it, except that a node of this same site may ask to join.
// It never returns key bytes.
type adminService struct {
	keyspb.UnimplementedAdminServer
	n *Node
}

func newAdminServer(n *Node) *grpc.Server {
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(n.serverTLS)))
	keyspb.RegisterAdminServer(s, adminService{n: n})
	return s
}

// caller returns the verified identity of the gRPC caller.
func caller(ctx context.Context) (pki.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "no peer information")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "a client certificate is required")
	}
	id, err := pki.Identify(&ti.State)
	if err != nil {
		return pki.Identity{}, status.Error(codes.Unauthenticated, err.Error())
	}
	return id, nil
}

func (s adminService) requireAdmin(ctx context.Context) error {
	id, err := caller(ctx)
	if err != nil {
		return err
	}
	if id.Role != pki.RoleAdmin {
		s.n.log.Warn("admin call refused", "caller", id.ID, "role", id.Role)
		method, _ := grpc.Method(ctx)
		s.n.recordAdmin(ctx, method, id.ID, "denied", "role "+string(id.Role))
		return status.Errorf(codes.PermissionDenied, "%s %q may not use the admin API; use an admin certificate", id.Role, id.ID)
	}
	return nil
}

// recordDone writes a completed operator action of the calling admin to the audit trail.
func (s adminService) recordDone(ctx context.Context, detail string) {
	id, _ := caller(ctx)
	method, _ := grpc.Method(ctx)
	s.n.recordAdmin(ctx, method, id.ID, "done", detail)
}

func (s adminService) ClusterStatus(ctx context.Context, _ *keyspb.ClusterStatusRequest) (*keyspb.ClusterStatusResponse, error) {
	if err := s.requireAdmin(ctx); err != nil {
		return nil, err
	}
	members, err := s.n.rn.Members()
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	out := &keyspb.ClusterStatusResponse{KmeId: s.n.cfg.KMEID, AppliedIndex: s.n.rn.AppliedIndex()}
	leaderID, _ := s.n.rn.Leader()
	out.LeaderId = leaderID
	stats := s.n.rn.Stats()
	out.Term, _ = strconv.ParseUint(stats["term"], 10, 64)
	out.CommitIndex, _ = strconv.ParseUint(stats["commit_index"], 10, 64)
	for _, m := range members {
		out.Members = append(out.Members, &keyspb.Member{Id: m.ID, Address: m.Addr, Voter: m.Voter, Leader: m.Leader})
	}
	return out, nil
}

func (s adminService) JoinNode(ctx context.Context, req *keyspb.JoinNodeRequest) (*keyspb.JoinNodeResponse, error) {
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if id.Role != pki.RoleAdmin && !(id.Role == pki.RoleKME && id.ID == s.n.cfg.KMEID) {
		s.n.recordAdmin(ctx, keyspb.Admin_JoinNode_FullMethodName, id.ID, "denied", "role "+string(id.Role))
		return nil, status.Errorf(codes.PermissionDenied, "%s %q may not add nodes to %s", id.Role, id.ID, s.n.cfg.KMEID)
	}
	if req.GetNodeId() == "" || req.GetRaftAddress() == "" {
		return nil, status.Error(codes.InvalidArgument, "node_id and raft_address are required")
	}
	if err := s.n.rn.Join(ctx, req.GetNodeId(), req.GetRaftAddress()); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	s.n.log.Info("node joined the site", "node_id", req.GetNodeId(), "raft_address", req.GetRaftAddress(), "by", id.ID)
	s.n.recordAdmin(ctx, keyspb.Admin_JoinNode_FullMethodName, id.ID, "done", "node "+req.GetNodeId()+" at "+req.GetRaftAddress())
	return &keyspb.JoinNodeResponse{}, nil
}

func (s adminService) RemoveNode(ctx context.Context, req *keyspb.RemoveNodeRequest) (*keyspb.RemoveNodeResponse, error) {
	if err := s.requireAdmin(ctx); err != nil {
		return nil, err
	}
	if req.GetNodeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "node_id is required")
	}
	if err := s.n.rn.Remove(ctx, req.GetNodeId()); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	s.n.log.Info("node removed from the site", "node_id", req.GetNodeId())
	s.recordDone(ctx, "node "+req.GetNodeId())
	return &keyspb.RemoveNodeResponse{}, nil
}

func (s adminService) Snapshot(ctx context.Context, _ *keyspb.SnapshotRequest) (*keyspb.SnapshotResponse, error) {
	if err := s.requireAdmin(ctx); err != nil {
		return nil, err
	}
	if err := s.n.rn.Snapshot(); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	s.recordDone(ctx, "")
	return &keyspb.SnapshotResponse{Index: s.n.rn.AppliedIndex()}, nil
}

func (s adminService) StateDigest(ctx context.Context, _ *keyspb.StateDigestRequest) (*keyspb.StateDigestResponse, error) {
	if err := s.requireAdmin(ctx); err != nil {
		return nil, err
	}
	idx, digest, err := s.n.StateDigest()
	if err != nil {
		return nil, status.Error(codes.Internal, "state digest failed")
	}
	return &keyspb.StateDigestResponse{AppliedIndex: idx, Digest: digest}, nil
}

func (s adminService) ListSAEs(ctx context.Context, _ *keyspb.ListSAEsRequest) (*keyspb.ListSAEsResponse, error) {
	if err := s.requireAdmin(ctx); err != nil {
		return nil, err
	}
	out := &keyspb.ListSAEsResponse{}
	for sae, kme := range s.n.cfg.SAEs {
		out.Saes = append(out.Saes, &keyspb.SAE{SaeId: sae, KmeId: kme})
	}
	return out, nil
}

func (s adminService) ListPools(ctx context.Context, _ *keyspb.ListPoolsRequest) (*keyspb.ListPoolsResponse, error) {
	if err := s.requireAdmin(ctx); err != nil {
		return nil, err
	}
	out := &keyspb.ListPoolsResponse{}
	keyBytes := int64(s.n.machine.Limits().KeySize / 8)
	err := s.n.rn.Read(ctx, func(tx kms.Tx) error {
		return tx.Pools(func(p *kms.Pool) bool {
			out.Pools = append(out.Pools, &keyspb.Pool{PeerKmeId: p.Peer, AvailableBytes: p.Available,
				PendingBytes: p.Pending, ReservedBytes: p.Reserved, StoredKeyCount: p.Available / keyBytes})
			return true
		})
	})
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return out, nil
}

func (s adminService) GetKeyInfo(ctx context.Context, req *keyspb.GetKeyInfoRequest) (*keyspb.KeyInfo, error) {
	if err := s.requireAdmin(ctx); err != nil {
		return nil, err
	}
	var r *kms.Reservation
	err := s.n.rn.Read(ctx, func(tx kms.Tx) error {
		var err error
		r, err = tx.Reservation(req.GetKeyId())
		return err
	})
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if r == nil {
		return nil, status.Errorf(codes.NotFound, "key %q is not known at %s", req.GetKeyId(), s.n.cfg.KMEID)
	}
	prov := map[kms.Provenance]keyspb.Provenance{kms.ProvenanceQKD: keyspb.Provenance_PROVENANCE_QKD,
		kms.ProvenanceHybrid: keyspb.Provenance_PROVENANCE_HYBRID, kms.ProvenancePQC: keyspb.Provenance_PROVENANCE_PQC}
	return &keyspb.KeyInfo{KeyId: r.KeyID, OwnerKmeId: r.Owner, PeerKmeId: r.Peer, MasterSaeId: r.Master,
		SlaveSaeIds: r.Slaves, FetchedBy: r.Fetched, Bits: int32(r.Bits), Provenance: prov[r.Provenance],
		Issued: timestamppb.New(r.Issued), Expires: timestamppb.New(r.Expires),
		State: [...]string{"issued", "fetched", "expired"}[min(int(r.State), 2)], Pushed: r.Pushed}, nil
}

// StateDigest hashes this node's replicated records (pools, blocks, reservations, audit head) in key order,
// with the applied index. Sealed material is left out: erasure reseals with fresh nonces, so
// its bytes differ between nodes holding the same state.
func (n *Node) StateDigest() (uint64, []byte, error) {
	h := sha256.New()
	var idx uint64
	err := n.db.View(func(tx kms.Tx) error {
		var err error
		if idx, err = n.db.AppliedIndex(); err != nil {
			return err
		}
		binary.Write(h, binary.BigEndian, idx)
		enc := json.NewEncoder(h)
		var peers []string
		if err := tx.Pools(func(p *kms.Pool) bool { peers = append(peers, p.Peer); enc.Encode(p); return true }); err != nil {
			return err
		}
		for _, p := range peers {
			if err := tx.Blocks(p, func(b *kms.Block) bool { enc.Encode(b); return true }); err != nil {
				return err
			}
		}
		if err := tx.Reservations(func(r *kms.Reservation) bool { enc.Encode(r); return true }); err != nil {
			return err
		}
		// The audit head stands for the whole trail: it hashes every entry before it.
		seq, head, err := tx.AuditHead()
		if err != nil {
			return err
		}
		binary.Write(h, binary.BigEndian, seq)
		h.Write(head)
		return nil
	})
	return idx, h.Sum(nil), err
}
