package site

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qkms/qkms/api/etsi014"
)

func TestBucket(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	l := RateLimit{KeysPerSecond: 10, Burst: 5}
	// Each step takes n keys at t0+at; want says whether it passes.
	type step struct {
		at   time.Duration
		n    int
		want bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"burst then empty", []step{{0, 5, true}, {0, 1, false}}},
		{"refill at the rate", []step{{0, 5, true}, {100 * time.Millisecond, 1, true}, {100 * time.Millisecond, 1, false}, {300 * time.Millisecond, 2, true}}},
		{"refill capped at burst", []step{{0, 1, true}, {time.Hour, 5, true}, {time.Hour, 1, false}}},
		{"refusal takes nothing", []step{{0, 4, true}, {0, 2, false}, {0, 1, true}}},
		{"larger than burst never passes", []step{{0, 6, false}, {time.Hour, 6, false}, {time.Hour, 5, true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bucket
			for i, s := range tc.steps {
				ok, wait := b.take(l, s.n, t0.Add(s.at))
				if ok != s.want {
					t.Fatalf("step %d (%d keys at %v): ok=%v, want %v", i, s.n, s.at, ok, s.want)
				}
				if !ok && s.n <= 5 && wait <= 0 {
					t.Fatalf("step %d: refused with wait %v", i, wait)
				}
			}
		})
	}
}

func TestRateLimitConfig(t *testing.T) {
	for _, tc := range []struct {
		l  RateLimit
		ok bool
	}{
		{RateLimit{}, true},
		{RateLimit{KeysPerSecond: 100, Burst: 10}, true},
		{RateLimit{KeysPerSecond: -1}, false},
		{RateLimit{KeysPerSecond: 1, Burst: -1}, false},
	} {
		c := Config{KMEID: "K", DataDir: "d", TLS: TLSConfig{CA: "a", Cert: "b", Key: "c"},
			RateLimit: map[string]RateLimit{"SAE-1": tc.l}}
		if err := c.fill(); (err == nil) != tc.ok {
			t.Errorf("%+v: fill: %v, want ok=%v", tc.l, err, tc.ok)
		}
	}
	if (RateLimit{KeysPerSecond: 2.5}).burst() != 3 || (RateLimit{KeysPerSecond: 0.1}).burst() != 1 {
		t.Error("default burst is not one second's worth, at least 1")
	}
}

// TestRateLimitedSAE runs the limits on a real pair: an SAE over its limit gets a 503 (ETSI 014)
// or RESOURCE_EXHAUSTED (gRPC) telling it to slow down, the refused request consumes no key,
// and other SAEs and operations keep their own buckets.
func TestRateLimitedSAE(t *testing.T) {
	tp := newTestPair(t, nil)
	tp.ingest(2, 4096)
	tp.waitKey(512)
	ctx := context.Background()
	// A rate so low that no token comes back during the test: the bucket holds the burst only.
	slow := RateLimit{KeysPerSecond: 0.001, Burst: 3}
	if err := tp.Sites[0].SetRateLimits(map[string]RateLimit{"SAE-A1": slow}); err != nil {
		t.Fatal(err)
	}
	if err := tp.Sites[1].SetRateLimits(map[string]RateLimit{RateLimitDefault: slow}); err != nil {
		t.Fatal(err)
	}
	a1, a2, b1 := tp.client(0, "SAE-A1"), tp.client(0, "SAE-A2"), tp.client(1, "SAE-B1")
	stored := func() int {
		st, err := a2.Status(ctx, "SAE-B1")
		if err != nil {
			t.Fatal(err)
		}
		return st.StoredKeyCount
	}

	if _, err := a1.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 4}); statusCode(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "fewer keys") {
		t.Fatalf("request larger than the burst: %v, want 503 asking for fewer keys", err)
	}
	keys, err := a1.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 2})
	if err != nil {
		t.Fatal(err)
	}
	more, err := a1.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 1})
	if err != nil {
		t.Fatal(err)
	}
	keys = append(keys, more...)
	before := stored()
	_, err = a1.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 1})
	if statusCode(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "slow down") {
		t.Fatalf("fourth key: %v, want 503 telling the SAE to slow down", err)
	}
	_, err = tp.grpcClient(0, "SAE-A1").GetKey(ctx, "SAE-B1", 1, 0)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "slow down") {
		t.Fatalf("gRPC over the limit: %v, want ResourceExhausted telling the SAE to slow down", err)
	}
	if after := stored(); after != before {
		t.Fatalf("refused requests consumed key: %d keys before, %d after", before, after)
	}
	// Another SAE at the same site is not limited.
	if _, err := a2.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 5}); err != nil {
		t.Fatalf("SAE-A2 (no limit): %v", err)
	}

	// dec_keys has its own bucket (the default entry applies at site B): three keys fetch,
	// a fourth is refused before it is looked up, and the key stays fetchable.
	ids := []string{keys[0].ID, keys[1].ID, keys[2].ID}
	if _, err := b1.GetKeyWithIDs(ctx, "SAE-A1", ids); err != nil {
		t.Fatal(err)
	}
	extra, err := a2.GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b1.GetKeyWithIDs(ctx, "SAE-A2", []string{extra[0].ID})
	if statusCode(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "slow down") {
		t.Fatalf("dec_keys over the limit: %v, want 503", err)
	}
	if err := tp.Sites[1].SetRateLimits(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b1.GetKeyWithIDs(ctx, "SAE-A2", []string{extra[0].ID}); err != nil {
		t.Fatalf("the refused dec_keys consumed the key: %v", err)
	}
}
