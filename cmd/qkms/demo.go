package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pki"
	"github.com/qkms/qkms/qkdsim"
	"github.com/qkms/qkms/site"
)

// demoFile is DIR/demo.json: where everything of the demo network is, for people and for
// `qkms bench`.
type demoFile struct {
	CA    string     `json:"ca"`
	Sites []demoSite `json:"sites"`
	// OneProcess says every node listed runs in one process (qkms demo), so any one metrics
	// endpoint reports the CPU of all of them (`qkms bench` reads it).
	OneProcess bool `json:"one_process,omitempty"`
}

type demoSite struct {
	KMEID      string `json:"kme_id"`
	ETSI014URL string `json:"etsi014_url"`
	PeerAddr   string `json:"peer_addr"`
	AdminAddr  string `json:"admin_addr"`
	// GRPCAddr is the gRPC KeyDelivery address (host:port, mutual TLS, health and reflection).
	GRPCAddr string `json:"grpc_addr,omitempty"`
	// MetricsURL is the Prometheus endpoint (plain HTTP, loopback).
	MetricsURL string     `json:"metrics_url,omitempty"`
	Nodes      []demoNode `json:"nodes"`
	AdminCert  string     `json:"admin_cert,omitempty"`
	AdminKey   string     `json:"admin_key,omitempty"`
	SAEs       []demoSAE  `json:"saes"`
}

// demoNode is one node of a site; a site's own fields repeat its first node's.
type demoNode struct {
	NodeID     string `json:"node_id"`
	ETSI014URL string `json:"etsi014_url"`
	PeerAddr   string `json:"peer_addr"`
	AdminAddr  string `json:"admin_addr"`
	RaftAddr   string `json:"raft_addr"`
	GRPCAddr   string `json:"grpc_addr,omitempty"`
	MetricsURL string `json:"metrics_url,omitempty"`
}

type demoSAE struct {
	SAEID string `json:"sae_id"`
	Cert  string `json:"cert"`
	Key   string `json:"key"`
}

func newDemoCmd() *cobra.Command {
	var (
		dir      string
		preset   string
		distance float64
		fast     bool
		seed     uint64
		nodes    int
		durable  string
		policy   string
		maxKeys  int
	)
	cmd := &cobra.Command{
		Use:   "demo --dir DIR",
		Short: "run a two-site QKD network on loopback (KME-A and KME-B joined by a simulated link)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("--dir is required")
			}
			if maxKeys < 0 {
				return fmt.Errorf("--max-keys must be 0 (the default) or positive, got %d", maxKeys)
			}
			if nodes != 1 && nodes != 3 && nodes != 5 {
				return fmt.Errorf("--nodes must be 1, 3 or 5 (a raft cluster of an odd size), got %d", nodes)
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			params, err := qkdsim.Preset(preset)
			if err != nil {
				return err
			}
			linkCfg := qkdsim.LinkConfig{Name: "A-B", Params: params, Distance: distance, Seed: seed, Paced: !fast}
			pair, err := site.StartPair(site.PairConfig{
				Dir:  abs,
				KMEs: [2]string{"KME-A", "KME-B"},
				SAEs: [2][]string{{"SAE-A1", "SAE-A2"}, {"SAE-B1", "SAE-B2"}},
				Link: &linkCfg, Logger: slog.Default(), NodesPerSite: nodes, Durability: durable,
				DefaultPolicy: policy, Limits: kms.Limits{MaxKeyCount: maxKeys},
			})
			if err != nil {
				return err
			}
			defer pair.Close()

			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			slog.Info("waiting for both sites to hold verified key", "preset", preset, "distance_km", distance, "fast", fast)
			if err := pair.WaitForKey(ctx, 4096); err != nil {
				return err
			}
			df := demoFileOf(pair)
			b, _ := json.MarshalIndent(df, "", "  ")
			if err := os.WriteFile(filepath.Join(abs, "demo.json"), append(b, '\n'), 0o644); err != nil {
				return err
			}
			printHowTo(cmd, abs, df)
			<-ctx.Done()
			slog.Info("stopping demo")
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for certificates, state and demo.json")
	cmd.Flags().StringVar(&preset, "preset", "apd", "link preset: gys, apd, snspd")
	cmd.Flags().Float64Var(&distance, "distance", 25, "fibre length in km")
	cmd.Flags().BoolVar(&fast, "fast", false, "fill the pools as fast as the simulator runs instead of at the physical rate")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "simulator seed")
	cmd.Flags().IntVar(&maxKeys, "max-keys", 0, "keys of the default size each site holds per link (max_key_count; 0: the default, 100000); the link pauses while a pool is full and resumes below three quarters")
	cmd.Flags().IntVar(&nodes, "nodes", 1, "nodes per site (a raft cluster of 1, 3 or 5)")
	cmd.Flags().StringVar(&policy, "policy", site.PolicyQKDOnly, "key policy of every SAE pair: qkd-only, hybrid or pqc-fallback")
	cmd.Flags().StringVar(&durable, "durability", "fsync", "when writes are acknowledged: fsync (survives power loss) or os (survives process crashes)")
	return cmd
}

