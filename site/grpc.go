package site

import (
	"context"
	"fmt"
	"net"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/qkms/qkms/api/keydelivery"
	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/kms"
)

// grpcService implements the gRPC KeyDelivery service for SAEs on the same key delivery paths
// as ETSI 014 (status, issue, fetch in etsi.go), so both APIs share semantics and
// authorization: a key issued over one can be fetched over the other.
type grpcService struct{ n *Node }

var provenanceToProto = map[kms.Provenance]keyspb.Provenance{
	kms.ProvenanceQKD:    keyspb.Provenance_PROVENANCE_QKD,
	kms.ProvenanceHybrid: keyspb.Provenance_PROVENANCE_HYBRID,
	kms.ProvenancePQC:    keyspb.Provenance_PROVENANCE_PQC,
}

func (s grpcService) Status(ctx context.Context, master, slave string) (*keyspb.Status, error) {
	st, err := s.n.status(ctx, master, slave)
	if err != nil {
		return nil, err
	}
	return &keyspb.Status{
		SourceKmeId: st.SourceKMEID, TargetKmeId: st.TargetKMEID, MasterSaeId: st.MasterSAEID, SlaveSaeId: st.SlaveSAEID,
		KeySize: int32(st.KeySize), StoredKeyCount: int64(st.StoredKeyCount), MaxKeyCount: int64(st.MaxKeyCount),
		MaxKeyPerRequest: int32(st.MaxKeyPerRequest), MaxKeySize: int32(st.MaxKeySize), MinKeySize: int32(st.MinKeySize),
		MaxSaeIdCount: int32(st.MaxSAEIDCount),
	}, nil
}

func (s grpcService) GetKey(ctx context.Context, master, slave string, req keydelivery.KeyRequest) ([]keydelivery.Key, error) {
	keys, err := s.n.issue(ctx, master, slave, issueRequest{number: req.Number, size: req.Size,
		additional: req.AdditionalSlaves, ids: req.KeyIDs, ttl: req.TTL})
	if err != nil {
		return nil, err
	}
	return toDelivered(keys), nil
}

func (s grpcService) GetKeyWithIDs(ctx context.Context, slave, master string, keyIDs []string, requestID string) ([]keydelivery.Key, error) {
	keys, err := s.n.fetch(ctx, slave, master, keyIDs, requestID)
	if err != nil {
		return nil, err
	}
	return toDelivered(keys), nil
}

// Known reads this node's state without a linearizable read: it only tells FollowKeys when
// to fetch, and the fetch itself goes through the replicated log.
func (s grpcService) Known(ctx context.Context, slave, master string, keyIDs []string) (int, error) {
	known := 0
	err := s.n.rn.ReadStale(func(tx kms.Tx) error {
		for _, id := range keyIDs {
			r, err := tx.Reservation(id)
			if err != nil {
				return err
			}
			if r == nil || r.State != kms.KeyIssued || r.Master != master ||
				!slices.Contains(r.Slaves, slave) || slices.Contains(r.Fetched, slave) {
				return nil
			}
			known++
		}
		return nil
	})
	return known, err
}

func toDelivered(keys []kms.Key) []keydelivery.Key {
	out := make([]keydelivery.Key, len(keys))
	for i, k := range keys {
		out[i] = keydelivery.Key{ID: k.ID, Bytes: k.Bytes, Provenance: provenanceToProto[provenanceOf(k)]}
		if k.Res != nil {
			out[i].Expires = k.Res.Expires
		}
	}
	return out
}

// listenGRPC starts the gRPC listener for SAEs (Listen.GRPC): KeyDelivery over mutual TLS,
// plus the standard health service and server reflection so that grpcurl and load balancer
// probes work (both still behind mutual TLS: any certificate of the site's CA will do).
func (n *Node) listenGRPC() error {
	a := n.cfg.Listen.GRPC
	if a == "" {
		return nil
	}
	ln, err := net.Listen("tcp", a)
	if err != nil {
		return fmt.Errorf("site: grpc listener: %w", err)
	}
	n.grpcLn = ln
	n.grpcSrv = grpc.NewServer(grpc.Creds(credentials.NewTLS(n.serverTLS)),
		// Fixed flow-control windows turn off gRPC's BDP estimation pings: key messages are
		// small, and the pings cost a frame and a wake-up per burst of requests.
		grpc.InitialWindowSize(1<<20), grpc.InitialConnWindowSize(1<<20),
		// Wipes the delivered keys once encoded (unary answers are encoded after the handler).
		grpc.ForceServerCodecV2(keydelivery.ServerCodec()),
		grpc.ChainUnaryInterceptor(n.metrics.unaryInterceptor),
		grpc.ChainStreamInterceptor(n.metrics.streamInterceptor))
	keydelivery.Register(n.grpcSrv, grpcService{n}, keydelivery.Options{Logger: n.log})
	hs := health.NewServer()
	hs.SetServingStatus(keyspb.KeyDelivery_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(n.grpcSrv, hs)
	reflection.Register(n.grpcSrv)
	n.grpcHealth = hs
	go n.grpcSrv.Serve(ln)
	return nil
}

// closeGRPC stops the gRPC listener, letting calls in flight finish for a while; streams
// (which end only when their caller cancels) are cut after that.
func (n *Node) closeGRPC() {
	if n.grpcSrv == nil {
		return
	}
	n.grpcHealth.Shutdown()
	done := make(chan struct{})
	go func() { n.grpcSrv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		n.grpcSrv.Stop()
	}
}

// GRPCAddr is the bound address of the gRPC KeyDelivery listener ("" if none).
func (n *Node) GRPCAddr() string { return addrOf(n.grpcLn) }
