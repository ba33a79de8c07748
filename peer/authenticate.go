package peer

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/qkms/qkms/api/peerpb"
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
//
// The per-key traffic (macMethods: pushes and pulls of reservations, over a hundred calls a
// second each way under load) may instead travel in MAC envelopes (pq.SealMAC) under the
// key of a PQ epoch both sites recorded (Authenticator.MACKey): the epoch's exchange was
// signed with both identities, so its key authenticates the calls as the signatures would,
// for a fraction of the CPU. The answer uses the request's key. Every other call, the epoch
// exchange among them, is always signed. A caller whose MAC envelope is refused (the callee
// has not recorded the epoch yet, or predates MAC envelopes) repeats the call signed, and signs
// its calls to that KME for macRetryAfter.

// EnvelopeHeader is the metadata (request) and trailer (answer) key of the signed envelope.
const EnvelopeHeader = "qkms-envelope-bin"

const responseSuffix = " response"

// clientAttempts matches the retry policy of retryConfig.
const clientAttempts = 4

// macRetryAfter is how long a caller signs its calls to a KME that refused a MAC envelope.
const macRetryAfter = time.Minute

// macMethods may travel in MAC envelopes; every other method must be signed.
var macMethods = map[string]bool{
	peerpb.Peer_PushReservations_FullMethodName: true,
	peerpb.Peer_PullReservations_FullMethodName: true,
}

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

	// MACKey, if set, returns the MAC key to send calls of macMethods to a peer KME under
	// (nil: sign them); MACKeyByID the key shared with a peer KME under an epoch ID, or nil.
	// Without MACKeyByID, MAC envelopes are refused.
	MACKey     func(kme string) *pq.MACKey
	MACKeyByID func(kme, id string) *pq.MACKey

	macMu      sync.Mutex
	macRefused map[string]time.Time // peer KME -> until when its calls are signed

	sealedMAC, sealedSigned atomic.Uint64
}

// Sealed returns how many envelopes (calls and answers) this Authenticator has made of each
// kind, for metrics.
func (a *Authenticator) Sealed() (mac, signed uint64) {
	return a.sealedMAC.Load(), a.sealedSigned.Load()
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

// open checks an envelope from the KME from (named by its certificate) of type msgType, a
// message of method, over digest want. It returns the MAC key of a MAC envelope, nil for a
// signed one.
func (a *Authenticator) open(env []byte, from, method, msgType string, want []byte) (*pq.MACKey, error) {
	var sender, typ string
	var payload []byte
	var key *pq.MACKey
	var err error
	if pq.IsMACEnvelope(env) {
		if !macMethods[method] || a.MACKeyByID == nil {
			return nil, fmt.Errorf("%w: MAC envelope for %s, which must be signed", ErrUnsigned, method)
		}
		keys := func(kme, id string) *pq.MACKey {
			if kme != from {
				return nil
			}
			return a.MACKeyByID(kme, id)
		}
		sender, typ, payload, key, err = pq.OpenMAC(keys, a.Self, env, a.now(), a.Guard)
	} else {
		pk, perr := a.PeerKey(from)
		if perr != nil || pk == nil {
			return nil, fmt.Errorf("%w: no identity key for %s: %v", ErrUnsigned, quote(from), perr)
		}
		sender, typ, payload, err = pq.Open(map[string]*mldsa65.PublicKey{from: pk}, a.Self, env, a.now(), a.Guard)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsigned, err)
	}
	if sender != from || typ != msgType || subtle.ConstantTimeCompare(payload, want) != 1 {
		return nil, fmt.Errorf("%w: envelope of %s for %s does not match this message", ErrUnsigned, quote(sender), quote(typ))
	}
	return key, nil
}

// seal makes the envelope of a message of type msgType to KME to: a MAC envelope under key,
// or signed when key is nil.
func (a *Authenticator) seal(key *pq.MACKey, to, msgType string, digest []byte) ([]byte, error) {
	if key != nil {
		a.sealedMAC.Add(1)
		return pq.SealMAC(key, a.Self, to, msgType, digest, a.now())
	}
	a.sealedSigned.Add(1)
	return pq.Seal(a.Signer, a.Self, to, msgType, digest, a.now())
}

// sendKey is the MAC key for a call of method to kme, or nil to sign it.
func (a *Authenticator) sendKey(kme, method string) *pq.MACKey {
	if !macMethods[method] || a.MACKey == nil {
		return nil
	}
	a.macMu.Lock()
	until, refused := a.macRefused[kme]
	a.macMu.Unlock()
	if refused && a.now().Before(until) {
		return nil
	}
	return a.MACKey(kme)
}

// refuseMAC makes calls to kme signed for macRetryAfter.
func (a *Authenticator) refuseMAC(kme string) {
	a.macMu.Lock()
	defer a.macMu.Unlock()
	if a.macRefused == nil {
		a.macRefused = map[string]time.Time{}
	}
	a.macRefused[kme] = a.now().Add(macRetryAfter)
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
		key, err := a.open([]byte(envs[0]), from, info.FullMethod, info.FullMethod, digest)
		if err != nil {
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
		env, err := a.seal(key, from, info.FullMethod+responseSuffix, rd)
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
		// refuses; Dial turns them off and call retries UNAVAILABLE with a fresh one.
		call := func(key *pq.MACKey) (trailer metadata.MD, err error) {
			for attempt, backoff := 1, 100*time.Millisecond; ; attempt, backoff = attempt+1, min(2*backoff, time.Second) {
				env, err := a.seal(key, kme, method, digest)
				if err != nil {
					return nil, err
				}
				actx := metadata.AppendToOutgoingContext(ctx, EnvelopeHeader, string(env))
				trailer = nil
				err = invoker(actx, method, req, reply, cc, append(opts, grpc.Trailer(&trailer))...)
				if err == nil || status.Code(err) != codes.Unavailable || attempt == clientAttempts {
					return trailer, err
				}
				select {
				case <-ctx.Done():
					return nil, err
				case <-time.After(backoff):
				}
			}
		}
		key := a.sendKey(kme, method)
		trailer, err := call(key)
		if key != nil && status.Code(err) == codes.Unauthenticated {
			// The callee does not take this MAC envelope (nothing was done): repeat the call
			// signed, and sign for a while.
			a.refuseMAC(kme)
			trailer, err = call(nil)
		}
		if err != nil {
			return err
		}
		rd, err := responseDigest(digest, reply)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadResponse, err)
		}
		envs := trailer.Get(EnvelopeHeader)
		if len(envs) != 1 {
			return fmt.Errorf("%w: %w: %d envelopes in the answer", ErrBadResponse, ErrUnsigned, len(envs))
		}
		if _, err := a.open([]byte(envs[0]), kme, method, method+responseSuffix, rd); err != nil {
			return fmt.Errorf("%w: %w", ErrBadResponse, err)
		}
		return nil
	}
}