// demoFileOf lists the endpoints and certificates of a running pair, as demo.json holds them.
func demoFileOf(pair *site.Pair) demoFile {
	df := demoFile{CA: pair.Layout.CACert, OneProcess: true}
	for i, n := range pair.Sites {
		ds := demoSite{KMEID: n.KMEID(), ETSI014URL: "https://" + n.ETSI014Addr(), PeerAddr: n.PeerAddr(), AdminAddr: n.AdminAddr()}
		ds.GRPCAddr, ds.MetricsURL = n.GRPCAddr(), metricsURL(n)
		for _, m := range pair.Nodes[i] {
			ds.Nodes = append(ds.Nodes, demoNode{NodeID: m.NodeID(), ETSI014URL: "https://" + m.ETSI014Addr(),
				PeerAddr: m.PeerAddr(), AdminAddr: m.AdminAddr(), RaftAddr: m.RaftAddr(),
				GRPCAddr: m.GRPCAddr(), MetricsURL: metricsURL(m)})
		}
		for _, s := range pair.SAEs[i] {
			e, _ := pair.Layout.Find(s)
			ds.SAEs = append(ds.SAEs, demoSAE{SAEID: s, Cert: e.Cert, Key: e.Key})
		}
		if e, ok := pair.Layout.Find(pki.AdminID(n.KMEID())); ok {
			ds.AdminCert, ds.AdminKey = e.Cert, e.Key
		}
		df.Sites = append(df.Sites, ds)
	}
	return df
}

func printHowTo(cmd *cobra.Command, dir string, df demoFile) {
	a, b := df.Sites[0], df.Sites[1]
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "\nqkms demo is running; %s/demo.json lists every endpoint and certificate.\n\n", dir)
	fmt.Fprintf(w, "Get a key at %s for %s (as %s):\n", a.KMEID, b.SAEs[0].SAEID, a.SAEs[0].SAEID)
	fmt.Fprintf(w, "  curl --cacert %s --cert %s --key %s \\\n    %s/api/v1/keys/%s/enc_keys\n\n",
		df.CA, a.SAEs[0].Cert, a.SAEs[0].Key, a.ETSI014URL, b.SAEs[0].SAEID)
	fmt.Fprintf(w, "Get the same key at %s (as %s), with the key_ID from the first answer:\n", b.KMEID, b.SAEs[0].SAEID)
	fmt.Fprintf(w, "  curl --cacert %s --cert %s --key %s \\\n    '%s/api/v1/keys/%s/dec_keys?key_ID=KEY_ID'\n\n",
		df.CA, b.SAEs[0].Cert, b.SAEs[0].Key, b.ETSI014URL, a.SAEs[0].SAEID)
	fmt.Fprintf(w, "The same over gRPC (qkms.v1.KeyDelivery; reflection is on):\n")
	fmt.Fprintf(w, "  grpcurl -cacert %s -cert %s -key %s \\\n    -d '{\"slave_sae_id\":\"%s\"}' %s qkms.v1.KeyDelivery/GetKey\n\n",
		df.CA, a.SAEs[0].Cert, a.SAEs[0].Key, b.SAEs[0].SAEID, a.GRPCAddr)
	fmt.Fprintf(w, "Metrics:  curl %s\n\n", a.MetricsURL)
	fmt.Fprintf(w, "Benchmark it:  go run ./cmd/qkms bench --demo %s/demo.json\nStop with Ctrl-C.\n", dir)
}

func metricsURL(n *site.Node) string {
	if n.MetricsAddr() == "" {
		return ""
	}
	return "http://" + n.MetricsAddr() + "/metrics"
}
