// Command qkms is the qkms key-management server: serve one node of a site, run a two-site
// demo network, create a development PKI, and benchmark a running network.
package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:          "qkms",
		Short:        "key management for QKD networks (ETSI GS QKD 014)",
		SilenceUsage: true,
	}
	var level string
	root.PersistentFlags().StringVar(&level, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		var l slog.Level
		if err := l.UnmarshalText([]byte(level)); err != nil {
			return err
		}
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})))
		return nil
	}
	root.AddCommand(newServeCmd(), newDemoCmd(), newCertsCmd(), newBenchCmd(), newDeployConfigCmd())
	if err := root.Execute(); err != nil {
		os.Exit(1)
	}
}
