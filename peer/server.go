package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/qkms/qkms/api/peerpb"
	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pq"
)

// Keepalive settings shared by server and client. The server's enforcement MinTime must not
// exceed the client's ping interval, or the server closes the connection ("too_many_pings").
const (
	keepaliveTime    = 30 * time.Second // client pings an idle connection this often
	keepaliveTimeout = 10 * time.Second // and drops it if the ping is not answered in time
	keepaliveMinTime = 15 * time.Second // server refuses pings more frequent than this
)

// ServerOption configures Register.
type ServerOption func(*server)

// WithIdentify replaces IdentifyKME, e.g. with the pki package's identity mapping.
func WithIdentify(f Identify) ServerOption {
	return func(s *server) { s.identify = f }
}

// ServerOptions returns the gRPC server options the peer channel needs: mutual TLS with
// client certificates required (forced on a clone of tlsCfg) and a keepalive policy that
// accepts the client's pings. A site that serves other gRPC services on the same server must
// keep these settings.
func ServerOptions(tlsCfg *tls.Config) []grpc.ServerOption {
	cfg := tlsCfg.Clone()
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	return []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(cfg)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * keepaliveTime, Timeout: keepaliveTimeout}),
	}
}

// Register registers the peer service, answering with svc, on s. logger may be nil.
func Register(s grpc.ServiceRegistrar, svc Service, logger *slog.Logger, opts ...ServerOption) {
	srv := &server{svc: svc, identify: IdentifyKME, log: logger}
	if srv.log == nil {
		srv.log = slog.New(slog.DiscardHandler)
	}
	for _, o := range opts {
		o(srv)
	}
	peerpb.RegisterPeerServer(s, srv)
}

type server struct {
	peerpb.UnimplementedPeerServer
	svc      Service
	identify Identify
	log      *slog.Logger
}

// caller returns the KME ID of the caller from its verified client certificate.
func (s *server) caller(ctx context.Context) (string, error) {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "peer: no connection information; the peer channel needs mutual TLS")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "peer: connection is not TLS; the peer channel needs mutual TLS with a KME certificate")
	}
	id, err := s.identify(&info.State)
	if err != nil {
		code := codes.PermissionDenied
		if errors.Is(err, ErrUnverified) {
			code = codes.Unauthenticated
		}
		s.log.Warn("peer: refused caller", "addr", p.Addr.String(), "err", err)
		return "", status.Errorf(code, "%v; the peer channel accepts only KME certificates (Subject OU \"kme\")", err)
	}
	return id, nil
}

// fail turns an error of validation or of the Service into a gRPC status and logs it.
func (s *server) fail(rpc, from string, err error) error {
	st := statusOf(err)
	level := slog.LevelWarn
	if st.Code() == codes.Internal {
		level = slog.LevelError
	}
	s.log.Log(context.Background(), level, "peer: call failed", "rpc", rpc, "from", from, "code", st.Code().String(), "err", err)
	return st.Err()
}

// statusOf maps errors to gRPC codes: statuses pass through, validation and kms sentinels map
// to their codes, and anything else is Internal without its text (it may describe local
// state the peer has no business seeing).
func statusOf(err error) *status.Status {
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return st
	}
	switch {
	case errors.Is(err, pq.ErrConfirmation), errors.Is(err, pq.ErrWrongExchange), errors.Is(err, pq.ErrExchangeDone):
		return status.New(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrInvalid), errors.Is(err, kms.ErrBadRequest), errors.Is(err, pq.ErrMalformed):
		return status.New(codes.InvalidArgument, err.Error())
	case errors.Is(err, kms.ErrUnauthorized):
		return status.New(codes.PermissionDenied, err.Error())
	case errors.Is(err, kms.ErrKeyNotFound):
		return status.New(codes.NotFound, err.Error())
	case errors.Is(err, kms.ErrNotEnoughKey):
		return status.New(codes.ResourceExhausted, err.Error())
	case errors.Is(err, kms.ErrNotConfirmed):
		return status.New(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, "peer: call canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, "peer: deadline exceeded; retry with the same request")
	}
	return status.New(codes.Internal, "peer: internal error at the responding site; retry later, and see its log")
}

func (s *server) CompareBlocks(ctx context.Context, req *peerpb.CompareBlocksRequest) (*peerpb.CompareBlocksResponse, error) {
	const rpc = "CompareBlocks"
	from, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	tags, err := tagsFromProto(req.GetTags())
	if err != nil {
		return nil, s.fail(rpc, from, err)
	}
	vs, err := s.svc.CompareBlocks(ctx, from, tags)
	if err != nil {
		return nil, s.fail(rpc, from, err)
	}
	if err := checkVerdicts(vs, tags); err != nil {
		return nil, s.fail(rpc, from, fmt.Errorf("peer: service answer: %v", err))
	}
	return &peerpb.CompareBlocksResponse{Verdicts: verdictsToProto(vs)}, nil
}

