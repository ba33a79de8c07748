package keydelivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pki"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func newTestServer(f *fakeService) *server {
	return newServer(f, Options{Logger: quietLog, FollowPoll: time.Millisecond, PullAfter: time.Hour})
}

func TestUnaryErrors(t *testing.T) {
	sae := asCaller(context.Background(), pki.RoleSAE, "SAE-A1")
	tests := []struct {
		name   string
		ctx    context.Context
		forced error
		call   func(s *server, ctx context.Context) error
		want   codes.Code
	}{
		{"no certificate", context.Background(), nil, func(s *server, ctx context.Context) error {
			_, err := s.GetKey(ctx, &keyspb.GetKeyRequest{SlaveSaeId: "SAE-B1"})
			return err
		}, codes.Unauthenticated},
		{"admin certificate", asCaller(context.Background(), pki.RoleAdmin, "admin"), nil, func(s *server, ctx context.Context) error {
			_, err := s.GetStatus(ctx, &keyspb.GetStatusRequest{SlaveSaeId: "SAE-B1"})
			return err
		}, codes.Unauthenticated},
		{"size not multiple of 8", sae, nil, func(s *server, ctx context.Context) error {
			_, err := s.GetKey(ctx, &keyspb.GetKeyRequest{SlaveSaeId: "SAE-B1", Size: 100})
			return err
		}, codes.InvalidArgument},
		{"negative number", sae, nil, func(s *server, ctx context.Context) error {
			_, err := s.GetKey(ctx, &keyspb.GetKeyRequest{SlaveSaeId: "SAE-B1", Number: -1})
			return err
		}, codes.InvalidArgument},
		{"slave named twice", sae, nil, func(s *server, ctx context.Context) error {
			_, err := s.GetKey(ctx, &keyspb.GetKeyRequest{SlaveSaeId: "SAE-B1", AdditionalSlaveSaeIds: []string{"SAE-B1"}})
			return err
		}, codes.InvalidArgument},
		{"bad slave ID", sae, nil, func(s *server, ctx context.Context) error {
			_, err := s.GetStatus(ctx, &keyspb.GetStatusRequest{SlaveSaeId: "../x"})
			return err
		}, codes.InvalidArgument},
		{"unknown slave", sae, nil, func(s *server, ctx context.Context) error {
			_, err := s.GetKey(ctx, &keyspb.GetKeyRequest{SlaveSaeId: "SAE-Z9"})
			return err
		}, codes.InvalidArgument},
		{"no key IDs", sae, nil, func(s *server, ctx context.Context) error {
			_, err := s.GetKeyWithIDs(ctx, &keyspb.GetKeyWithIDsRequest{MasterSaeId: "SAE-B1"})
			return err
		}, codes.InvalidArgument},
		{"key ID twice", sae, nil, func(s *server, ctx context.Context) error {
			_, err := s.GetKeyWithIDs(ctx, &keyspb.GetKeyWithIDsRequest{MasterSaeId: "SAE-B1", KeyIds: []string{"a", "a"}})
			return err
		}, codes.InvalidArgument},
		{"unknown key ID mirrors ETSI 400", sae, nil, func(s *server, ctx context.Context) error {
			_, err := s.GetKeyWithIDs(ctx, &keyspb.GetKeyWithIDsRequest{MasterSaeId: "SAE-B1", KeyIds: []string{"nope"}})
			return err
		}, codes.InvalidArgument},
		{"not authorized", sae, fmt.Errorf("x: %w", kms.ErrUnauthorized), func(s *server, ctx context.Context) error {
			_, err := s.GetKey(ctx, &keyspb.GetKeyRequest{SlaveSaeId: "SAE-B1"})
			return err
		}, codes.PermissionDenied},
		{"not enough key", sae, nil, func(s *server, ctx context.Context) error {
			_, err := s.GetKey(ctx, &keyspb.GetKeyRequest{SlaveSaeId: "SAE-B1", Number: 11})
			return err
		}, codes.ResourceExhausted},
		{"rate limited", sae, &kms.Error{Kind: kms.ErrRateLimited, Msg: "slow down"}, func(s *server, ctx context.Context) error {
			_, err := s.GetKey(ctx, &keyspb.GetKeyRequest{SlaveSaeId: "SAE-B1"})
			return err
		}, codes.ResourceExhausted},
		{"not confirmed", sae, fmt.Errorf("x: %w", kms.ErrNotConfirmed), func(s *server, ctx context.Context) error {
			_, err := s.GetKeyWithIDs(ctx, &keyspb.GetKeyWithIDsRequest{MasterSaeId: "SAE-B1", KeyIds: []string{"k"}})
			return err
		}, codes.Unavailable},
		{"internal error", sae, errors.New("disk on fire at /secret/path"), func(s *server, ctx context.Context) error {
			_, err := s.GetStatus(ctx, &keyspb.GetStatusRequest{SlaveSaeId: "SAE-B1"})
			return err
		}, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeService(10)
			f.err = tt.forced
			err := tt.call(newTestServer(f), tt.ctx)
			st, _ := status.FromError(err)
			if st.Code() != tt.want {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if st.Message() == "" || strings.Contains(st.Message(), "/secret/") {
				t.Fatalf("message %q: empty or leaks an internal error", st.Message())
			}
			refused := tt.want == codes.Unauthenticated || (tt.want == codes.InvalidArgument && !strings.Contains(tt.name, "unknown"))
			if refused && len(f.reqs)+len(f.fetchs) > 0 {
				t.Fatalf("the service was called for a refused request: %+v %v", f.reqs, f.fetchs)
			}
		})
	}
}

