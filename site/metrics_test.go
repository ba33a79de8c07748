package site

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/qkms/qkms/api/etsi014"
)

// scrape fetches /metrics of a node and returns the value of the sample name{labels}
// (labels may be a subset of the sample's), or -1 when there is no such sample.
func scrape(t *testing.T, n *Node, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	sum, found := 0.0, false
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		match := true
		for _, l := range labels {
			match = match && strings.Contains(line[:sp], l)
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		sum, found = sum+v, true
	}
	if !found {
		return -1
	}
	return sum
}

func TestMetricsAfterDelivery(t *testing.T) {
	tp := newTestPair(t, nil)
	tp.ingest(2, 4096)
	tp.waitKey(512)
	a, b := tp.Sites[0], tp.Sites[1]
	pair := []string{`master_sae="SAE-A1"`, `slave_sae="SAE-B1"`, `provenance="qkd"`}
	before := []float64{scrape(t, a, "qkms_keys_issued_total", pair...), scrape(t, b, "qkms_keys_fetched_total", pair...)}

	ctx := context.Background()
	keys, err := tp.client(0, "SAE-A1").GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 2})
	if err != nil {
		t.Fatal(err)
	}
	// A retry under the same idempotency key gets the keys again: counted as redelivered, not
	// as fetched a second time.
	ids := []string{keys[0].ID, keys[1].ID}
	for range 2 {
		if _, err := tp.grpcClient(1, "SAE-B1").GetKeyWithIDsIdempotent(ctx, "SAE-A1", ids, "metrics-retry"); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name   string
		node   *Node
		metric string
		labels []string
		min    float64
	}{
		{"issued", a, "qkms_keys_issued_total", pair, max(0, before[0]) + 2},
		{"fetched", b, "qkms_keys_fetched_total", pair, max(0, before[1]) + 2},
		{"etsi014 latency", a, "qkms_request_duration_seconds_count", []string{`api="etsi014"`, `operation="enc_keys"`, `code="200"`}, 1},
		{"grpc latency", b, "qkms_request_duration_seconds_count", []string{`api="grpc"`, `operation="GetKeyWithIDs"`, `code="OK"`}, 1},
		{"apply latency", a, "qkms_raft_apply_duration_seconds_count", []string{`command="issue"`}, 1},
		{"link bytes", a, "qkms_link_key_bytes_total", []string{`peer="KME-B"`}, 2 * (4096 - tagKeyBytes)},
		{"link qber", a, "qkms_link_qber", []string{`peer="KME-B"`}, 0.02},
		{"pool", a, "qkms_pool_available_bytes", []string{`peer="KME-B"`}, 1},
		{"raft leader", a, "qkms_raft_state", []string{`state="Leader"`}, 1},
	}
	for _, tt := range tests {
		if got := scrape(t, tt.node, tt.metric, tt.labels...); got < tt.min {
			t.Errorf("%s: %s%v = %g, want at least %g", tt.name, tt.metric, tt.labels, got, tt.min)
		}
	}
	if got := scrape(t, b, "qkms_keys_fetched_total", pair...); got != max(0, before[1])+2 {
		t.Errorf("fetched after a retried fetch: %g, want %g", got, max(0, before[1])+2)
	}
	resent := []string{`operation="fetch"`, `master_sae="SAE-A1"`, `slave_sae="SAE-B1"`}
	if got := scrape(t, b, "qkms_keys_redelivered_total", resent...); got != 2 {
		t.Errorf("qkms_keys_redelivered_total%v = %g, want 2", resent, got)
	}
	// Key IDs never become label values.
	resp, err := http.Get("http://" + a.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), keys[0].ID) {
		t.Fatal("a key ID appears in /metrics")
	}
}