func (s *server) PushReservations(ctx context.Context, req *peerpb.PushReservationsRequest) (*peerpb.PushReservationsResponse, error) {
	const rpc = "PushReservations"
	from, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	rs, err := reservationsFromProto(req.GetReservations())
	if err == nil && len(rs) == 0 {
		err = invalid("no reservations")
	}
	if err != nil {
		return nil, s.fail(rpc, from, err)
	}
	for _, r := range rs {
		if r.Owner != from {
			return nil, s.fail(rpc, from, status.Errorf(codes.PermissionDenied,
				"peer: key %s is owned by %s; a site may push only reservations it issued", r.KeyID, quote(r.Owner)))
		}
	}
	accepted, rejected, err := s.svc.PushReservations(ctx, from, rs)
	if err != nil {
		return nil, s.fail(rpc, from, err)
	}
	resp := pushAnswerToProto(accepted, rejected)
	if _, _, err := pushAnswerFromProto(resp, rs); err != nil {
		return nil, s.fail(rpc, from, fmt.Errorf("peer: service answer: %v", err))
	}
	return resp, nil
}

func (s *server) PullReservations(ctx context.Context, req *peerpb.PullReservationsRequest) (*peerpb.PullReservationsResponse, error) {
	const rpc = "PullReservations"
	from, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	ids := req.GetKeyIds()
	if err := checkKeyIDs(ids, MaxKeyIDs); err != nil {
		return nil, s.fail(rpc, from, err)
	}
	rs, err := s.svc.PullReservations(ctx, from, ids)
	if err != nil {
		return nil, s.fail(rpc, from, err)
	}
	resp := &peerpb.PullReservationsResponse{Reservations: reservationsToProto(rs)}
	if len(rs) > 0 {
		// The answering site is the owner of what it returns; check it against the first
		// reservation's owner, the same rule the client applies with the KME it dialled.
		if _, err := pullAnswerFromProto(resp.Reservations, ids, rs[0].Owner); err != nil {
			return nil, s.fail(rpc, from, fmt.Errorf("peer: service answer: %v", err))
		}
	}
	return resp, nil
}

func (s *server) RequestBlocks(ctx context.Context, req *peerpb.RequestBlocksRequest) (*peerpb.RequestBlocksResponse, error) {
	const rpc = "RequestBlocks"
	from, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkWant(req.GetRequestId(), req.GetWantBytes()); err != nil {
		return nil, s.fail(rpc, from, err)
	}
	ids, err := s.svc.RequestBlocks(ctx, from, req.GetRequestId(), req.GetWantBytes())
	if err != nil {
		return nil, s.fail(rpc, from, err)
	}
	if err := checkBlockIDs(ids); err != nil {
		return nil, s.fail(rpc, from, fmt.Errorf("peer: service answer: %v", err))
	}
	return &peerpb.RequestBlocksResponse{BlockIds: ids}, nil
}

func (s *server) OfferEpoch(ctx context.Context, req *peerpb.EpochMessage) (*peerpb.EpochMessage, error) {
	const rpc = "OfferEpoch"
	from, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if m := req.GetMessage(); len(m) == 0 || len(m) > MaxEpochMessage {
		return nil, s.fail(rpc, from, invalid("epoch message of %d bytes", len(m)))
	}
	reply, err := s.svc.OfferEpoch(ctx, from, req.GetMessage())
	if err != nil {
		return nil, s.fail(rpc, from, err)
	}
	return &peerpb.EpochMessage{Message: reply}, nil
}

func (s *server) ConfirmEpoch(ctx context.Context, req *peerpb.EpochMessage) (*peerpb.EpochAck, error) {
	const rpc = "ConfirmEpoch"
	from, err := s.caller(ctx)
	if err != nil {
		return nil, err
	}
	if m := req.GetMessage(); len(m) == 0 || len(m) > MaxEpochMessage {
		return nil, s.fail(rpc, from, invalid("epoch message of %d bytes", len(m)))
	}
	id, err := s.svc.ConfirmEpoch(ctx, from, req.GetMessage())
	if err != nil {
		return nil, s.fail(rpc, from, err)
	}
	return &peerpb.EpochAck{EpochId: id}, nil
}
