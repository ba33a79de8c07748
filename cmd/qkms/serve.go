package main

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/qkms/qkms/site"
)

// serveFlags are the options most often set per node; each overrides the config file's field
// of the same name (README.md, "Configuration of qkms serve").
type serveFlags struct {
	kmeID, nodeID, dataDir, masterKeyFile, durability string
	tlsCA, tlsCert, tlsKey                            string
	etsi014, grpc, peer, raft, admin, metrics         string
	advertise                                         string
	join                                              []string
	bootstrap                                         bool
	config                                            string
}

func newServeCmd() *cobra.Command { return serveCmd(new(serveFlags)) }

func serveCmd(f *serveFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve [--config FILE] [flags]",
		Short: "run one node of one site",
		Long: `Run one node of one site (KME), configured by a YAML file, flags or both (a flag overrides
the file's field); README.md documents every field. The master key comes from master_key_file
or the environment variable QKMS_MASTER_KEY.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.load(cmd)
			if err != nil {
				return err
			}
			n, err := site.Open(cfg, slog.Default())
			if err != nil {
				return err
			}
			slog.Info("qkms node serving", "kme", cfg.KMEID, "node", cfg.NodeID,
				"etsi014", n.ETSI014Addr(), "grpc", n.GRPCAddr(), "peer", n.PeerAddr(), "admin", n.AdminAddr())
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
			<-sig
			slog.Info("shutting down")
			return n.Close()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "", "YAML config file")
	fl.StringVar(&f.kmeID, "kme-id", "", "this site's KME ID (kme_id)")
	fl.StringVar(&f.nodeID, "node-id", "", "this node's ID in the site's raft cluster (node_id)")
	fl.StringVar(&f.dataDir, "data-dir", "", "state, raft log and snapshots (data_dir)")
	fl.StringVar(&f.masterKeyFile, "master-key-file", "", "the site's master key, 64 hex chars, mode 0600 (master_key_file)")
	fl.StringVar(&f.durability, "durability", "", "fsync or os (durability)")
	fl.StringVar(&f.tlsCA, "tls-ca", "", "CA certificate, PEM (tls.ca)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "this site's KME certificate, PEM (tls.cert)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "its private key, PEM (tls.key)")
	fl.StringVar(&f.etsi014, "listen-etsi014", "", "ETSI GS QKD 014 listener (listen.etsi014)")
	fl.StringVar(&f.grpc, "listen-grpc", "", "gRPC KeyDelivery listener (listen.grpc)")
	fl.StringVar(&f.peer, "listen-peer", "", "peer-channel listener (listen.peer)")
	fl.StringVar(&f.raft, "listen-raft", "", "raft listener (listen.raft)")
	fl.StringVar(&f.admin, "listen-admin", "", "admin gRPC listener (listen.admin)")
	fl.StringVar(&f.metrics, "listen-metrics", "", "Prometheus /metrics listener (listen.metrics)")
	fl.StringVar(&f.advertise, "raft-advertise", "", "raft address other nodes dial (raft.advertise)")
	fl.StringSliceVar(&f.join, "raft-join", nil, "admin addresses of existing nodes to join through (raft.join)")
	fl.BoolVar(&f.bootstrap, "bootstrap", false, "form a new raft cluster with this node (raft.bootstrap)")
	return cmd
}

// load reads the config file, if any, and lays the flags the user set over it.
func (f *serveFlags) load(cmd *cobra.Command) (site.Config, error) {
	var cfg site.Config
	if f.config != "" {
		var err error
		if cfg, err = site.LoadConfig(f.config); err != nil {
			return cfg, err
		}
	}
	f.apply(cmd, &cfg)
	return cfg, nil
}

// apply copies the flags the user set over the configuration.
func (f *serveFlags) apply(cmd *cobra.Command, cfg *site.Config) {
	set := func(name string, dst *string, v string) {
		if cmd.Flags().Changed(name) {
			*dst = v
		}
	}
	set("kme-id", &cfg.KMEID, f.kmeID)
	set("node-id", &cfg.NodeID, f.nodeID)
	set("data-dir", &cfg.DataDir, f.dataDir)
	set("master-key-file", &cfg.MasterKeyFile, f.masterKeyFile)
	set("durability", &cfg.Durability, f.durability)
	set("tls-ca", &cfg.TLS.CA, f.tlsCA)
	set("tls-cert", &cfg.TLS.Cert, f.tlsCert)
	set("tls-key", &cfg.TLS.Key, f.tlsKey)
	set("listen-etsi014", &cfg.Listen.ETSI014, f.etsi014)
	set("listen-grpc", &cfg.Listen.GRPC, f.grpc)
	set("listen-peer", &cfg.Listen.Peer, f.peer)
	set("listen-raft", &cfg.Listen.Raft, f.raft)
	set("listen-admin", &cfg.Listen.Admin, f.admin)
	set("listen-metrics", &cfg.Listen.Metrics, f.metrics)
	set("raft-advertise", &cfg.Raft.Advertise, f.advertise)
	if cmd.Flags().Changed("raft-join") {
		cfg.Raft.Join = f.join
	}
	if cmd.Flags().Changed("bootstrap") {
		cfg.Raft.Bootstrap = f.bootstrap
	}
}
