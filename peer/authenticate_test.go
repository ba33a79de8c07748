package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/qkms/qkms/api/peerpb"
	"github.com/qkms/qkms/identity"
	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pq"
)

// signedSites is KME-B serving with an Authenticator, and the identities of KME-A and KME-B.
type signedSites struct {
	*site
	a, b     *identity.Signer
	authA    *Authenticator
	mu       sync.Mutex
	rejected []error
}

func startSignedSite(t *testing.T) *signedSites {
	t.Helper()
	a, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]*mldsa65.PublicKey{"KME-A": a.Public(), "KME-B": b.Public()}
	lookup := func(kme string) (*mldsa65.PublicKey, error) {
		if pk := keys[kme]; pk != nil {
			return pk, nil
		}
		return nil, fmt.Errorf("no key for %s", kme)
	}
	ss := &signedSites{a: a, b: b}
	authB := &Authenticator{Self: "KME-B", Signer: b, PeerKey: lookup, Guard: pq.NewReplayGuard(pq.DefaultWindow, 1024),
		OnReject: func(method, from string, err error) {
			ss.mu.Lock()
			defer ss.mu.Unlock()
			ss.rejected = append(ss.rejected, err)
		}}
	ss.authA = &Authenticator{Self: "KME-A", Signer: a, PeerKey: lookup, Guard: pq.NewReplayGuard(pq.DefaultWindow, 1024)}
	ca := newTestCA(t, "test CA")
	svc := newFakeService("KME-B")
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	tlsCfg := ca.serverTLS(ca.issue(t, "KME-B", "kme"))
	lis := serveWith(t, tlsCfg, grpc.ChainUnaryInterceptor(authB.ServerInterceptor(nil)), func(s *grpc.Server) { Register(s, svc, logger) })
	ss.site = &site{ca: ca, addr: lis, svc: svc}
	return ss
}

func serveWith(t *testing.T, tlsCfg *tls.Config, opt grpc.ServerOption, reg func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(append(ServerOptions(tlsCfg), opt)...)
	reg(s)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return lis.Addr().String()
}

func (ss *signedSites) dialSigned(t *testing.T, auth *Authenticator, extra ...grpc.DialOption) *Client {
	t.Helper()
	c, err := Dial(ss.addr, ss.ca.clientTLS(ss.ca.issue(t, "KME-A", "kme")), "KME-B", WithAuthenticator(auth), WithDialOptions(extra...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (ss *signedSites) rejections() []error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return append([]error(nil), ss.rejected...)
}

func TestSignedPeerMessages(t *testing.T) {
	ss := startSignedSite(t)
	ctx := testCtx(t)
	r := reservation("6f2c1c44-54f4-4d5c-9b4e-2f0b9d1d1a01", "KME-A", "KME-B")

	// An honest, signed call goes through, and its signed answer verifies.
	if _, _, err := ss.dialSigned(t, ss.authA).PushReservations(ctx, []kms.Reservation{r}); err != nil {
		t.Fatalf("signed push: %v", err)
	}
	if n := len(ss.rejections()); n != 0 {
		t.Fatalf("%d rejections of an honest call", n)
	}

	// Capture the envelope of one call, to replay it.
	var captured metadata.MD
	capture := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		captured, _ = metadata.FromOutgoingContext(ctx)
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	if _, err := ss.dialSigned(t, ss.authA, capture).PullReservations(ctx, []string{r.KeyID}); err != nil {
		t.Fatalf("signed pull: %v", err)
	}
	raw := ss.raw(t, "KME-A", "kme")
	pull := &peerpb.PullReservationsRequest{KeyIds: []string{r.KeyID}}

	mallory, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	forger := &Authenticator{Self: "KME-A", Signer: mallory, PeerKey: ss.authA.PeerKey, Guard: pq.NewReplayGuard(pq.DefaultWindow, 16)}
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"unsigned", func() error { _, err := raw.PullReservations(ctx, pull); return err }, ErrUnsigned},
		{"replayed", func() error {
			_, err := raw.PullReservations(metadata.NewOutgoingContext(ctx, captured), pull)
			return err
		}, pq.ErrReplay},
		{"other request under a captured envelope", func() error {
			_, err := raw.PullReservations(metadata.NewOutgoingContext(ctx, captured), &peerpb.PullReservationsRequest{KeyIds: []string{"6f2c1c44-54f4-4d5c-9b4e-2f0b9d1d1a02"}})
			return err
		}, ErrUnsigned},
		{"forged (another ML-DSA key)", func() error {
			_, err := ss.dialSigned(t, forger).PullReservations(ctx, []string{r.KeyID})
			return err
		}, pq.ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ss.rejections())
			err := tc.call()
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("got %v, want Unauthenticated", err)
			}
			rej := ss.rejections()
			if len(rej) != before+1 || !errors.Is(rej[len(rej)-1], tc.want) {
				t.Fatalf("rejections %v, want one more wrapping %v", rej[before:], tc.want)
			}
		})
	}
}

func TestEpochExchangeOverPeerChannel(t *testing.T) {
	ss := startSignedSite(t)
	ctx := testCtx(t)
	c := ss.dialSigned(t, ss.authA)
	for _, tamper := range []bool{false, true} {
		in, offer, err := pq.NewExchange("KME-A", "KME-B")
		if err != nil {
			t.Fatal(err)
		}
		replyB, err := c.OfferEpoch(ctx, offer.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		reply, err := pq.ParseReply(replyB)
		if err != nil {
			t.Fatal(err)
		}
		if tamper {
			reply.Ciphertext[0] ^= 1
		}
		ep, conf, err := in.Finish(reply, time.Now())
		if tamper {
			if !errors.Is(err, pq.ErrConfirmation) || ep != nil {
				t.Fatalf("tampered reply: epoch %v, err %v", ep, err)
			}
			// A confirmation the responder cannot verify yields no epoch there either.
			bad := &pq.Confirmation{ID: reply.ID}
			if _, err := c.ConfirmEpoch(ctx, bad.Marshal()); status.Code(errors.Unwrap(err)) != codes.FailedPrecondition && status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("bad confirmation: %v, want FailedPrecondition", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		id, err := c.ConfirmEpoch(ctx, conf.Marshal())
		if err != nil || id != ep.ID {
			t.Fatalf("confirm: %q, %v; want %s", id, err, ep.ID)
		}
	}
	if n := len(ss.svc.epochs); n != 1 {
		t.Fatalf("responder holds %d epochs, want 1", n)
	}
}
