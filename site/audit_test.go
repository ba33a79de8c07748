package site

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/qkms/qkms/api/etsi014"
	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/audit"
	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pki"
)

// adminClient dials site i's admin API with the certificate of id.
func (tp *testPair) adminClient(i int, id string) keyspb.AdminClient {
	tp.t.Helper()
	e, ok := tp.Layout.Find(id)
	if !ok {
		tp.t.Fatalf("no certificate for %s", id)
	}
	cfg, err := pki.ClientConfig(e.Cert, e.Key, tp.Layout.CACert)
	if err != nil {
		tp.t.Fatal(err)
	}
	conn, err := grpc.NewClient(tp.Sites[i].AdminAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		tp.t.Fatal(err)
	}
	tp.t.Cleanup(func() { conn.Close() })
	return keyspb.NewAdminClient(conn)
}

func exportAudit(t *testing.T, c keyspb.AdminClient) []byte {
	t.Helper()
	st, err := c.ExportAudit(context.Background(), &keyspb.ExportAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for {
		ch, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return buf.Bytes()
		}
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(ch.GetData())
	}
}

func queryAudit(t *testing.T, c keyspb.AdminClient, req *keyspb.QueryAuditRequest) ([]*kms.AuditEntry, error) {
	t.Helper()
	st, err := c.QueryAudit(context.Background(), req)
	if err != nil {
		return nil, err
	}
	var out []*kms.AuditEntry
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		e := new(kms.AuditEntry)
		if err := json.Unmarshal(m.GetJson(), e); err != nil || e.Seq != m.GetIndex() {
			t.Fatalf("entry %d: %v", m.GetIndex(), err)
		}
		out = append(out, e)
	}
}

// TestAuditAcrossSites: keys delivered between two sites leave entries at both, each site's
// export verifies offline under its public key, the fingerprints show both sites delivered
// the same keys, no key bytes are in the trail, and a refused admin call is recorded.
func TestAuditAcrossSites(t *testing.T) {
	tp := newTestPair(t, nil)
	tp.ingest(4, 4096)
	tp.waitKey(1024)
	ctx := context.Background()
	keys, err := tp.client(0, "SAE-A1").GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 2, Size: 256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.client(1, "SAE-B1").GetKeyWithIDs(ctx, "SAE-A1", []string{keys[0].ID, keys[1].ID}); err != nil {
		t.Fatal(err)
	}
	// An SAE certificate calling the admin API is refused and recorded.
	if _, err := tp.adminClient(0, "SAE-A1").ListPools(ctx, &keyspb.ListPoolsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("SAE calling Admin: %v, want PermissionDenied", err)
	}
	if _, err := queryAudit(t, tp.adminClient(0, "SAE-A1"), &keyspb.QueryAuditRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("SAE querying the audit trail: %v, want PermissionDenied", err)
	}
	var exports [2][]byte
	for i, n := range tp.Sites {
		if err := n.checkpoint(ctx, true); err != nil {
			t.Fatal(err)
		}
		exports[i] = exportAudit(t, tp.adminClient(i, pki.AdminID(n.KMEID())))
		rep, err := audit.Verify(bytes.NewReader(exports[i]), n.AuditPublicKey())
		if err != nil {
			t.Fatalf("%s: %v", n.KMEID(), err)
		}
		if rep.Checkpoints < 1 || rep.Signed != rep.Entries || rep.KME != n.KMEID() {
			t.Fatalf("%s: report %+v", n.KMEID(), rep)
		}
		for _, ev := range []kms.AuditEvent{kms.EventBlockIngested, kms.EventBlockVerified} {
			if rep.Events[ev] == 0 {
				t.Errorf("%s: no %s entry", n.KMEID(), ev)
			}
		}
		// Another site's key does not verify this site's export.
		if _, err := audit.Verify(bytes.NewReader(exports[i]), tp.Sites[1-i].AuditPublicKey()); !errors.Is(err, audit.ErrSignature) {
			t.Errorf("%s export verified under the other site's key: %v", n.KMEID(), err)
		}
		for _, k := range keys {
			for _, form := range [][]byte{k.Bytes, []byte(hex.EncodeToString(k.Bytes)),
				[]byte(base64.StdEncoding.EncodeToString(k.Bytes)[:20]), []byte(base64.RawURLEncoding.EncodeToString(k.Bytes)[:20])} {
				if bytes.Contains(exports[i], form) {
					t.Fatalf("%s: the export holds the bytes of key %s", n.KMEID(), k.ID)
				}
			}
		}
	}
	cmp, err := audit.CompareSites(bytes.NewReader(exports[0]), tp.Sites[0].audit.key, bytes.NewReader(exports[1]), tp.Sites[1].audit.key)
	if err != nil {
		t.Fatal(err)
	}
	if len(cmp.Same) != 2 || len(cmp.Different) != 0 {
		t.Fatalf("fingerprint comparison %+v", cmp)
	}

	admin := tp.adminClient(0, pki.AdminID("KME-A"))
	for _, tc := range []struct {
		name string
		req  *keyspb.QueryAuditRequest
		want func(*kms.AuditEntry) bool
	}{
		{"issued", &keyspb.QueryAuditRequest{Event: string(kms.EventKeyIssued)},
			func(e *kms.AuditEntry) bool {
				return e.Master == "SAE-A1" && len(e.KeyIDs) == 2 && len(e.Fingerprints) == 2
			}},
		{"refused admin call", &keyspb.QueryAuditRequest{Event: string(kms.EventAdmin), SaeId: "SAE-A1"},
			func(e *kms.AuditEntry) bool {
				return e.Actor == "SAE-A1" && bytes.Contains([]byte(e.Detail), []byte("denied"))
			}},
	} {
		got, err := queryAudit(t, admin, tc.req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(got) == 0 {
			t.Fatalf("%s: no entry", tc.name)
		}
		for _, e := range got {
			if string(e.Event) != tc.req.Event || !tc.want(e) {
				t.Errorf("%s: unexpected entry %+v", tc.name, e)
			}
		}
	}
	fetched, err := queryAudit(t, tp.adminClient(1, pki.AdminID("KME-B")), &keyspb.QueryAuditRequest{SaeId: "SAE-B1", Event: string(kms.EventKeyFetched)})
	if err != nil || len(fetched) != 1 || fetched[0].SAE != "SAE-B1" {
		t.Fatalf("fetch entries at B: %+v, %v", fetched, err)
	}
	if _, err := queryAudit(t, admin, &keyspb.QueryAuditRequest{Event: "nonsense"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("unknown event: %v, want InvalidArgument", err)
	}
}
