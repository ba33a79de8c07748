// Command qkms is the qkms key-management server: serve one node of a site, run a two-site
// demo network, create a development PKI, and benchmark a running network.
package main

import (
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// gcPercent is the garbage collector's target when GOGC is not set. A node's live heap is
// small (tens of MB; the key store is a memory-mapped file) and every request allocates, so
// with Go's default of 100 the collector runs often: at 400 a verified key costs about a
// quarter less CPU (BenchmarkDeliver, docs/benchmarks.md) for a heap that peaks at about five
// times the live data instead of twice. GOGC overrides it.
const gcPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
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
