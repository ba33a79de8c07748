package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qkms/qkms/qkdsim"
	"github.com/qkms/qkms/site"
)

// TestBench drives a demo pair in a closed and in an open loop: every key is verified, and an
// open loop issues no more than its schedule allows.
// startBenchPair starts the demo's two sites with nodes nodes each, holding key, and returns
// their demo file.
func startBenchPair(t *testing.T, nodes int) demoFile {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	params, err := qkdsim.Preset("apd")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := site.StartPair(site.PairConfig{
		Dir:    t.TempDir(),
		KMEs:   [2]string{"KME-A", "KME-B"},
		SAEs:   [2][]string{{"SAE-A1", "SAE-A2"}, {"SAE-B1", "SAE-B2"}},
		Link:   &qkdsim.LinkConfig{Name: "A-B", Params: params, Distance: 25, Seed: 1},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Durability: "os", NodesPerSite: nodes,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pair.Close() })
	if err := pair.WaitForKey(ctx, 64<<10); err != nil {
		t.Fatal(err)
	}
	return demoFileOf(pair)
}

func TestBench(t *testing.T) {
	df := startBenchPair(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	closed, err := runBench(ctx, df, benchLoad{protocol: "etsi014", clients: 4, duration: time.Second, size: 256, number: 4})
	if err != nil {
		t.Fatal(err)
	}
	if closed.Keys == 0 || closed.Errors != 0 || closed.Mismatches != 0 || closed.Rate != 0 {
		t.Fatalf("closed loop: %+v", closed)
	}
	// The demo's sites run in this process, so both figures count its CPU.
	if c := closed.CPUPerKey; c.Client <= 0 || c.Sites == nil || *c.Sites <= 0 {
		t.Fatalf("closed loop: CPU per key %+v, want client and sites measured", c)
	}

	// 4 clients, 4 keys per request, 200 keys/s for 2 s: 100 requests are due, 25 per client.
	const rate, number, d = 200.0, 4, 2 * time.Second
	open, err := runBench(ctx, df, benchLoad{protocol: "etsi014", clients: 4, duration: d, size: 256, number: number, rate: rate})
	if err != nil {
		t.Fatal(err)
	}
	due := int64(rate * d.Seconds())
	if open.Errors != 0 || open.Mismatches != 0 || open.Rate != rate {
		t.Fatalf("open loop: %+v", open)
	}
	if open.Keys > due+4*number || open.Keys < due/2 {
		t.Fatalf("open loop delivered %d keys, want about %d", open.Keys, due)
	}
	for _, k := range []string{"enc", "dec"} {
		if l := open.LatencyMS[k]; l.P50 <= 0 || l.P99 < l.P50 {
			t.Fatalf("open loop %s latency %+v", k, l)
		}
	}
}

func TestStartCPUProfile(t *testing.T) {
	if _, err := startCPUProfile(filepath.Join(t.TempDir(), "no-such-dir", "cpu.prof")); err == nil {
		t.Fatal("profile into a missing directory: no error")
	}
	path := filepath.Join(t.TempDir(), "cpu.prof")
	stop, err := startCPUProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := startCPUProfile(filepath.Join(t.TempDir(), "second.prof")); err == nil {
		t.Error("a second profile while one runs: no error")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A profile is gzip-compressed protobuf, even when it holds no sample.
	if len(raw) < 2 || raw[0] != 0x1f || raw[1] != 0x8b {
		t.Fatalf("profile of %d bytes is not gzip", len(raw))
	}
}

// With --spread the clients of a 3-node pair reach every node of both sites, for enc_keys and
// for dec_keys, and every key still checks out.
func TestBenchSpread(t *testing.T) {
	df := startBenchPair(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := runBench(ctx, df, benchLoad{protocol: "etsi014", clients: 6, duration: time.Second, size: 256, number: 2, spread: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys == 0 || res.Errors != 0 || res.Mismatches != 0 {
		t.Fatalf("spread over 3 nodes: %+v", res)
	}
	for _, s := range df.Sites {
		for _, n := range s.Nodes {
			for _, op := range []string{"enc_keys", "dec_keys"} {
				if got := answered(t, n.MetricsURL, op); got == 0 {
					t.Errorf("node %s answered no %s", n.NodeID, op)
				}
			}
		}
	}
}

// answered is how many ETSI 014 requests of operation op the node behind a metrics URL has
// answered with 200.
func answered(t *testing.T, metricsURL, op string) float64 {
	t.Helper()
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "qkms_request_duration_seconds_count{") && strings.Contains(line, `api="etsi014"`) &&
			strings.Contains(line, `code="200"`) && strings.Contains(line, `operation="`+op+`"`) {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			sum += v
		}
	}
	return sum
}

func TestProcessCPU(t *testing.T) {
	body := "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n" +
		"# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total_x 1\nprocess_cpu_seconds_total 12.34\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics":
			fmt.Fprint(w, body)
		case "/other":
			fmt.Fprint(w, "go_goroutines 7\n")
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	if v, err := processCPU(ctx, srv.URL+"/metrics"); err != nil || v != 12.34 {
		t.Fatalf("processCPU = %v, %v; want 12.34", v, err)
	}
	for _, path := range []string{"/other", "/missing"} {
		if v, err := processCPU(ctx, srv.URL+path); err == nil {
			t.Fatalf("%s: processCPU = %v, want an error", path, v)
		}
	}
}

func TestSiteProcesses(t *testing.T) {
	df := demoFile{Sites: []demoSite{
		{MetricsURL: "http://a1", Nodes: []demoNode{{MetricsURL: "http://a1"}, {MetricsURL: "http://a2"}}},
		{MetricsURL: "http://b1", Nodes: []demoNode{{MetricsURL: "http://b1"}, {}}},
		{MetricsURL: "http://c"},
	}}
	if got, want := siteProcesses(df), []string{"http://a1", "http://a2", "http://b1", "http://c"}; !slices.Equal(got, want) {
		t.Fatalf("separate processes: %v, want %v", got, want)
	}
	df.OneProcess = true
	if got, want := siteProcesses(df), []string{"http://a1"}; !slices.Equal(got, want) {
		t.Fatalf("one process: %v, want %v", got, want)
	}
	if got := siteProcesses(demoFile{OneProcess: true, Sites: []demoSite{{}}}); len(got) != 0 {
		t.Fatalf("no endpoints: %v", got)
	}
}
