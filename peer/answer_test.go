package peer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qkms/qkms/api/peerpb"
	"github.com/qkms/qkms/kms"
)

// lyingServer answers every call with canned messages, bypassing the server's checks, to
// test the client's validation of answers.
type lyingServer struct {
	peerpb.UnimplementedPeerServer
	compare *peerpb.CompareBlocksResponse
	push    *peerpb.PushReservationsResponse
	pull    *peerpb.PullReservationsResponse
	blocks  *peerpb.RequestBlocksResponse
}

func (l *lyingServer) CompareBlocks(context.Context, *peerpb.CompareBlocksRequest) (*peerpb.CompareBlocksResponse, error) {
	return l.compare, nil
}

func (l *lyingServer) PushReservations(context.Context, *peerpb.PushReservationsRequest) (*peerpb.PushReservationsResponse, error) {
	return l.push, nil
}

func (l *lyingServer) PullReservations(context.Context, *peerpb.PullReservationsRequest) (*peerpb.PullReservationsResponse, error) {
	return l.pull, nil
}

func (l *lyingServer) RequestBlocks(context.Context, *peerpb.RequestBlocksRequest) (*peerpb.RequestBlocksResponse, error) {
	return l.blocks, nil
}

func TestClientRejectsBadAnswers(t *testing.T) {
	keyID := uuid.NewString()
	pushed := reservation(keyID, "KME-A", "KME-B")
	theirs := reservation(keyID, "KME-B", "KME-A")
	verdict := func(id string, v peerpb.Verdict) *peerpb.BlockVerdict {
		return &peerpb.BlockVerdict{BlockId: id, Verdict: v}
	}
	type call func(c *Client) error
	compare := func(c *Client) error {
		_, err := c.CompareBlocks(testCtx(t), []BlockTag{{"b1", tagOf("x")}, {"b2", tagOf("y")}})
		return err
	}
	push := func(c *Client) error {
		_, _, err := c.PushReservations(testCtx(t), []kms.Reservation{pushed})
		return err
	}
	pull := func(c *Client) error { _, err := c.PullReservations(testCtx(t), []string{keyID}); return err }
	request := func(c *Client) error { _, err := c.RequestBlocks(testCtx(t), uuid.NewString(), 100); return err }
	tests := []struct {
		name string
		lie  lyingServer
		call call
	}{
		{"verdict missing", lyingServer{compare: &peerpb.CompareBlocksResponse{Verdicts: []*peerpb.BlockVerdict{verdict("b1", peerpb.Verdict_VERDICT_MATCH)}}}, compare},
		{"verdict for another block", lyingServer{compare: &peerpb.CompareBlocksResponse{Verdicts: []*peerpb.BlockVerdict{
			verdict("b1", peerpb.Verdict_VERDICT_MATCH), verdict("b3", peerpb.Verdict_VERDICT_MATCH)}}}, compare},
		{"verdict twice", lyingServer{compare: &peerpb.CompareBlocksResponse{Verdicts: []*peerpb.BlockVerdict{
			verdict("b1", peerpb.Verdict_VERDICT_MATCH), verdict("b1", peerpb.Verdict_VERDICT_MATCH)}}}, compare},
		{"verdict undefined", lyingServer{compare: &peerpb.CompareBlocksResponse{Verdicts: []*peerpb.BlockVerdict{
			verdict("b1", peerpb.Verdict_VERDICT_MATCH), verdict("b2", peerpb.Verdict_VERDICT_UNSPECIFIED)}}}, compare},
		{"push unanswered", lyingServer{push: &peerpb.PushReservationsResponse{}}, push},
		{"push accepted and rejected", lyingServer{push: &peerpb.PushReservationsResponse{Accepted: []string{keyID},
			Rejected: []*peerpb.Reject{{KeyId: keyID, Reason: peerpb.RejectReason_REJECT_REASON_INVALID}}}}, push},
		{"push answer for another key", lyingServer{push: &peerpb.PushReservationsResponse{Accepted: []string{uuid.NewString()}}}, push},
		{"push reason undefined", lyingServer{push: &peerpb.PushReservationsResponse{
			Rejected: []*peerpb.Reject{{KeyId: keyID}}}}, push},
		{"pull owned by caller", lyingServer{pull: &peerpb.PullReservationsResponse{Reservations: []*peerpb.Reservation{reservationToProto(pushed)}}}, pull},
		{"pull unasked key", lyingServer{pull: &peerpb.PullReservationsResponse{Reservations: []*peerpb.Reservation{
			reservationToProto(reservation(uuid.NewString(), "KME-B", "KME-A"))}}}, pull},
		{"pull twice", lyingServer{pull: &peerpb.PullReservationsResponse{Reservations: []*peerpb.Reservation{
			reservationToProto(theirs), reservationToProto(theirs)}}}, pull},
		{"pull malformed", lyingServer{pull: &peerpb.PullReservationsResponse{Reservations: []*peerpb.Reservation{{KeyId: keyID}}}}, pull},
		{"blocks bad ID", lyingServer{blocks: &peerpb.RequestBlocksResponse{BlockIds: []string{"../b"}}}, request},
		{"blocks twice", lyingServer{blocks: &peerpb.RequestBlocksResponse{BlockIds: []string{"b", "b"}}}, request},
	}
	ca := newTestCA(t, "test CA")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lie := tt.lie
			addr := serve(t, ca.serverTLS(ca.issue(t, "KME-B", "kme")), func(s *grpc.Server) { peerpb.RegisterPeerServer(s, &lie) })
			c, err := Dial(addr, ca.clientTLS(ca.issue(t, "KME-A", "kme")), "KME-B")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := tt.call(c); !errors.Is(err, ErrBadResponse) {
				t.Errorf("err = %v, want ErrBadResponse", err)
			}
		})
	}
}

