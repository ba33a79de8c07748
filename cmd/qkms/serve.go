package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/qkms/qkms/site"
)

func newServeCmd() *cobra.Command {
	var path string
	var bootstrap bool
	cmd := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "run one node of one site",
		Long: `Run one node of one site (KME) as configured in a YAML file; README.md documents every
field. The master key comes from master_key_file or the environment variable QKMS_MASTER_KEY.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return fmt.Errorf("--config is required")
			}
			cfg, err := site.LoadConfig(path)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("bootstrap") {
				cfg.Raft.Bootstrap = bootstrap
			}
			n, err := site.Open(cfg, slog.Default())
			if err != nil {
				return err
			}
			slog.Info("qkms node serving", "kme", cfg.KMEID, "node", cfg.NodeID,
				"etsi014", n.ETSI014Addr(), "peer", n.PeerAddr())
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
			<-sig
			slog.Info("shutting down")
			return n.Close()
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "YAML config file")
	cmd.Flags().BoolVar(&bootstrap, "bootstrap", false, "form a new raft cluster with this node (overrides raft.bootstrap)")
	return cmd
}
