package site

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qkms/qkms/api/etsi014"
)

// TestFetchRetryIdempotent: a slave that lost the answer of a dec_keys gets the same keys again
// by repeating the call with its Idempotency-Key (ETSI 014 header, gRPC metadata); without the
// key, with other key IDs, or as another SAE, the keys stay fetched.
func TestFetchRetryIdempotent(t *testing.T) {
	tp := newTestPair(t, nil)
	tp.ingest(4, 4096)
	tp.waitKey(1024)
	ctx := context.Background()
	keys, err := tp.client(0, "SAE-A1").GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 3})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{keys[0].ID, keys[1].ID}
	b1 := tp.client(1, "SAE-B1")
	same := func(got []etsi014.DeliveredKey) bool {
		return len(got) == 2 && got[0].ID == ids[0] && bytes.Equal(got[0].Bytes, keys[0].Bytes) &&
			got[1].ID == ids[1] && bytes.Equal(got[1].Bytes, keys[1].Bytes)
	}
	for try := range 3 {
		got, err := b1.GetKeyWithIDsIdempotent(ctx, "SAE-A1", ids, "dec-1")
		if err != nil || !same(got) {
			t.Fatalf("try %d with the idempotency key: %v", try, err)
		}
	}
	status400 := func(err error) bool {
		var ae *etsi014.APIError
		return errors.As(err, &ae) && ae.StatusCode == 400
	}
	if _, err := b1.GetKeyWithIDs(ctx, "SAE-A1", ids); !status400(err) {
		t.Fatalf("a retry without the key: %v, want 400", err)
	}
	if _, err := b1.GetKeyWithIDsIdempotent(ctx, "SAE-A1", ids[:1], "dec-1"); !status400(err) {
		t.Fatalf("the key with other key IDs: %v, want 400", err)
	}
	if _, err := tp.client(1, "SAE-B2").GetKeyWithIDsIdempotent(ctx, "SAE-A1", ids, "dec-1"); err == nil {
		t.Fatal("another SAE received the keys with the slave's idempotency key")
	}

	// The same over gRPC, for the third key.
	g := tp.grpcClient(1, "SAE-B1")
	for try := range 2 {
		got, err := g.GetKeyWithIDsIdempotent(ctx, "SAE-A1", []string{keys[2].ID}, "dec-2")
		if err != nil || len(got) != 1 || !bytes.Equal(got[0].Bytes, keys[2].Bytes) {
			t.Fatalf("gRPC try %d: %v", try, err)
		}
	}
	if _, err := g.GetKeyWithIDs(ctx, "SAE-A1", []string{keys[2].ID}); status.Code(err) != codes.InvalidArgument && status.Code(err) != codes.NotFound {
		t.Fatalf("gRPC retry without the key: %v", err)
	}
	if _, err := g.GetKeyWithIDsIdempotent(ctx, "SAE-A1", []string{keys[2].ID}, "../x"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("gRPC malformed key: %v", err)
	}
}