// The peer channel's metrics: pushes and what became of their reservations at the issuing
// site, the reservations the peer has not acknowledged, and how fetches at the slave's site
// found the reservations they needed (present, pulled, not issued, unavailable).
func TestPeerChannelMetrics(t *testing.T) {
	tp := keyedPair(t, 1, 2, 4096)
	a, b := tp.Sites[0], tp.Sites[1]
	ctx := context.Background()
	toB, fromA := `peer="KME-B"`, `peer="KME-A"`
	value := func(n *Node, name string, labels ...string) float64 { return max(0, scrape(t, n, name, labels...)) }
	outcome := func(o string) float64 { return value(b, "qkms_fetch_reservations_total", fromA, `outcome="`+o+`"`) }
	unpushed := func() (bool, error) {
		count, err := a.db.UnpushedCount()
		return count == 0, err
	}
	check := func(what string, got, want float64) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %g, want %g", what, got, want)
		}
	}

	// Pushed, then fetched: the fetch finds the reservations present.
	accepted0 := value(a, "qkms_peer_pushed_reservations_total", toB, `result="accepted"`)
	pushes0 := value(a, "qkms_peer_push_duration_seconds_count", toB, `result="ok"`)
	present0 := outcome("present")
	keys, err := tp.client(0, "SAE-A1").GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 3})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{keys[0].ID, keys[1].ID, keys[2].ID}
	waitReservations(t, b, ids...)
	// The acknowledgement is recorded after the push is counted.
	waitApplied(t, a, "push acknowledged", unpushed)
	if _, err := tp.client(1, "SAE-B1").GetKeyWithIDs(ctx, "SAE-A1", ids); err != nil {
		t.Fatal(err)
	}
	if got := value(a, "qkms_peer_pushed_reservations_total", toB, `result="accepted"`); got < accepted0+3 {
		t.Errorf("accepted reservations: %g, want at least %g", got, accepted0+3)
	}
	if got := value(a, "qkms_peer_push_duration_seconds_count", toB, `result="ok"`); got < pushes0+1 {
		t.Errorf("pushes: %g, want at least %g", got, pushes0+1)
	}
	check("unacknowledged reservations after the push", scrape(t, a, "qkms_unpushed_reservations"), 0)
	check("fetches finding their reservations present", outcome("present"), present0+1)

	// Issued but never pushed: counted as unacknowledged, and the fetch pulls them.
	pulled0 := outcome("pulled")
	issued := issueUnpushed(t, a, b, newKeyIDs(2))
	check("unacknowledged reservations", scrape(t, a, "qkms_unpushed_reservations"), 2)
	if _, err := tp.client(1, "SAE-B1").GetKeyWithIDs(ctx, "SAE-A1", []string{issued.Keys[0].ID, issued.Keys[1].ID}); err != nil {
		t.Fatal(err)
	}
	check("fetches that pulled", outcome("pulled"), pulled0+1)

	// An ID the issuing site never issued: waited for, asked for, not found (400).
	notIssued0 := outcome("not_issued")
	if _, err := tp.client(1, "SAE-B1").GetKeyWithIDs(ctx, "SAE-A1", newKeyIDs(1)); statusCode(err) != http.StatusBadRequest {
		t.Fatalf("fetch of an ID never issued: %v, want 400", err)
	}
	check("fetches of IDs never issued", outcome("not_issued"), notIssued0+1)

	// The channel down: a push leaves its reservations unsent, and a fetch needing them
	// answers 503.
	unsent0 := value(a, "qkms_peer_pushed_reservations_total", toB, `result="unsent"`)
	unavailable0 := outcome("unavailable")
	dead := "127.0.0.1:1" // nothing listens on port 1
	a.SetPeer(b.KMEID(), []string{dead})
	b.SetPeer(a.KMEID(), []string{dead})
	issued = issueUnpushed(t, a, b, newKeyIDs(2))
	if acked := a.pushReservations(issued.Reservations); len(acked) != 0 {
		t.Fatalf("%d reservations acknowledged through a dead channel", len(acked))
	}
	check("unsent reservations", value(a, "qkms_peer_pushed_reservations_total", toB, `result="unsent"`), unsent0+2)
	if _, err := tp.client(1, "SAE-B1").GetKeyWithIDs(ctx, "SAE-A1", []string{issued.Keys[0].ID}); statusCode(err) != http.StatusServiceUnavailable {
		t.Fatalf("fetch with the channel down: %v, want 503", err)
	}
	check("fetches that found the issuing site unavailable", outcome("unavailable"), unavailable0+1)
}
