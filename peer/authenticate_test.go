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

// startSignedSite starts KME-B; configure, if given, amends both Authenticators first.
func startSignedSite(t *testing.T, configure ...func(authA, authB *Authenticator)) *signedSites {
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
	for _, c := range configure {
		c(ss.authA, authB)
	}
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

// testMACKeys runs an epoch exchange between KME-A and KME-B and returns the MAC key each
// derives.
func testMACKeys(t *testing.T) (ka, kb *pq.MACKey) {
	t.Helper()
	in, offer, err := pq.NewExchange("KME-A", "KME-B")
	if err != nil {
		t.Fatal(err)
	}
	rs, reply, err := pq.Respond("KME-A", "KME-B", offer)
	if err != nil {
		t.Fatal(err)
	}
	ea, conf, err := in.Finish(reply, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	eb, err := rs.Confirm(conf, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if ka, err = pq.DeriveMACKey(ea); err != nil {
		t.Fatal(err)
	}
	if kb, err = pq.DeriveMACKey(eb); err != nil {
		t.Fatal(err)
	}
	return ka, kb
}

// envelopeKinds records, on the client side, whether each call's request and answer
// travelled in MAC envelopes (true) or signed ones (false).
type envelopeKinds struct {
	mu            sync.Mutex
	calls, answer []bool
}

func (k *envelopeKinds) option() grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		md, _ := metadata.FromOutgoingContext(ctx)
		var trailer metadata.MD
		err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Trailer(&trailer))...)
		k.mu.Lock()
		defer k.mu.Unlock()
		if envs := md.Get(EnvelopeHeader); len(envs) == 1 {
			k.calls = append(k.calls, pq.IsMACEnvelope([]byte(envs[0])))
		}
		if envs := trailer.Get(EnvelopeHeader); len(envs) == 1 {
			k.answer = append(k.answer, pq.IsMACEnvelope([]byte(envs[0])))
		}
		return err
	})
}

func (k *envelopeKinds) get() (calls, answers []bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]bool(nil), k.calls...), append([]bool(nil), k.answer...)
}

// TestMACPeerMessages: with an epoch's MAC key at both sites, pushes and pulls and their
// answers travel in MAC envelopes; every other call is signed; a MAC envelope under a wrong
// key, or for a method that must be signed, is refused and reported like a forged signature.
func TestMACPeerMessages(t *testing.T) {
	ka, kb := testMACKeys(t)
	ss := startSignedSite(t, func(authA, authB *Authenticator) {
		authA.MACKey = func(kme string) *pq.MACKey {
			if kme == "KME-B" {
				return ka
			}
			return nil
		}
		authA.MACKeyByID = func(kme, id string) *pq.MACKey {
			if kme == "KME-B" && id == ka.ID {
				return ka
			}
			return nil
		}
		authB.MACKeyByID = func(kme, id string) *pq.MACKey {
			if kme == "KME-A" && id == kb.ID {
				return kb
			}
			return nil
		}
	})
	ctx := testCtx(t)
	r := reservation("6f2c1c44-54f4-4d5c-9b4e-2f0b9d1d1a01", "KME-A", "KME-B")
	var kinds envelopeKinds
	c := ss.dialSigned(t, ss.authA, kinds.option())
	if _, _, err := c.PushReservations(ctx, []kms.Reservation{r}); err != nil {
		t.Fatalf("push: %v", err)
	}
	if _, err := c.PullReservations(ctx, []string{r.KeyID}); err != nil {
		t.Fatalf("pull: %v", err)
	}
	if _, err := c.CompareBlocks(ctx, []BlockTag{{BlockID: "b1", Tag: make([]byte, 32)}}); err != nil {
		t.Fatalf("compare: %v", err)
	}
	calls, answers := kinds.get()
	want := []bool{true, true, false} // push and pull under the MAC key, compare signed
	if fmt.Sprint(calls) != fmt.Sprint(want) || fmt.Sprint(answers) != fmt.Sprint(want) {
		t.Fatalf("MAC envelopes: calls %v, answers %v, want %v for both", calls, answers, want)
	}
	if n := len(ss.rejections()); n != 0 {
		t.Fatalf("%d rejections of honest calls", n)
	}

	// A MAC key of another epoch under this epoch's ID: what someone who saw the ID but not the
	// exchange's secret could make.
	forgedKey, _ := testMACKeys(t)
	forged := *forgedKey
	forged.ID = ka.ID
	forger := &Authenticator{Self: "KME-A", Signer: ss.a, PeerKey: ss.authA.PeerKey, Guard: pq.NewReplayGuard(pq.DefaultWindow, 16),
		MACKey: func(string) *pq.MACKey { return &forged }}
	raw := ss.raw(t, "KME-A", "kme")
	compare := &peerpb.CompareBlocksRequest{}
	macEnvelope := func(method string, req any) metadata.MD {
		d, err := requestDigest(method, req)
		if err != nil {
			t.Fatal(err)
		}
		env, err := pq.SealMAC(ka, "KME-A", "KME-B", method, d, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return metadata.Pairs(EnvelopeHeader, string(env))
	}
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"forged MAC", func() error {
			// The forger's call is refused; it then repeats it signed with KME-A's own
			// identity (which it holds here), so look only at the first refusal.
			_, err := ss.dialSigned(t, forger).PullReservations(ctx, []string{r.KeyID})
			return err
		}, pq.ErrBadSignature},
		{"MAC envelope for a method that must be signed", func() error {
			_, err := raw.CompareBlocks(metadata.NewOutgoingContext(ctx, macEnvelope(peerpb.Peer_CompareBlocks_FullMethodName, compare)), compare)
			return err
		}, ErrUnsigned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ss.rejections())
			err := tc.call()
			rej := ss.rejections()
			if len(rej) <= before || !errors.Is(rej[before], tc.want) {
				t.Fatalf("call: %v; rejections %v, want one wrapping %v", err, rej[before:], tc.want)
			}
		})
	}
}

// TestMACFallsBackToSigning: a callee that does not hold the caller's MAC key (it has not
// recorded the epoch yet, or predates MAC envelopes) refuses the envelope; the caller repeats
// the call signed, and signs its next calls to that KME too.
func TestMACFallsBackToSigning(t *testing.T) {
	ka, _ := testMACKeys(t)
	ss := startSignedSite(t, func(authA, _ *Authenticator) {
		authA.MACKey = func(string) *pq.MACKey { return ka }
	})
	ctx := testCtx(t)
	r := reservation("6f2c1c44-54f4-4d5c-9b4e-2f0b9d1d1a01", "KME-A", "KME-B")
	var kinds envelopeKinds
	c := ss.dialSigned(t, ss.authA, kinds.option())
	for range 2 {
		if _, _, err := c.PushReservations(ctx, []kms.Reservation{r}); err != nil {
			t.Fatalf("push: %v", err)
		}
	}
	calls, answers := kinds.get()
	if fmt.Sprint(calls) != "[true false false]" || fmt.Sprint(answers) != "[false false]" {
		t.Fatalf("MAC envelopes: calls %v, answers %v; want a refused MAC call, then signed ones", calls, answers)
	}
	if rej := ss.rejections(); len(rej) != 1 || !errors.Is(rej[0], ErrUnsigned) {
		t.Fatalf("rejections %v, want the one MAC envelope", rej)
	}
}
