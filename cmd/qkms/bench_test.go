package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/qkms/qkms/qkdsim"
	"github.com/qkms/qkms/site"
)

// TestBench drives a demo pair in a closed and in an open loop: every key is verified, and an
// open loop issues no more than its schedule allows.
func TestBench(t *testing.T) {
	params, err := qkdsim.Preset("apd")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := site.StartPair(site.PairConfig{
		Dir:    t.TempDir(),
		KMEs:   [2]string{"KME-A", "KME-B"},
		SAEs:   [2][]string{{"SAE-A1", "SAE-A2"}, {"SAE-B1", "SAE-B2"}},
		Link:   &qkdsim.LinkConfig{Name: "A-B", Params: params, Distance: 25, Seed: 1},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Durability: "os",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pair.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := pair.WaitForKey(ctx, 64<<10); err != nil {
		t.Fatal(err)
	}
	df := demoFileOf(pair)

	closed, err := runBench(ctx, df, benchLoad{protocol: "etsi014", clients: 4, duration: time.Second, size: 256, number: 4})
	if err != nil {
		t.Fatal(err)
	}
	if closed.Keys == 0 || closed.Errors != 0 || closed.Mismatches != 0 || closed.Rate != 0 {
		t.Fatalf("closed loop: %+v", closed)
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
