package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/qkms/qkms/api/etsi014"
	"github.com/qkms/qkms/api/keydelivery"
	"github.com/qkms/qkms/internal/cputime"
	"github.com/qkms/qkms/pki"
)

// benchResult is what `qkms bench --json` prints.
type benchResult struct {
	Protocol  string  `json:"protocol"`
	Clients   int     `json:"clients"`
	DurationS float64 `json:"duration_s"`
	SizeBits  int     `json:"size_bits"`
	Number    int     `json:"number"`
	// Rate is the offered load (keys/s) of an open-loop run, 0 for a closed loop.
	Rate       float64               `json:"rate_keys_per_s,omitempty"`
	Keys       int64                 `json:"keys"`
	KeysPerS   float64               `json:"keys_per_s"`
	Errors     int64                 `json:"errors"`
	Mismatches int64                 `json:"mismatches"`
	LatencyMS  map[string]percentile `json:"latency_ms"`
	// CPUPerKey is the CPU time (user + system) a verified key cost during the run.
	CPUPerKey  cpuPerKey `json:"cpu_us_per_key"`
	FirstError string    `json:"first_error,omitempty"`
}

// cpuPerKey is in microseconds of CPU per verified key: the bench's own process, and the sites'
// processes as their metrics endpoints report process_cpu_seconds_total (omitted when
// demo.json lists no metrics endpoint or one could not be read).
type cpuPerKey struct {
	Client float64  `json:"client"`
	Sites  *float64 `json:"sites,omitempty"`
}

type percentile struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
}

