package peer

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/qkms/qkms/identity"
	"github.com/qkms/qkms/pq"
)

// Message authentication on top of mutual TLS (issue 6, item 1). TLS authenticates the
// connection with classical (ECDSA) certificates; every peer message is in addition signed with
// the sending site's ML-DSA-65 identity (FIPS 204, package identity), so a forged or replayed
// message is refused even by an attacker who can break or bypass TLS (a harvest-now-forge-later
// adversary, a stolen TLS key, a TLS-terminating middlebox).
//
// Each unary call carries, in the metadata entry EnvelopeHeader, a pq.Seal envelope from the
// caller to the callee of type "<full method>" whose payload is the request digest
//
//	D_req  = SHA-256("qkms peer request v1" | len16 method | method | deterministic proto bytes)
//
// and each successful answer carries, in the trailer entry EnvelopeHeader, an envelope from the
// callee of type "<full method> response" whose payload is
//
//	D_resp = SHA-256("qkms peer response v1" | D_req | deterministic proto bytes of the answer)
//
// binding the answer to the request it answers. pq.Open checks the signature, the acceptance
// window and the replay guard (one per site). The envelope's sender must be the KME the TLS
// certificate names. Error answers are not signed: they carry no data a site acts on beyond
// "retry" or "give up", which an attacker able to cut the connection can cause anyway.

// EnvelopeHeader is the metadata (request) and trailer (answer) key of the signed envelope.
const EnvelopeHeader = "qkms-envelope-bin"

const responseSuffix = " response"

// clientAttempts matches the retry policy of retryConfig.
const clientAttempts = 4

// ErrUnsigned is a peer message without a valid envelope; the cause is wrapped next to it.
var ErrUnsigned = errors.New("peer: message not signed by the peer's identity")

// Authenticator signs this site's peer messages and verifies the peer's. It is safe for
// concurrent use; one per site (its replay guard must see every message).
type Authenticator struct {
	Self   string           // this site's KME ID
	Signer *identity.Signer // this site's ML-DSA-65 identity
	// PeerKey returns the ML-DSA-65 public key of a peer KME (from site configuration).
	PeerKey func(kme string) (*mldsa65.PublicKey, error)
	Guard   *pq.ReplayGuard
	// OnReject, if set, is told about every refused request (for the audit trail): the
	// method, the caller's KME ID from its certificate, and why.
	OnReject func(method, from string, err error)
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

func (a *Authenticator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func requestDigest(method string, req any) ([]byte, error) {
	m, ok := req.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("peer: sign %s: request is not a protobuf message", method)
	}
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("peer: sign %s: %w", method, err)
	}
	h := sha256.New()
	h.Write([]byte("qkms peer request v1"))
	h.Write([]byte{byte(len(method) >> 8), byte(len(method))})
	h.Write([]byte(method))
	h.Write(body)
	return h.Sum(nil), nil
}

func responseDigest(reqDigest []byte, resp any) ([]byte, error) {
	m, ok := resp.(proto.Message)
	if !ok {
		return nil, errors.New("peer: answer is not a protobuf message")
	}
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write([]byte("qkms peer response v1"))
	h.Write(reqDigest)
	h.Write(body)
	return h.Sum(nil), nil
}

// open checks an envelope from the KME from (named by its certificate) of type msgType over
// digest want.
func (a *Authenticator) open(env []byte, from, msgType string, want []byte) error {
	pk, err := a.PeerKey(from)
	if err != nil || pk == nil {
		return fmt.Errorf("%w: no identity key for %s: %v", ErrUnsigned, quote(from), err)
	}
	sender, typ, payload, err := pq.Open(map[string]*mldsa65.PublicKey{from: pk}, a.Self, env, a.now(), a.Guard)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnsigned, err)
	}
	if sender != from || typ != msgType || subtle.ConstantTimeCompare(payload, want) != 1 {
		return fmt.Errorf("%w: envelope of %s for %s does not match this message", ErrUnsigned, quote(sender), quote(typ))
	}
	return nil
}