// TestOverTLS runs a key delivery through a real gRPC server with mutual TLS: the SAE IDs come
// from the certificates, and only the named slave gets the key.
func TestOverTLS(t *testing.T) {
	dir := t.TempDir()
	lay, err := pki.WriteDevPKI(dir, map[string][]string{"KME-A": {"SAE-A1"}, "KME-B": {"SAE-B1", "SAE-B2"}}, false, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	kme, _ := lay.Find("KME-A")
	stls, err := pki.ServerConfig(kme.Cert, kme.Key, lay.CACert)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(stls)))
	f := newFakeService(100)
	Register(gs, f, Options{Logger: quietLog})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	client := func(id string) *Client {
		e, _ := lay.Find(id)
		if e.Cert == "" {
			e = pki.Entity{Cert: filepath.Join(dir, id+".pem"), Key: filepath.Join(dir, id+"-key.pem")}
		}
		cfg, err := pki.ClientConfig(e.Cert, e.Key, lay.CACert)
		if err != nil {
			t.Fatal(err)
		}
		c, err := Dial(ln.Addr().String(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ctx := context.Background()
	a1, b1, b2 := client("SAE-A1"), client("SAE-B1"), client("SAE-B2")
	keys, err := a1.GetKey(ctx, "SAE-B1", 2, 512)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || len(keys[0].Bytes) != 64 {
		t.Fatalf("got %d keys of %d bytes, want 2 of 64", len(keys), len(keys[0].Bytes))
	}
	ids := []string{keys[0].ID, keys[1].ID}
	if _, err := b2.GetKeyWithIDs(ctx, "SAE-A1", ids); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("SAE-B2 fetching SAE-B1's keys: %v, want InvalidArgument", err)
	}
	got, err := b1.GetKeyWithIDs(ctx, "SAE-A1", ids)
	if err != nil {
		t.Fatal(err)
	}
	for i := range keys {
		if got[i].ID != keys[i].ID || !bytes.Equal(got[i].Bytes, keys[i].Bytes) {
			t.Fatalf("key %d differs", i)
		}
	}
	st, err := a1.Status(ctx, "SAE-B1")
	if err != nil || st.GetMasterSaeId() != "SAE-A1" {
		t.Fatalf("status %v, %v: want the master taken from the certificate", st, err)
	}
}

func TestStreamAndFollow(t *testing.T) {
	tests := []struct {
		name    string
		maxKeys int64
		hidden  int // keys whose push is late: Known hides them until PullAfter
	}{
		{"one chunk", 5, 0},
		{"several chunks", 40, 0},
		{"late push pulled", 6, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeService(1000)
			s := newServer(f, Options{Logger: quietLog, FollowPoll: time.Millisecond, PullAfter: 2 * time.Millisecond})
			ms := &fakeStream{ctx: asCaller(context.Background(), pki.RoleSAE, "SAE-A1")}
			err := s.StreamKeys(&keyspb.StreamKeysRequest{SlaveSaeId: "SAE-B1", ChunkSize: 128, Rate: 5000,
				Ttl: durationpb.New(time.Minute), MaxKeys: tt.maxKeys}, ms)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(ms.sent)) != tt.maxKeys {
				t.Fatalf("streamed %d keys, want %d", len(ms.sent), tt.maxKeys)
			}
			sid := ms.sent[0].StreamId
			for _, r := range f.reqs {
				if r.TTL != time.Minute || r.Size != 128 || len(r.KeyIDs) != r.Number {
					t.Fatalf("issue request %+v", r)
				}
			}
			f.mu.Lock()
			for i := 0; i < tt.hidden; i++ {
				f.hidden[ms.sent[i].Key.KeyId] = true
			}
			f.mu.Unlock()
			ss := &fakeStream{ctx: asCaller(context.Background(), pki.RoleSAE, "SAE-B1")}
			err = s.FollowKeys(&keyspb.FollowKeysRequest{MasterSaeId: "SAE-A1", StreamId: sid, MaxKeys: tt.maxKeys}, ss)
			if err != nil {
				t.Fatal(err)
			}
			if len(ss.sent) != len(ms.sent) {
				t.Fatalf("followed %d keys, want %d", len(ss.sent), len(ms.sent))
			}
			for i, m := range ms.sent {
				sl := ss.sent[i]
				id, _ := checkStreamID(sid)
				if m.Seq != int64(i) || sl.Seq != m.Seq || sl.Key.KeyId != m.Key.KeyId || m.Key.KeyId != StreamKeyID(id, int64(i)) {
					t.Fatalf("position %d: master %v/%s, slave %v/%s", i, m.Seq, m.Key.KeyId, sl.Seq, sl.Key.KeyId)
				}
				if !bytes.Equal(sl.Key.Key, m.Key.Key) || len(m.Key.Key) != 16 {
					t.Fatalf("position %d: bytes differ or wrong size", i)
				}
			}
		})
	}
}

