package site

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/qkms/qkms/api/keydelivery"
	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/pki"
)

// grpcClient is a KeyDelivery client of site i as the SAE sae.
func (tp *testPair) grpcClient(i int, sae string) *keydelivery.Client {
	tp.t.Helper()
	e, ok := tp.Layout.Find(sae)
	if !ok {
		tp.t.Fatalf("no certificate for %s", sae)
	}
	cfg, err := pki.ClientConfig(e.Cert, e.Key, tp.Layout.CACert)
	if err != nil {
		tp.t.Fatal(err)
	}
	c, err := keydelivery.Dial(tp.Sites[i].GRPCAddr(), cfg)
	if err != nil {
		tp.t.Fatal(err)
	}
	tp.t.Cleanup(func() { c.Close() })
	return c
}

func TestGRPCKeyDelivery(t *testing.T) {
	tp := newTestPair(t, nil)
	tp.ingest(4, 4096)
	tp.waitKey(1024)
	ctx := context.Background()
	a1, b1, b2 := tp.grpcClient(0, "SAE-A1"), tp.grpcClient(1, "SAE-B1"), tp.grpcClient(1, "SAE-B2")

	keys, err := a1.GetKey(ctx, "SAE-B1", 3, 512)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 || len(keys[0].Bytes) != 64 || keys[0].Provenance != keyspb.Provenance_PROVENANCE_QKD || keys[0].Expires.IsZero() {
		t.Fatalf("got %d keys, first %d bytes, provenance %v, expires %v", len(keys), len(keys[0].Bytes), keys[0].Provenance, keys[0].Expires)
	}
	ids := []string{keys[0].ID, keys[1].ID}
	if _, err := b2.GetKeyWithIDs(ctx, "SAE-A1", ids); status.Code(err) != codes.PermissionDenied && status.Code(err) != codes.InvalidArgument {
		t.Fatalf("SAE-B2 fetching SAE-B1's keys: %v", err)
	}
	got, err := b1.GetKeyWithIDs(ctx, "SAE-A1", ids)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i].ID != keys[i].ID || !bytes.Equal(got[i].Bytes, keys[i].Bytes) {
			t.Fatalf("key %d differs between the sites", i)
		}
	}
	// The third key, issued over gRPC, is fetched over ETSI 014: one delivery path.
	etsiGot, err := tp.client(1, "SAE-B1").GetKeyWithIDs(ctx, "SAE-A1", []string{keys[2].ID})
	if err != nil || !bytes.Equal(etsiGot[0].Bytes, keys[2].Bytes) {
		t.Fatalf("ETSI dec_keys of a gRPC-issued key: %v", err)
	}

	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"second fetch", func() error { _, err := b1.GetKeyWithIDs(ctx, "SAE-A1", ids[:1]); return err }, codes.InvalidArgument},
		{"slave at the same site", func() error { _, err := a1.GetKey(ctx, "SAE-A2", 1, 0); return err }, codes.InvalidArgument},
		{"unknown slave", func() error { _, err := a1.GetKey(ctx, "SAE-Z", 1, 0); return err }, codes.InvalidArgument},
		{"SAE of the other site", func() error { _, err := tp.grpcClient(1, "SAE-A1").GetKey(ctx, "SAE-B1", 1, 0); return err }, codes.PermissionDenied},
		{"not enough key", func() error { _, err := a1.GetKey(ctx, "SAE-B1", 64, 8192); return err }, codes.ResourceExhausted},
	}
	for _, tt := range tests {
		if err := tt.call(); status.Code(err) != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestGRPCStreamFollowedAtPeer(t *testing.T) {
	tp := newTestPair(t, nil)
	tp.ingest(4, 16384)
	tp.waitKey(8192)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a1, b1 := tp.grpcClient(0, "SAE-A1"), tp.grpcClient(1, "SAE-B1")
	const n = 60
	st, err := a1.API().StreamKeys(ctx, &keyspb.StreamKeysRequest{SlaveSaeId: "SAE-B1", ChunkSize: 256, Rate: 2000,
		Ttl: durationpb.New(time.Minute), MaxKeys: n})
	if err != nil {
		t.Fatal(err)
	}
	var sent []*keyspb.StreamedKey
	for {
		k, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, k)
	}
	if len(sent) != n {
		t.Fatalf("streamed %d keys, want %d", len(sent), n)
	}
	sid := sent[0].StreamId
	// The slave follows all but the last key; the last is fetched by ID over ETSI 014.
	fl, err := b1.API().FollowKeys(ctx, &keyspb.FollowKeysRequest{MasterSaeId: "SAE-A1", StreamId: sid, MaxKeys: n - 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n-1; i++ {
		k, err := fl.Recv()
		if err != nil {
			t.Fatalf("follow at %d: %v", i, err)
		}
		if k.Seq != int64(i) || k.Key.KeyId != sent[i].Key.KeyId || !bytes.Equal(k.Key.Key, sent[i].Key.Key) {
			t.Fatalf("position %d differs between master and slave", i)
		}
	}
	if _, err := fl.Recv(); err != io.EOF {
		t.Fatalf("follow did not end after max_keys: %v", err)
	}
	last := keydelivery.StreamKeyID(uuid.MustParse(sid), n-1)
	got, err := tp.client(1, "SAE-B1").GetKeyWithIDs(ctx, "SAE-A1", []string{last})
	if err != nil || !bytes.Equal(got[0].Bytes, sent[n-1].Key.Key) || last != sent[n-1].Key.KeyId {
		t.Fatalf("ETSI dec_keys of the last streamed key: %v", err)
	}
}

func TestGRPCHealthAndReflection(t *testing.T) {
	tp := newTestPair(t, nil)
	e, _ := tp.Layout.Find("SAE-A1")
	cfg, err := pki.ClientConfig(e.Cert, e.Key, tp.Layout.CACert)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(tp.Sites[0].GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "qkms.v1.KeyDelivery"})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hr, err)
	}
	rs, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range resp.GetListServicesResponse().GetService() {
		found = found || s.GetName() == "qkms.v1.KeyDelivery"
	}
	if !found {
		t.Fatalf("reflection lists %v, want qkms.v1.KeyDelivery", resp.GetListServicesResponse().GetService())
	}
}