// badService answers with what a buggy site might return; the server must not pass it on.
type badService struct{ fakeService }

func (b *badService) CompareBlocks(context.Context, string, []BlockTag) ([]Verdict, error) {
	return []Verdict{{"nope", OutcomeMatch}}, nil
}

func TestServerChecksServiceAnswers(t *testing.T) {
	ca := newTestCA(t, "test CA")
	svc := &badService{*newFakeService("KME-B")}
	addr := serve(t, ca.serverTLS(ca.issue(t, "KME-B", "kme")), func(s *grpc.Server) { Register(s, svc, nil) })
	c, err := Dial(addr, ca.clientTLS(ca.issue(t, "KME-A", "kme")), "KME-B")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.CompareBlocks(testCtx(t), []BlockTag{{"b1", tagOf("x")}})
	if status.Code(err) != codes.Internal {
		t.Errorf("err = %v, want Internal", err)
	}
}

func TestStatusOf(t *testing.T) {
	tests := []struct {
		err  error
		code codes.Code
	}{
		{invalid("x"), codes.InvalidArgument},
		{fmt.Errorf("site: %w", kms.ErrBadRequest), codes.InvalidArgument},
		{kms.ErrUnauthorized, codes.PermissionDenied},
		{kms.ErrKeyNotFound, codes.NotFound},
		{kms.ErrNotEnoughKey, codes.ResourceExhausted},
		{kms.ErrNotConfirmed, codes.Unavailable},
		{context.Canceled, codes.Canceled},
		{fmt.Errorf("raft: apply: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{status.Error(codes.FailedPrecondition, "not leader"), codes.FailedPrecondition},
		{errors.New("store: disk on fire at /var/lib/qkms"), codes.Internal},
	}
	for _, tt := range tests {
		st := statusOf(tt.err)
		if st.Code() != tt.code {
			t.Errorf("statusOf(%v) = %v, want %v", tt.err, st.Code(), tt.code)
		}
	}
	if msg := statusOf(errors.New("store: secret path")).Message(); msg == "" || strings.Contains(msg, "secret path") {
		t.Errorf("Internal message %q must be set and must not carry the local error", msg)
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{fmt.Errorf("peer: push: %w", status.Error(codes.Unavailable, "down")), true},
		{status.Error(codes.DeadlineExceeded, "slow"), true},
		{status.Error(codes.ResourceExhausted, "busy"), true},
		{status.Error(codes.InvalidArgument, "bad"), false},
		{status.Error(codes.PermissionDenied, "no"), false},
		{invalid("x"), false},
		{fmt.Errorf("%w: x", ErrBadResponse), false},
		{context.DeadlineExceeded, true},
	}
	for _, tt := range tests {
		if got := Retryable(tt.err); got != tt.want {
			t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
