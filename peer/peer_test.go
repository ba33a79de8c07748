package peer

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qkms/qkms/api/peerpb"
	"github.com/qkms/qkms/kms"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)

// reservation returns a valid 256-bit reservation issued by owner for peer, spanning two blocks.
func reservation(keyID, owner, peer string) kms.Reservation {
	return kms.Reservation{
		KeyID:      keyID,
		Peer:       peer,
		Owner:      owner,
		Master:     "SAE-A1",
		Slaves:     []string{"SAE-B1", "SAE-B2"},
		Bits:       256,
		Ranges:     []kms.Range{{Block: "blk-1", Off: 992, Len: 8}, {Block: "blk-2", Off: 0, Len: 24}},
		Provenance: kms.ProvenanceQKD,
		Issued:     t0,
		Expires:    t0.Add(time.Minute),
	}
}

func TestCompareBlocks(t *testing.T) {
	s := startSite(t)
	s.svc.tags["blk-1"] = tagOf("one")
	s.svc.tags["blk-2"] = tagOf("two")
	c := s.dial(t, "KME-A", "kme")

	got, err := c.CompareBlocks(testCtx(t), []BlockTag{
		{"blk-1", tagOf("one")},
		{"blk-2", tagOf("TWO")},
		{"blk-3", tagOf("three")},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Verdict{{"blk-1", OutcomeMatch}, {"blk-2", OutcomeMismatch}, {"blk-3", OutcomeUnknown}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("verdicts = %v, want %v", got, want)
	}
	if !slices.Equal(s.svc.froms, []string{"KME-A"}) {
		t.Errorf("service saw callers %q, want the client certificate's CN", s.svc.froms)
	}
}

func TestPushReservations(t *testing.T) {
	s := startSite(t)
	s.svc.pending["blk-9"] = true
	c := s.dial(t, "KME-A", "kme")
	ctx := testCtx(t)

	ok := reservation(uuid.NewString(), "KME-A", "KME-B")
	waits := reservation(uuid.NewString(), "KME-A", "KME-B")
	waits.Ranges = []kms.Range{{Block: "blk-9", Off: 0, Len: 32}}
	pqc := reservation(uuid.NewString(), "KME-A", "KME-B")
	pqc.Provenance, pqc.Ranges, pqc.Epoch = kms.ProvenancePQC, nil, "00112233445566778899aabbccddeeff"

	acc, rej, err := c.PushReservations(ctx, []kms.Reservation{ok, waits, pqc})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(acc, []string{ok.KeyID, pqc.KeyID}) {
		t.Errorf("accepted %q, want %q", acc, []string{ok.KeyID, pqc.KeyID})
	}
	if len(rej) != 1 || rej[0].KeyID != waits.KeyID || rej[0].Reason != RejectRetryLater {
		t.Errorf("rejected %+v, want %s with retry-later", rej, waits.KeyID)
	}
	if got := s.svc.stored[ok.KeyID]; !reflect.DeepEqual(got, ok) {
		t.Errorf("stored reservation differs from the pushed one:\n got %+v\nwant %+v", got, ok)
	}

	// A retry of the same push is accepted again (idempotent); a different reservation under
	// a stored key ID is rejected as invalid.
	acc, rej, err = c.PushReservations(ctx, []kms.Reservation{ok})
	if err != nil || !slices.Equal(acc, []string{ok.KeyID}) || len(rej) != 0 {
		t.Errorf("repeated push: accepted %q rejected %+v err %v; want accepted again", acc, rej, err)
	}
	other := ok
	other.Master = "SAE-A2"
	_, rej, err = c.PushReservations(ctx, []kms.Reservation{other})
	if err != nil || len(rej) != 1 || rej[0].Reason != RejectInvalid {
		t.Errorf("conflicting push: rejected %+v err %v; want invalid", rej, err)
	}
}

func TestPullReservations(t *testing.T) {
	s := startSite(t)
	mine := reservation(uuid.NewString(), "KME-B", "KME-A")
	s.svc.stored[mine.KeyID] = mine
	c := s.dial(t, "KME-A", "kme")

	unknown := uuid.NewString()
	got, err := c.PullReservations(testCtx(t), []string{unknown, mine.KeyID})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !reflect.DeepEqual(got[0], mine) {
		t.Errorf("pulled %+v, want only %+v", got, mine)
	}
}

func TestRequestBlocks(t *testing.T) {
	s := startSite(t)
	s.svc.owned = []string{"blk-10", "blk-11", "blk-12", "blk-13"}
	c := s.dial(t, "KME-A", "kme")
	ctx := testCtx(t)

	req := uuid.NewString()
	first, err := c.RequestBlocks(ctx, req, 2000)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(first, []string{"blk-10", "blk-11"}) {
		t.Errorf("first transfer %q, want blk-10 and blk-11", first)
	}
	again, err := c.RequestBlocks(ctx, req, 2000)
	if err != nil || !slices.Equal(again, first) {
		t.Errorf("retry with the same request ID gave %q (err %v), want %q", again, err, first)
	}
	next, err := c.RequestBlocks(ctx, uuid.NewString(), 1000)
	if err != nil || !slices.Equal(next, []string{"blk-12"}) {
		t.Errorf("new request gave %q (err %v), want blk-12", next, err)
	}
}

// TestCallerRole: only verified KME certificates may call; anything else is refused before
// the service runs.
func TestCallerRole(t *testing.T) {
	tests := []struct {
		name string
		cn   string
		ou   []string
	}{
		{"sae", "SAE-A1", []string{"sae"}},
		{"admin", "root", []string{"admin"}},
		{"no role", "KME-A", nil},
		{"two roles", "KME-A", []string{"kme", "admin"}},
		{"bad ID", "KME/../A", []string{"kme"}},
	}
	s := startSite(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := s.dial(t, tt.cn, tt.ou...)
			_, err := c.PullReservations(testCtx(t), []string{uuid.NewString()})
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("err = %v, want PermissionDenied", err)
			}
			if Retryable(err) {
				t.Errorf("a refused caller must not be told to retry")
			}
		})
	}
	if n := s.svc.Calls(); n != 0 {
		t.Errorf("service ran %d times for refused callers", n)
	}

	t.Run("foreign CA", func(t *testing.T) {
		other := newTestCA(t, "other CA")
		cfg := other.clientTLS(other.issue(t, "KME-A", "kme"))
		cfg.RootCAs = s.ca.pool // trusts the server, but the server does not trust it
		c, err := Dial(s.addr, cfg, "KME-B")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.PullReservations(testCtx(t), []string{uuid.NewString()}); err == nil {
			t.Errorf("a certificate of a foreign CA was accepted")
		}
	})
}