// BenchmarkDeliverGRPC is BenchmarkDeliver over gRPC KeyDelivery: 32 SAE clients with their own
// connections, each getting a 256-bit key at one site and fetching it at the other.
func BenchmarkDeliverGRPC(b *testing.B) {
	tp := newTestPair(b, nil)
	tp.ingest(8, 1<<20)
	tp.waitKey(2 << 20)
	type dir struct {
		enc, dec      *keydelivery.Client
		master, slave string
	}
	// One connection per client and SAE, as separate encryptors would have.
	newDir := func(i int) dir {
		if i%2 == 0 {
			return dir{tp.grpcClient(0, "SAE-A1"), tp.grpcClient(1, "SAE-B1"), "SAE-A1", "SAE-B1"}
		}
		return dir{tp.grpcClient(1, "SAE-B2"), tp.grpcClient(0, "SAE-A2"), "SAE-B2", "SAE-A2"}
	}
	var mu sync.Mutex
	next := 0
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		d := newDir(next)
		next++
		mu.Unlock()
		ctx := context.Background()
		for pb.Next() {
			keys, err := d.enc.GetKey(ctx, d.slave, 1, 0)
			if err != nil {
				b.Error(err)
				return
			}
			got, err := d.dec.GetKeyWithIDs(ctx, d.master, []string{keys[0].ID})
			if err != nil {
				b.Error(err)
				return
			}
			if !bytes.Equal(got[0].Bytes, keys[0].Bytes) {
				b.Error("key mismatch")
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "keys/s")
}

// BenchmarkStreamKeys streams b.N 256-bit keys at SAE-A1's site at 10,000 keys/s wanted (the default maximum) while
// SAE-B1 follows them at the other site, and reports the keys per second both sides saw.
func BenchmarkStreamKeys(b *testing.B) {
	tp := newTestPair(b, nil)
	tp.ingest(8, 1<<20)
	tp.waitKey(2 << 20)
	a1, b1 := tp.grpcClient(0, "SAE-A1"), tp.grpcClient(1, "SAE-B1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	st, err := a1.API().StreamKeys(ctx, &keyspb.StreamKeysRequest{SlaveSaeId: "SAE-B1", Rate: 10000, MaxKeys: int64(b.N)})
	if err != nil {
		b.Fatal(err)
	}
	first, err := st.Recv()
	if err != nil {
		b.Fatal(err)
	}
	followed := make(chan error, 1)
	go func() {
		fl, err := b1.API().FollowKeys(ctx, &keyspb.FollowKeysRequest{MasterSaeId: "SAE-A1", StreamId: first.StreamId, MaxKeys: int64(b.N)})
		if err != nil {
			followed <- err
			return
		}
		for i := 0; i < b.N; i++ {
			if _, err := fl.Recv(); err != nil {
				followed <- err
				return
			}
		}
		followed <- nil
	}()
	for i := 1; i < b.N; i++ {
		if _, err := st.Recv(); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-followed; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "keys/s")
}