func TestStreamMinRate(t *testing.T) {
	f := newFakeService(3)
	s := newTestServer(f)
	ms := &fakeStream{ctx: asCaller(context.Background(), pki.RoleSAE, "SAE-A1")}
	err := s.StreamKeys(&keyspb.StreamKeysRequest{SlaveSaeId: "SAE-B1", Rate: 10000, MinRate: 1000, MaxKeys: 10}, ms)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("got %v, want ResourceExhausted once the pool is empty", err)
	}
	if len(ms.sent) != 3 {
		t.Fatalf("sent %d keys before running out, want 3", len(ms.sent))
	}
}

// TestStreamWaitsForKey: without min_rate a stream survives an empty pool and ends only when
// the caller cancels.
func TestStreamWaitsForKey(t *testing.T) {
	f := newFakeService(2)
	s := newTestServer(f)
	ctx, cancel := context.WithCancel(asCaller(context.Background(), pki.RoleSAE, "SAE-A1"))
	defer cancel()
	ms := &fakeStream{ctx: ctx}
	// Cancel once the stream has been refused key three times after emptying the pool.
	refused := 0
	f.onIssue = func(int) {
		f.mu.Lock()
		empty := f.stock == 0
		f.mu.Unlock()
		if empty {
			if refused++; refused == 4 {
				cancel()
			}
		}
	}
	err := s.StreamKeys(&keyspb.StreamKeysRequest{SlaveSaeId: "SAE-B1", Rate: 10000}, ms)
	if status.Code(err) != codes.Canceled || len(ms.sent) != 2 {
		t.Fatalf("got %v after %d keys, want Canceled after 2", err, len(ms.sent))
	}
}

func TestStreamRequestChecks(t *testing.T) {
	tests := []struct {
		name string
		req  *keyspb.StreamKeysRequest
	}{
		{"no rate", &keyspb.StreamKeysRequest{SlaveSaeId: "SAE-B1"}},
		{"rate too high", &keyspb.StreamKeysRequest{SlaveSaeId: "SAE-B1", Rate: 1e9}},
		{"min above rate", &keyspb.StreamKeysRequest{SlaveSaeId: "SAE-B1", Rate: 10, MinRate: 11}},
		{"negative ttl", &keyspb.StreamKeysRequest{SlaveSaeId: "SAE-B1", Rate: 10, Ttl: durationpb.New(-time.Second)}},
		{"odd chunk", &keyspb.StreamKeysRequest{SlaveSaeId: "SAE-B1", Rate: 10, ChunkSize: 7}},
		{"negative max", &keyspb.StreamKeysRequest{SlaveSaeId: "SAE-B1", Rate: 10, MaxKeys: -1}},
		{"bad provenance", &keyspb.StreamKeysRequest{SlaveSaeId: "SAE-B1", Rate: 10, MinProvenance: 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeService(10)
			ms := &fakeStream{ctx: asCaller(context.Background(), pki.RoleSAE, "SAE-A1")}
			err := newTestServer(f).StreamKeys(tt.req, ms)
			if status.Code(err) != codes.InvalidArgument || len(f.reqs) != 0 {
				t.Fatalf("got %v with %d issues, want InvalidArgument and none", err, len(f.reqs))
			}
		})
	}
}
