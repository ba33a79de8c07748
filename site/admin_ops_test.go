package site

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/pki"
)

// opsClient is an Admin client of site i presenting the certificate of entity id.
func (tp *testPair) opsClient(i int, id string) keyspb.AdminClient {
	tp.t.Helper()
	e, ok := tp.Layout.Find(id)
	if !ok {
		tp.t.Fatalf("no certificate for %s", id)
	}
	tc, err := pki.ClientConfig(e.Cert, e.Key, tp.Layout.CACert)
	if err != nil {
		tp.t.Fatal(err)
	}
	cc, err := grpc.NewClient(tp.Sites[i].AdminAddr(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		tp.t.Fatal(err)
	}
	tp.t.Cleanup(func() { cc.Close() })
	return keyspb.NewAdminClient(cc)
}

// TestAdminOpsRefuseNonAdmins: an SAE or KME certificate cannot list links or zeroize, and a
// refused zeroize erases nothing.
func TestAdminOpsRefuseNonAdmins(t *testing.T) {
	tp := keyedPair(t, 1, 2, 4096)
	before := tp.Sites[0].Available("KME-B")
	for _, id := range []string{"SAE-A1", "KME-A"} {
		c := tp.opsClient(0, id)
		if _, err := c.ListLinks(context.Background(), &keyspb.ListLinksRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("ListLinks as %s: %v", id, err)
		}
		if _, err := c.Zeroize(context.Background(), &keyspb.ZeroizeRequest{PeerKmeId: "KME-B"}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("Zeroize as %s: %v", id, err)
		}
	}
	if got := tp.Sites[0].Available("KME-B"); got != before {
		t.Fatalf("refused zeroize changed the pool: %d -> %d bytes", before, got)
	}
}

// TestAdminOps: links report the ingested blocks; zeroize empties the pool and answers
// NotFound and InvalidArgument for pools that do not exist and malformed IDs.
func TestAdminOps(t *testing.T) {
	tp := newTestPair(t, nil)
	tp.ingest(3, 4096)
	tp.waitKey(1024)
	ctx := context.Background()
	c := tp.opsClient(0, pki.AdminID("KME-A"))

	links, err := c.ListLinks(ctx, &keyspb.ListLinksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(links.Links) != 1 {
		t.Fatalf("links: %v", links)
	}
	l := links.Links[0]
	if l.PeerKmeId != "KME-B" || !l.Up || l.Qber < 0.019 || l.Qber > 0.021 || l.KeyRateBps <= 0 || l.LastBlock == nil || l.BlocksDiscarded != 0 {
		t.Fatalf("link: %v", l)
	}

	tests := []struct {
		peer string
		code codes.Code
	}{
		{"KME-Z", codes.NotFound},
		{"", codes.InvalidArgument},
		{"../x", codes.InvalidArgument},
		{"KME-A", codes.NotFound}, // a site has no pool for itself
	}
	for _, tc := range tests {
		if _, err := c.Zeroize(ctx, &keyspb.ZeroizeRequest{PeerKmeId: tc.peer}); status.Code(err) != tc.code {
			t.Errorf("zeroize %q: %v, want %v", tc.peer, err, tc.code)
		}
	}

	r, err := c.Zeroize(ctx, &keyspb.ZeroizeRequest{PeerKmeId: "KME-B", Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if r.BlocksErased != 3 {
		t.Fatalf("zeroize erased %d blocks, want 3", r.BlocksErased)
	}
	pools, err := c.ListPools(ctx, &keyspb.ListPoolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if p := pools.Pools[0]; p.AvailableBytes != 0 || p.StoredKeyCount != 0 {
		t.Fatalf("pool after zeroize: %v", p)
	}
}