// TestServerIdentity: the client refuses a server whose certificate names another KME or
// does not carry the KME role, in the handshake, before any request is sent.
func TestServerIdentity(t *testing.T) {
	tests := []struct {
		name string
		cn   string
		ou   []string
		want error
	}{
		{"other KME", "KME-C", []string{"kme"}, ErrWrongKME},
		{"not a KME", "KME-B", []string{"sae"}, ErrNotKME},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := newTestCA(t, "test CA")
			svc := newFakeService(tt.cn)
			addr := serve(t, ca.serverTLS(ca.issue(t, tt.cn, tt.ou...)), func(s *grpc.Server) { Register(s, svc, nil) })
			c, err := Dial(addr, ca.clientTLS(ca.issue(t, "KME-A", "kme")), "KME-B")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.PullReservations(testCtx(t), []string{uuid.NewString()})
			if err == nil {
				t.Fatal("call to the wrong server succeeded")
			}
			// The handshake error crosses gRPC's transport as text only.
			if !strings.Contains(err.Error(), tt.want.Error()) {
				t.Errorf("err = %v, want it to say %q", err, tt.want)
			}
			if status.Code(err) != codes.Unavailable {
				t.Errorf("code %v, want Unavailable (handshake refused): %v", status.Code(err), err)
			}
			if svc.Calls() != 0 {
				t.Errorf("the wrong server received a request")
			}
		})
	}
}