func newBenchCmd() *cobra.Command {
	var (
		demo     string
		clients  int
		duration time.Duration
		size     int
		number   int
		protocol string
		rate     float64
		asJSON   bool
		cpuprof  string
		spread   bool
	)
	cmd := &cobra.Command{
		Use:   "bench --demo DIR/demo.json",
		Short: "drive enc_keys at one site and dec_keys at the other; verify every key; report keys/s and latency",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if protocol != "etsi014" && protocol != "grpc" {
				return fmt.Errorf("--protocol %q is not available; supported: etsi014, grpc", protocol)
			}
			if clients < 1 || number < 1 || size < 8 || size%8 != 0 || duration <= 0 || rate < 0 {
				return fmt.Errorf("--clients and --number must be >= 1, --size a positive multiple of 8, --duration > 0, --rate >= 0")
			}
			raw, err := os.ReadFile(demo)
			if err != nil {
				return fmt.Errorf("read --demo: %w", err)
			}
			var df demoFile
			if err := json.Unmarshal(raw, &df); err != nil {
				return fmt.Errorf("parse %s: %w", demo, err)
			}
			if len(df.Sites) < 2 || len(df.Sites[0].SAEs) == 0 || len(df.Sites[1].SAEs) == 0 {
				return fmt.Errorf("%s: need two sites with an SAE each", demo)
			}
			if cpuprof != "" {
				stop, err := startCPUProfile(cpuprof)
				if err != nil {
					return err
				}
				defer func() {
					if err := stop(); err != nil {
						fmt.Fprintf(cmd.ErrOrStderr(), "--cpuprofile: %v\n", err)
					}
				}()
			}
			res, err := runBench(cmd.Context(), df, benchLoad{protocol: protocol, clients: clients, duration: duration, size: size, number: number, rate: rate, spread: spread})
			if err != nil {
				return err
			}
			res.Protocol = protocol
			if asJSON {
				b, _ := json.Marshal(res)
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return nil
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%d clients, %s, %d x %d-bit keys per request over %s", clients, duration, number, size, protocol)
			if rate > 0 {
				fmt.Fprintf(w, ", offered %.0f keys/s", rate)
			}
			fmt.Fprintln(w)
			fmt.Fprintf(w, "verified keys: %d (%.0f keys/s)  errors: %d  mismatches: %d\n", res.Keys, res.KeysPerS, res.Errors, res.Mismatches)
			for _, k := range []string{"enc", "dec"} {
				l := res.LatencyMS[k]
				fmt.Fprintf(w, "%s_keys latency ms: p50 %.2f  p99 %.2f  p999 %.2f\n", k, l.P50, l.P99, l.P999)
			}
			fmt.Fprintf(w, "CPU per key: client %.1f us", res.CPUPerKey.Client)
			if res.CPUPerKey.Sites != nil {
				fmt.Fprintf(w, ", sites %.1f us", *res.CPUPerKey.Sites)
			}
			fmt.Fprintln(w)
			if res.FirstError != "" {
				fmt.Fprintf(w, "first error: %s\n", res.FirstError)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&demo, "demo", "", "demo.json written by `qkms demo`")
	cmd.Flags().IntVar(&clients, "clients", 32, "concurrent SAE clients")
	cmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "how long to run")
	cmd.Flags().IntVar(&size, "size", 256, "key size in bits")
	cmd.Flags().IntVar(&number, "number", 1, "keys per enc_keys request")
	cmd.Flags().StringVar(&protocol, "protocol", "etsi014", "API to drive: etsi014 (REST) or grpc (qkms.v1.KeyDelivery)")
	cmd.Flags().Float64Var(&rate, "rate", 0, "offered load in keys/s, spread evenly over the clients (open loop; enc_keys latency counts from when a request was due); 0: each client sends its next request as soon as the last is done")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	cmd.Flags().BoolVar(&spread, "spread", false, "spread the clients over every node of each site (client i talks to node i), as encryptors behind a load balancer would; without it they all talk to each site's first node")
	cmd.Flags().StringVar(&cpuprof, "cpuprofile", "", "write the bench client's CPU profile to this file (go tool pprof)")
	return cmd
}

// benchKey is a delivered key as the bench compares them.
type benchKey struct {
	id    string
	bytes []byte
}

// benchClient is one SAE's connection to its site over the protocol under test.
type benchClient interface {
	getKey(ctx context.Context, slave string, number, size int) ([]benchKey, error)
	getKeyWithIDs(ctx context.Context, master string, ids []string) ([]benchKey, error)
}

type etsiBench struct{ c *etsi014.Client }

func (b etsiBench) getKey(ctx context.Context, slave string, number, size int) ([]benchKey, error) {
	keys, err := b.c.GetKey(ctx, slave, etsi014.KeyRequest{Number: number, Size: size})
	out := make([]benchKey, len(keys))
	for i, k := range keys {
		out[i] = benchKey{k.ID, k.Bytes}
	}
	return out, err
}

func (b etsiBench) getKeyWithIDs(ctx context.Context, master string, ids []string) ([]benchKey, error) {
	keys, err := b.c.GetKeyWithIDs(ctx, master, ids)
	out := make([]benchKey, len(keys))
	for i, k := range keys {
		out[i] = benchKey{k.ID, k.Bytes}
	}
	return out, err
}

type grpcBench struct{ c *keydelivery.Client }

func (b grpcBench) getKey(ctx context.Context, slave string, number, size int) ([]benchKey, error) {
	keys, err := b.c.GetKey(ctx, slave, number, size)
	out := make([]benchKey, len(keys))
	for i, k := range keys {
		out[i] = benchKey{k.ID, k.Bytes}
	}
	return out, err
}

func (b grpcBench) getKeyWithIDs(ctx context.Context, master string, ids []string) ([]benchKey, error) {
	keys, err := b.c.GetKeyWithIDs(ctx, master, ids)
	out := make([]benchKey, len(keys))
	for i, k := range keys {
		out[i] = benchKey{k.ID, k.Bytes}
	}
	return out, err
}

// direction is one master-slave pair across the two sites.
type direction struct {
	enc, dec          benchClient
	masterID, slaveID string
}

// benchLoad is what runBench drives: clients SAEs over protocol for duration, number keys of
// size bits per enc_keys, and with rate > 0 an enc_keys every number/rate seconds in all.
type benchLoad struct {
	protocol              string
	clients, size, number int
	duration              time.Duration
	rate                  float64
	spread                bool // client c talks to node c of each site (modulo its nodes), not the first
}

func runBench(ctx context.Context, df demoFile, load benchLoad) (*benchResult, error) {
	protocol, clients, d, size, number := load.protocol, load.clients, load.duration, load.size, load.number
	var conns []*keydelivery.Client
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Each bench client has its own connections, as separate encryptors would: one pooled
	// HTTP/1.1 client per SAE for ETSI 014 (it opens a connection per concurrent request), one
	// HTTP/2 connection per client and SAE for gRPC.
	client := func(site demoSite, sae demoSAE) (benchClient, error) {
		cfg, err := pki.ClientConfig(sae.Cert, sae.Key, df.CA)
		if err != nil {
			return nil, err
		}
		if protocol == "grpc" {
			if site.GRPCAddr == "" {
				return nil, fmt.Errorf("site %s has no grpc_addr in demo.json; restart qkms demo", site.KMEID)
			}
			c, err := keydelivery.Dial(site.GRPCAddr, cfg)
			if err != nil {
				return nil, err
			}
			conns = append(conns, c)
			return grpcBench{c}, nil
		}
		return etsiBench{etsi014.NewClient(site.ETSI014URL, cfg)}, nil
	}
	// Half the clients issue at A for B (SAE-A1 -> SAE-B1), half at B for A (the last SAE of B
	// -> the last SAE of A), so both sites spend the blocks they own. Node k of each site
	// serves them (the first node unless --spread).
	dirsFor := func(k int) ([]direction, error) {
		var dirs []direction
		for i := 0; i < 2; i++ {
			ms, ss := df.Sites[i].node(k), df.Sites[1-i].node(k)
			master, slave := ms.SAEs[0], ss.SAEs[0]
			if i == 1 {
				master, slave = ms.SAEs[len(ms.SAEs)-1], ss.SAEs[len(ss.SAEs)-1]
			}
			enc, err := client(ms, master)
			if err != nil {
				return nil, err
			}
			dec, err := client(ss, slave)
			if err != nil {
				return nil, err
			}
			dirs = append(dirs, direction{enc: enc, dec: dec, masterID: master.SAEID, slaveID: slave.SAEID})
		}
		return dirs, nil
	}
	nodes := 1
	if load.spread {
		nodes = max(len(df.Sites[0].Nodes), len(df.Sites[1].Nodes), 1)
	}
	shared := make([][]direction, nodes)
	for k := range shared {
		var err error
		if shared[k], err = dirsFor(k); err != nil {
			return nil, err
		}
	}
	perClient := make([][]direction, clients)
	for c := range perClient {
		perClient[c] = shared[c%nodes]
		if protocol == "grpc" {
			var err error
			if perClient[c], err = dirsFor(c % nodes); err != nil {
				return nil, err
			}
		}
	}
	// Encryptors keep their connections: each client opens its own (an enc_keys and a dec_keys
	// of one key) before the clock starts, so the figures are those of the steady state, not of
	// 2*clients TLS handshakes at once.
	var warm sync.WaitGroup
	var warmErr atomic.Pointer[error] // the first failure (errors differ in concrete type)
	for c := 0; c < clients; c++ {
		warm.Go(func() {
			dir := perClient[c][c%len(perClient[c])]
			issued, err := dir.enc.getKey(ctx, dir.slaveID, 1, size)
			if err == nil {
				_, err = dir.dec.getKeyWithIDs(ctx, dir.masterID, []string{issued[0].id})
			}
			if err != nil {
				warmErr.CompareAndSwap(nil, &err)
			}
		})
	}
	warm.Wait()
	if err := warmErr.Load(); err != nil {
		return nil, fmt.Errorf("bench: open the clients' connections: %w", *err)
	}
	cpu := newCPUMeter(ctx, df)
	var keys, errs, mismatches atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	lat := make([][2][]time.Duration, clients)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	// Open loop: request k of client c is due at start + (k*clients + c) * interval, whether or
	// not earlier ones were answered in time; its latency counts from then, so a site that falls
	// behind shows it in the percentiles instead of slowing the clients down (coordinated
	// omission).
	var interval time.Duration
	if load.rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(number) / load.rate)
	}
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dirs := perClient[c]
			dir := dirs[c%len(dirs)]
			for k := 0; ctx.Err() == nil; k++ {
				t0 := time.Now()
				if interval > 0 {
					t0 = start.Add(time.Duration(k*clients+c) * interval)
					if wait := time.Until(t0); wait > 0 {
						select {
						case <-time.After(wait):
						case <-ctx.Done():
							return
						}
					}
				}
				issued, err := dir.enc.getKey(ctx, dir.slaveID, number, size)
				t1 := time.Now()
				if err != nil {
					if ctx.Err() == nil {
						fail(err)
					}
					continue
				}
				ids := make([]string, len(issued))
				for i, k := range issued {
					ids[i] = k.id
				}
				// The fetch runs to completion even when time is up: an issued key is checked.
				fetched, err := dir.dec.getKeyWithIDs(context.Background(), dir.masterID, ids)
				t2 := time.Now()
				lat[c][0] = append(lat[c][0], t1.Sub(t0))
				if err != nil {
					fail(err)
					continue
				}
				lat[c][1] = append(lat[c][1], t2.Sub(t1))
				for i := range issued {
					if i >= len(fetched) || fetched[i].id != issued[i].id || !bytes.Equal(fetched[i].bytes, issued[i].bytes) {
						mismatches.Add(1)
						continue
					}
					keys.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	res := &benchResult{Clients: clients, DurationS: elapsed, SizeBits: size, Number: number, Rate: load.rate,
		Keys: keys.Load(), KeysPerS: float64(keys.Load()) / elapsed, Errors: errs.Load(),
		Mismatches: mismatches.Load(), LatencyMS: map[string]percentile{}}
	res.CPUPerKey = cpu.perKey(context.WithoutCancel(ctx), res.Keys)
	if v := firstErr.Load(); v != nil {
		res.FirstError = v.(string)
	}
	for i, name := range []string{"enc", "dec"} {
		var all []time.Duration
		for c := range lat {
			all = append(all, lat[c][i]...)
		}
		res.LatencyMS[name] = percentiles(all)
	}
	return res, nil
}

// startCPUProfile profiles this process into path until stop is called; a profile of the
// client shows what driving the sites costs, apart from the sites' own work.
func startCPUProfile(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// node returns the site as its node k (modulo the nodes demo.json lists) serves it: that
// node's ETSI 014 URL and gRPC address. A site listing no nodes is its own only node.
func (s demoSite) node(k int) demoSite {
	if len(s.Nodes) == 0 {
		return s
	}
	n := s.Nodes[k%len(s.Nodes)]
	s.ETSI014URL, s.GRPCAddr = n.ETSI014URL, n.GRPCAddr
	return s
}

func percentiles(d []time.Duration) percentile {
	if len(d) == 0 {
		return percentile{}
	}
	slices.Sort(d)
	at := func(q float64) float64 {
		i := min(len(d)-1, int(q*float64(len(d))))
		return float64(d[i].Microseconds()) / 1000
	}
	return percentile{P50: at(0.50), P99: at(0.99), P999: at(0.999)}
}

// cpuMeter measures the CPU a run takes: the bench's own, and the sites' from the
// process_cpu_seconds_total of their metrics endpoints.
type cpuMeter struct {
	client0 time.Duration
	urls    []string  // one per site process
	sites0  []float64 // nil when an endpoint could not be read
}

// siteProcesses lists one metrics endpoint per process of df's sites: the first site's when
// all run in one process, else every node's.
func siteProcesses(df demoFile) []string {
	var urls []string
	for _, s := range df.Sites {
		if len(s.Nodes) == 0 && s.MetricsURL != "" {
			urls = append(urls, s.MetricsURL)
		}
		for _, n := range s.Nodes {
			if n.MetricsURL != "" {
				urls = append(urls, n.MetricsURL)
			}
		}
	}
	if df.OneProcess && len(urls) > 0 {
		return urls[:1]
	}
	return urls
}

func newCPUMeter(ctx context.Context, df demoFile) *cpuMeter {
	m := &cpuMeter{urls: siteProcesses(df)}
	m.sites0 = m.readSites(ctx)
	m.client0 = cputime.Process()
	return m
}

func (m *cpuMeter) readSites(ctx context.Context) []float64 {
	if len(m.urls) == 0 {
		return nil
	}
	out := make([]float64, len(m.urls))
	for i, u := range m.urls {
		v, err := processCPU(ctx, u)
		if err != nil {
			return nil
		}
		out[i] = v
	}
	return out
}

func (m *cpuMeter) perKey(ctx context.Context, keys int64) cpuPerKey {
	client := cputime.Process() - m.client0
	sites1 := m.readSites(ctx)
	if keys <= 0 {
		return cpuPerKey{}
	}
	res := cpuPerKey{Client: float64(client.Microseconds()) / float64(keys)}
	if m.sites0 != nil && sites1 != nil {
		var s float64
		for i := range sites1 {
			s += sites1[i] - m.sites0[i]
		}
		us := s * 1e6 / float64(keys)
		res.Sites = &us
	}
	return res
}

// processCPU reads process_cpu_seconds_total from a Prometheus text-format endpoint.
func processCPU(ctx context.Context, url string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "process_cpu_seconds_total "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%s: %w", url, err)
	}
	return 0, fmt.Errorf("%s: no process_cpu_seconds_total", url)
}
