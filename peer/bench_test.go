package peer

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/grpc"

	"github.com/qkms/qkms/kms"
)

// nullService accepts everything, so the benchmark measures the channel, not a store.
type nullService struct{ fakeService }

func (*nullService) PushReservations(_ context.Context, _ string, rs []kms.Reservation) ([]string, []Reject, error) {
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.KeyID
	}
	return ids, nil, nil
}

// BenchmarkPushReservations measures pushed reservations per second over loopback mTLS, in
// batches as the site's push queue sends them. Numbers are noisy on shared cores.
func BenchmarkPushReservations(b *testing.B) {
	for _, batch := range []int{1, 64, 512} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			ca := newTestCA(b, "bench CA")
			svc := &nullService{}
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			addr := serve(b, ca.serverTLS(ca.issue(b, "KME-B", "kme")), func(s *grpc.Server) { Register(s, svc, logger) })
			c, err := Dial(addr, ca.clientTLS(ca.issue(b, "KME-A", "kme")), "KME-B")
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			rs := make([]kms.Reservation, batch)
			for i := range rs {
				rs[i] = reservation(uuid.NewString(), "KME-A", "KME-B")
			}
			ctx := context.Background()
			b.ResetTimer()
			for b.Loop() {
				if _, _, err := c.PushReservations(ctx, rs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "reservations/s")
		})
	}
}
