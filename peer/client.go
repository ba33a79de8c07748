package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/qkms/qkms/api/peerpb"
	"github.com/qkms/qkms/kms"
)

// DefaultCallTimeout bounds a call whose context has no deadline. Every RPC is a handful of
// store operations at the peer plus one raft commit at most, so seconds are plenty; a stuck
// peer must not hold the caller's push queue for longer.
const DefaultCallTimeout = 10 * time.Second

// ErrBadResponse: the peer answered with a message that fails validation (a peer bug or a
// misbehaving peer). Not retryable.
var ErrBadResponse = errors.New("peer: invalid answer from peer")

// retryConfig lets gRPC retry calls that failed with UNAVAILABLE (no connection, connection
// lost before the answer): every RPC is idempotent, so a repeated call is safe.
const retryConfig = `{"methodConfig": [{
  "name": [{"service": "qkms.peer.v1.Peer"}],
  "retryPolicy": {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"]
  }
}]}`

// Client calls the peer service of one other site.
type Client struct {
	conn    *grpc.ClientConn
	rpc     peerpb.PeerClient
	kme     string
	timeout time.Duration
}

// ClientOption configures Dial.
type ClientOption func(*clientConfig)

type clientConfig struct {
	timeout  time.Duration
	identify Identify
	auth     *Authenticator
	dialOpts []grpc.DialOption
}

// WithAuthenticator signs every call with the site's ML-DSA identity and verifies the
// answers (authenticate.go).
func WithAuthenticator(a *Authenticator) ClientOption {
	return func(c *clientConfig) { c.auth = a }
}

// WithCallTimeout replaces DefaultCallTimeout.
func WithCallTimeout(d time.Duration) ClientOption {
	return func(c *clientConfig) { c.timeout = d }
}

// WithServerIdentify replaces IdentifyKME for the server's certificate.
func WithServerIdentify(f Identify) ClientOption {
	return func(c *clientConfig) { c.identify = f }
}

// WithDialOptions adds gRPC dial options (after the ones Dial sets).
func WithDialOptions(opts ...grpc.DialOption) ClientOption {
	return func(c *clientConfig) { c.dialOpts = append(c.dialOpts, opts...) }
}

// Dial prepares a client for the peer site at addr (host:port) presenting the KME certificate
// of tlsCfg. The server must present a verified KME certificate whose CommonName is
// expectKME; the check runs in the TLS handshake (tls.Config.VerifyConnection, after any
// callback tlsCfg already has). The connection is made lazily and kept alive with pings, so
// Dial does not fail when the peer is down; calls do, with codes.Unavailable.
func Dial(addr string, tlsCfg *tls.Config, expectKME string, opts ...ClientOption) (*Client, error) {
	if err := checkID("KME", expectKME); err != nil {
		return nil, fmt.Errorf("peer: dial %s: %w", addr, err)
	}
	if tlsCfg == nil {
		return nil, fmt.Errorf("peer: dial %s: a TLS configuration with the site's KME certificate is required", addr)
	}
	cc := clientConfig{timeout: DefaultCallTimeout, identify: IdentifyKME}
	for _, o := range opts {
		o(&cc)
	}
	cfg := tlsCfg.Clone()
	prev := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		id, err := cc.identify(&cs)
		if err != nil {
			return err
		}
		if id != expectKME {
			return fmt.Errorf("%w: dialled %s, certificate names %s", ErrWrongKME, expectKME, quote(id))
		}
		return nil
	}
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}),
		grpc.WithDefaultServiceConfig(retryConfig),
	}
	if cc.auth != nil {
		// Outermost, so interceptors added with WithDialOptions see the signed call.
		dialOpts = append(dialOpts, grpc.WithDisableRetry(), grpc.WithChainUnaryInterceptor(cc.auth.ClientInterceptor(expectKME)))
	}
	dialOpts = append(dialOpts, cc.dialOpts...)
	conn, err := grpc.NewClient(addr, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("peer: dial %s (%s): %w", expectKME, addr, err)
	}
	return &Client{conn: conn, rpc: peerpb.NewPeerClient(conn), kme: expectKME, timeout: cc.timeout}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// KME returns the KME ID of the peer site.
func (c *Client) KME() string { return c.kme }

func (c *Client) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}

func (c *Client) callErr(what string, err error) error {
	return fmt.Errorf("peer: %s with %s: %w", what, c.kme, err)
}

func (c *Client) badAnswer(what string, err error) error {
	return fmt.Errorf("peer: %s with %s: %w: %v", what, c.kme, ErrBadResponse, err)
}

