package keydelivery

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pki"
)

// MsgUnauthenticated answers a caller without a valid SAE certificate (ETSI 014's 401).
const MsgUnauthenticated = "a client certificate of an SAE (Subject OU \"sae\") issued by this site's CA is required"

type server struct {
	keyspb.UnimplementedKeyDeliveryServer
	svc  Service
	opts Options
}

// Register installs the KeyDelivery service on s, which must be served over TLS requiring
// client certificates (credentials.NewTLS(pki.ServerConfig(...))).
func Register(s *grpc.Server, svc Service, opts Options) {
	keyspb.RegisterKeyDeliveryServer(s, newServer(svc, opts))
}

func newServer(svc Service, opts Options) *server {
	opts.fill()
	return &server{svc: svc, opts: opts}
}

// callerSAE returns the SAE ID of the verified client certificate of the call.
func (s *server) callerSAE(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, MsgUnauthenticated)
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", status.Error(codes.Unauthenticated, MsgUnauthenticated)
	}
	id, err := pki.Identify(&ti.State)
	if err != nil || id.Role != pki.RoleSAE {
		s.opts.Logger.Debug("keydelivery: refused caller", "role", id.Role, "err", err)
		return "", status.Error(codes.Unauthenticated, MsgUnauthenticated)
	}
	return id.ID, nil
}

func (s *server) GetStatus(ctx context.Context, req *keyspb.GetStatusRequest) (*keyspb.Status, error) {
	master, err := s.callerSAE(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkSAE("slave_sae_id", req.GetSlaveSaeId()); err != nil {
		return nil, err
	}
	st, err := s.svc.Status(ctx, master, req.GetSlaveSaeId())
	if err != nil {
		return nil, s.statusOf(err)
	}
	return st, nil
}

func (s *server) GetKey(ctx context.Context, req *keyspb.GetKeyRequest) (*keyspb.KeyContainer, error) {
	master, err := s.callerSAE(ctx)
	if err != nil {
		return nil, err
	}
	kr, err := checkGetKey(req)
	if err != nil {
		return nil, err
	}
	keys, err := s.svc.GetKey(ctx, master, req.GetSlaveSaeId(), kr)
	if err != nil {
		return nil, s.statusOf(err)
	}
	return container(keys), nil
}

func (s *server) GetKeyWithIDs(ctx context.Context, req *keyspb.GetKeyWithIDsRequest) (*keyspb.KeyContainer, error) {
	slave, err := s.callerSAE(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkGetKeyWithIDs(req); err != nil {
		return nil, err
	}
	requestID, err := idempotencyKey(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := s.svc.GetKeyWithIDs(ctx, slave, req.GetMasterSaeId(), req.GetKeyIds(), requestID)
	if err != nil {
		return nil, s.statusOf(err)
	}
	return container(keys), nil
}

// IdempotencyKeyMetadata is the gRPC metadata key with which a caller makes GetKeyWithIDs
// safe to retry, as etsi014.IdempotencyKeyHeader does for dec_keys: a call that repeats an
// earlier one's key IDs and value gets that call's keys again while the site keeps its answer.
const IdempotencyKeyMetadata = "idempotency-key"

// idempotencyKey returns the call's IdempotencyKeyMetadata value, "" when it has none.
func idempotencyKey(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	id, err := pki.OptionalID(md.Get(IdempotencyKeyMetadata))
	if err != nil {
		return "", invalid("metadata %s shall be one value of 1 to %d bytes without '/', '\\', '..' or control characters (a UUID will do)", IdempotencyKeyMetadata, pki.MaxIDLen)
	}
	return id, nil
}

func container(keys []Key) *keyspb.KeyContainer {
	out := &keyspb.KeyContainer{Keys: make([]*keyspb.Key, len(keys))}
	for i := range keys {
		out.Keys[i] = toProto(&keys[i])
	}
	return out
}

func toProto(k *Key) *keyspb.Key {
	pk := &keyspb.Key{KeyId: k.ID, Key: k.Bytes, Provenance: k.Provenance}
	if !k.Expires.IsZero() {
		pk.Expires = timestamppb.New(k.Expires)
	}
	return pk
}

// statusOf maps a Service error onto a gRPC status mirroring ETSI 014's status codes (see the
// package doc). Messages of rejected requests are the site's, written for the SAE.
func (s *server) statusOf(err error) error {
	msg := kms.Message(err)
	switch {
	case errors.Is(err, kms.ErrKeyNotFound):
		return status.Error(codes.InvalidArgument, "one or more keys specified are not found on KME: check the key IDs and master_sae_id; a key can be fetched once by each slave and only until it expires")
	case errors.Is(err, kms.ErrBadRequest), errors.Is(err, kms.ErrUnknownSAE):
		return status.Error(codes.InvalidArgument, msg)
	case errors.Is(err, kms.ErrUnauthorized):
		return status.Error(codes.PermissionDenied, msg)
	case errors.Is(err, kms.ErrNotEnoughKey):
		return status.Error(codes.ResourceExhausted, msg+"; retry later or ask for fewer or smaller keys")
	case errors.Is(err, kms.ErrRateLimited):
		return status.Error(codes.ResourceExhausted, msg)
	case errors.Is(err, kms.ErrNotConfirmed):
		return status.Error(codes.Unavailable, msg)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded before the KME answered; retry with a longer deadline")
	}
	if _, ok := status.FromError(err); ok {
		return err // already a status
	}
	s.opts.Logger.Error("keydelivery: service error", "err", err)
	return status.Error(codes.Unavailable, "internal error on the KME; retry later")
}