// TestInvalidRequests sends messages the Client would refuse, through a raw stub, and
// expects InvalidArgument without the service running.
func TestInvalidRequests(t *testing.T) {
	good := reservationToProto(reservation(uuid.NewString(), "KME-A", "KME-B"))
	mutate := func(f func(r *peerpb.Reservation)) *peerpb.PushReservationsRequest {
		r := reservationToProto(reservation(uuid.NewString(), "KME-A", "KME-B"))
		f(r)
		return &peerpb.PushReservationsRequest{Reservations: []*peerpb.Reservation{r}}
	}
	many := func(n int, f func(i int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	tag := func(id string, n int) *peerpb.BlockTag { return &peerpb.BlockTag{BlockId: id, Tag: make([]byte, n)} }
	manyTags := make([]*peerpb.BlockTag, MaxTags+1)
	for i := range manyTags {
		manyTags[i] = tag(uuid.NewString(), 32)
	}

	type call func(c peerpb.PeerClient) error
	compare := func(tags ...*peerpb.BlockTag) call {
		return func(c peerpb.PeerClient) error {
			_, err := c.CompareBlocks(testCtx(t), &peerpb.CompareBlocksRequest{Tags: tags})
			return err
		}
	}
	push := func(req *peerpb.PushReservationsRequest) call {
		return func(c peerpb.PeerClient) error { _, err := c.PushReservations(testCtx(t), req); return err }
	}
	pull := func(ids ...string) call {
		return func(c peerpb.PeerClient) error {
			_, err := c.PullReservations(testCtx(t), &peerpb.PullReservationsRequest{KeyIds: ids})
			return err
		}
	}
	want := func(id string, n int64) call {
		return func(c peerpb.PeerClient) error {
			_, err := c.RequestBlocks(testCtx(t), &peerpb.RequestBlocksRequest{RequestId: id, WantBytes: n})
			return err
		}
	}
	tests := []struct {
		name string
		call call
		code codes.Code
	}{
		{"compare: no tags", compare(), codes.InvalidArgument},
		{"compare: too many tags", compare(manyTags...), codes.InvalidArgument},
		{"compare: duplicate block", compare(tag("b", 32), tag("b", 32)), codes.InvalidArgument},
		{"compare: empty tag", compare(tag("b", 0)), codes.InvalidArgument},
		{"compare: long tag", compare(tag("b", MaxTagBytes+1)), codes.InvalidArgument},
		{"compare: block ID with slash", compare(tag("a/b", 32)), codes.InvalidArgument},
		{"compare: block ID with control", compare(tag("a\x00b", 32)), codes.InvalidArgument},
		{"compare: empty block ID", compare(tag("", 32)), codes.InvalidArgument},
		{"push: none", push(&peerpb.PushReservationsRequest{}), codes.InvalidArgument},
		{"push: nil entry", push(&peerpb.PushReservationsRequest{Reservations: []*peerpb.Reservation{nil}}), codes.InvalidArgument},
		{"push: duplicate key", push(&peerpb.PushReservationsRequest{Reservations: []*peerpb.Reservation{good, good}}), codes.InvalidArgument},
		{"push: key ID not UUID", push(mutate(func(r *peerpb.Reservation) { r.KeyId = "key-1" })), codes.InvalidArgument},
		{"push: key ID upper case", push(mutate(func(r *peerpb.Reservation) { r.KeyId = strings.ToUpper(r.KeyId) })), codes.InvalidArgument},
		{"push: key ID URN", push(mutate(func(r *peerpb.Reservation) { r.KeyId = "urn:uuid:" + r.KeyId })), codes.InvalidArgument},
		{"push: bits not multiple of 8", push(mutate(func(r *peerpb.Reservation) { r.Bits = 255 })), codes.InvalidArgument},
		{"push: bits zero", push(mutate(func(r *peerpb.Reservation) { r.Bits = 0 })), codes.InvalidArgument},
		{"push: bits huge", push(mutate(func(r *peerpb.Reservation) { r.Bits = 1 << 62 })), codes.InvalidArgument},
		{"push: ranges short of bits", push(mutate(func(r *peerpb.Reservation) { r.Ranges[1].Len = 16 })), codes.InvalidArgument},
		{"push: negative offset", push(mutate(func(r *peerpb.Reservation) { r.Ranges[0].Off = -8 })), codes.InvalidArgument},
		{"push: offset overflow", push(mutate(func(r *peerpb.Reservation) { r.Ranges[0].Off = 1<<63 - 4 })), codes.InvalidArgument},
		{"push: overlapping ranges", push(mutate(func(r *peerpb.Reservation) {
			r.Ranges = []*peerpb.Range{{BlockId: "b", Off: 0, Len: 20}, {BlockId: "b", Off: 16, Len: 12}}
		})), codes.InvalidArgument},
		{"push: qkd without ranges", push(mutate(func(r *peerpb.Reservation) { r.Ranges = nil })), codes.InvalidArgument},
		{"push: no slaves", push(mutate(func(r *peerpb.Reservation) { r.Slaves = nil })), codes.InvalidArgument},
		{"push: too many slaves", push(mutate(func(r *peerpb.Reservation) {
			r.Slaves = many(MaxSlaves+1, func(i int) string { return "SAE-" + uuid.NewString() })
		})), codes.InvalidArgument},
		{"push: duplicate slave", push(mutate(func(r *peerpb.Reservation) { r.Slaves = []string{"S", "S"} })), codes.InvalidArgument},
		{"push: bad master", push(mutate(func(r *peerpb.Reservation) { r.Master = "../etc" })), codes.InvalidArgument},
		{"push: owner is peer", push(mutate(func(r *peerpb.Reservation) { r.Peer = r.Owner })), codes.InvalidArgument},
		{"push: unknown provenance", push(mutate(func(r *peerpb.Reservation) { r.Provenance = 42 })), codes.InvalidArgument},
		{"push: no issued time", push(mutate(func(r *peerpb.Reservation) { r.Issued = nil })), codes.InvalidArgument},
		{"push: invalid time", push(mutate(func(r *peerpb.Reservation) { r.Expires = &timestamppb.Timestamp{Seconds: 1, Nanos: -1} })), codes.InvalidArgument},
		{"push: expires before issued", push(mutate(func(r *peerpb.Reservation) { r.Expires, r.Issued = r.Issued, r.Expires })), codes.InvalidArgument},
		{"push: someone else's reservation", push(mutate(func(r *peerpb.Reservation) { r.Owner = "KME-C" })), codes.PermissionDenied},
		{"pull: no IDs", pull(), codes.InvalidArgument},
		{"pull: too many IDs", pull(many(MaxKeyIDs+1, func(int) string { return uuid.NewString() })...), codes.InvalidArgument},
		{"pull: duplicate", pull(good.KeyId, good.KeyId), codes.InvalidArgument},
		{"pull: not UUID", pull("../../x"), codes.InvalidArgument},
		{"request: bad ID", want("r1", 1000), codes.InvalidArgument},
		{"request: zero", want(uuid.NewString(), 0), codes.InvalidArgument},
		{"request: negative", want(uuid.NewString(), -1), codes.InvalidArgument},
		{"request: too much", want(uuid.NewString(), MaxWantBytes+1), codes.InvalidArgument},
	}
	s := startSite(t)
	raw := s.raw(t, "KME-A", "kme")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(raw)
			if status.Code(err) != tt.code {
				t.Errorf("err = %v, want %v", err, tt.code)
			}
		})
	}
	if n := s.svc.Calls(); n != 0 {
		t.Errorf("service ran %d times for invalid requests", n)
	}
}

// TestClientRefusesInvalid: the client validates what it sends, so a local bug surfaces as
// ErrInvalid instead of a round trip.
func TestClientRefusesInvalid(t *testing.T) {
	s := startSite(t)
	c := s.dial(t, "KME-A", "kme")
	ctx := testCtx(t)
	bad := reservation("not-a-uuid", "KME-A", "KME-B")
	errs := map[string]error{}
	_, errs["compare"] = c.CompareBlocks(ctx, []BlockTag{{BlockID: "b"}})
	_, _, errs["push"] = c.PushReservations(ctx, []kms.Reservation{bad})
	_, errs["pull"] = c.PullReservations(ctx, []string{"x"})
	_, errs["request"] = c.RequestBlocks(ctx, uuid.NewString(), 0)
	for name, err := range errs {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if n := s.svc.Calls(); n != 0 {
		t.Errorf("service ran %d times", n)
	}
}