// ServerInterceptor verifies the envelope of every call to the Peer service (calls of other
// services on the same server pass through) and signs its answer. identify maps the TLS state
// to the caller's KME ID (IdentifyKME when nil).
func (a *Authenticator) ServerInterceptor(identify Identify) grpc.UnaryServerInterceptor {
	if identify == nil {
		identify = IdentifyKME
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, "/qkms.peer.v1.Peer/") {
			return handler(ctx, req)
		}
		from := ""
		if p, ok := grpcpeer.FromContext(ctx); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
				from, _ = identify(&ti.State)
			}
		}
		if from == "" {
			return nil, status.Error(codes.Unauthenticated, "peer: the peer channel needs mutual TLS with a KME certificate")
		}
		reject := func(err error) error {
			if a.OnReject != nil {
				a.OnReject(info.FullMethod, from, err)
			}
			return status.Errorf(codes.Unauthenticated, "%v", err)
		}
		digest, err := requestDigest(info.FullMethod, req)
		if err != nil {
			return nil, reject(err)
		}
		md, _ := metadata.FromIncomingContext(ctx)
		envs := md.Get(EnvelopeHeader)
		if len(envs) != 1 {
			return nil, reject(fmt.Errorf("%w: %d envelopes in the request, want 1", ErrUnsigned, len(envs)))
		}
		if err := a.open([]byte(envs[0]), from, info.FullMethod, digest); err != nil {
			return nil, reject(err)
		}
		resp, err := handler(ctx, req)
		if err != nil {
			return resp, err
		}
		rd, err := responseDigest(digest, resp)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "peer: sign answer: %v", err)
		}
		env, err := pq.Seal(a.Signer, a.Self, from, info.FullMethod+responseSuffix, rd, a.now())
		if err != nil {
			return nil, status.Errorf(codes.Internal, "peer: sign answer: %v", err)
		}
		if err := grpc.SetTrailer(ctx, metadata.Pairs(EnvelopeHeader, string(env))); err != nil {
			return nil, status.Errorf(codes.Internal, "peer: sign answer: %v", err)
		}
		return resp, nil
	}
}

// ClientInterceptor signs every call to the Peer service at kme and verifies the answer's
// envelope; an answer without a valid one fails with ErrBadResponse (not retryable).
func (a *Authenticator) ClientInterceptor(kme string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if !strings.HasPrefix(method, "/qkms.peer.v1.Peer/") {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		digest, err := requestDigest(method, req)
		if err != nil {
			return err
		}
		// gRPC's own retries would resend the same envelope, which the callee's replay guard
		// refuses; Dial turns them off and this loop retries UNAVAILABLE with a fresh one.
		var trailer metadata.MD
		for attempt, backoff := 1, 100*time.Millisecond; ; attempt, backoff = attempt+1, min(2*backoff, time.Second) {
			env, err := pq.Seal(a.Signer, a.Self, kme, method, digest, a.now())
			if err != nil {
				return err
			}
			actx := metadata.AppendToOutgoingContext(ctx, EnvelopeHeader, string(env))
			trailer = nil
			err = invoker(actx, method, req, reply, cc, append(opts, grpc.Trailer(&trailer))...)
			if err == nil {
				break
			}
			if status.Code(err) != codes.Unavailable || attempt == clientAttempts {
				return err
			}
			select {
			case <-ctx.Done():
				return err
			case <-time.After(backoff):
			}
		}
		rd, err := responseDigest(digest, reply)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadResponse, err)
		}
		envs := trailer.Get(EnvelopeHeader)
		if len(envs) != 1 {
			return fmt.Errorf("%w: %w: %d envelopes in the answer", ErrBadResponse, ErrUnsigned, len(envs))
		}
		if err := a.open([]byte(envs[0]), kme, method+responseSuffix, rd); err != nil {
			return fmt.Errorf("%w: %w", ErrBadResponse, err)
		}
		return nil
	}
}
