// Command qkdsim runs the QKD link simulator: run, sweep, reconcile, amplify.
package main

import (
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{Use: "qkdsim", Short: "decoy-state BB84 link simulator with real post-processing", SilenceUsage: true}
	root.AddCommand(newRunCmd(), newSweepCmd(), newReconcileCmd(), newAmplifyCmd(), newServeCmd())
	if err := root.Execute(); err != nil {
		os.Exit(1)
	}
}