// CompareBlocks sends this site's tags and returns the peer's verdict for each block, in the
// peer's order.
func (c *Client) CompareBlocks(ctx context.Context, tags []BlockTag) ([]Verdict, error) {
	const what = "compare blocks"
	if err := checkTags(tags); err != nil {
		return nil, c.callErr(what, err)
	}
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	resp, err := c.rpc.CompareBlocks(ctx, &peerpb.CompareBlocksRequest{Tags: tagsToProto(tags)})
	if err != nil {
		return nil, c.callErr(what, err)
	}
	vs, err := verdictsFromProto(resp.GetVerdicts(), tags)
	if err != nil {
		return nil, c.badAnswer(what, err)
	}
	return vs, nil
}

// PushReservations hands reservations this site issued to the peer. Every key ID comes back
// either accepted or rejected.
func (c *Client) PushReservations(ctx context.Context, rs []kms.Reservation) (accepted []string, rejected []Reject, err error) {
	const what = "push reservations"
	if err := checkReservations(rs); err != nil {
		return nil, nil, c.callErr(what, err)
	}
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	resp, err := c.rpc.PushReservations(ctx, &peerpb.PushReservationsRequest{Reservations: reservationsToProto(rs)})
	if err != nil {
		return nil, nil, c.callErr(what, err)
	}
	accepted, rejected, err = pushAnswerFromProto(resp, rs)
	if err != nil {
		return nil, nil, c.badAnswer(what, err)
	}
	return accepted, rejected, nil
}

// PullReservations asks the peer for the reservations it issued under keyIDs. Unknown IDs
// are left out of the answer.
func (c *Client) PullReservations(ctx context.Context, keyIDs []string) ([]kms.Reservation, error) {
	const what = "pull reservations"
	if err := checkKeyIDs(keyIDs, MaxKeyIDs); err != nil {
		return nil, c.callErr(what, err)
	}
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	resp, err := c.rpc.PullReservations(ctx, &peerpb.PullReservationsRequest{KeyIds: keyIDs})
	if err != nil {
		return nil, c.callErr(what, err)
	}
	rs, err := pullAnswerFromProto(resp.GetReservations(), keyIDs, c.kme)
	if err != nil {
		return nil, c.badAnswer(what, err)
	}
	return rs, nil
}

// RequestBlocks asks the peer to transfer ownership of untouched blocks totalling about
// wantBytes to this site. requestID is a canonical UUID the caller keeps across retries of
// the same request, so a retry after an unknown outcome returns the same blocks.
func (c *Client) RequestBlocks(ctx context.Context, requestID string, wantBytes int64) ([]string, error) {
	const what = "request blocks"
	if err := checkWant(requestID, wantBytes); err != nil {
		return nil, c.callErr(what, err)
	}
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	resp, err := c.rpc.RequestBlocks(ctx, &peerpb.RequestBlocksRequest{RequestId: requestID, WantBytes: wantBytes})
	if err != nil {
		return nil, c.callErr(what, err)
	}
	if err := checkBlockIDs(resp.GetBlockIds()); err != nil {
		return nil, c.badAnswer(what, err)
	}
	return resp.GetBlockIds(), nil
}

// OfferEpoch sends a pq.Offer (wire encoding) and returns the peer's pq.Reply encoding.
func (c *Client) OfferEpoch(ctx context.Context, offer []byte) ([]byte, error) {
	const what = "offer PQ epoch"
	if len(offer) == 0 || len(offer) > MaxEpochMessage {
		return nil, c.callErr(what, invalid("epoch message of %d bytes", len(offer)))
	}
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	resp, err := c.rpc.OfferEpoch(ctx, &peerpb.EpochMessage{Message: offer})
	if err != nil {
		return nil, c.callErr(what, err)
	}
	if m := resp.GetMessage(); len(m) == 0 || len(m) > MaxEpochMessage {
		return nil, c.badAnswer(what, invalid("epoch message of %d bytes", len(m)))
	}
	return resp.GetMessage(), nil
}

// ConfirmEpoch sends a pq.Confirmation encoding; the peer answers once it recorded the epoch.
func (c *Client) ConfirmEpoch(ctx context.Context, confirm []byte) (string, error) {
	const what = "confirm PQ epoch"
	if len(confirm) == 0 || len(confirm) > MaxEpochMessage {
		return "", c.callErr(what, invalid("epoch message of %d bytes", len(confirm)))
	}
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	resp, err := c.rpc.ConfirmEpoch(ctx, &peerpb.EpochMessage{Message: confirm})
	if err != nil {
		return "", c.callErr(what, err)
	}
	return resp.GetEpochId(), nil
}

// Retryable reports whether a call that failed with err may succeed if repeated later with the
// same arguments (the peer is down, overloaded or slow). Validation failures and refusals are
// not retryable.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, ErrInvalid) || errors.Is(err, ErrBadResponse) {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}
