package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// STUB: owned by the Cascade helper, who replaces this file.
func newReconcileCmd() *cobra.Command {
	return &cobra.Command{Use: "reconcile", Short: "Cascade alone on random keys",
		RunE: func(*cobra.Command, []string) error { return errors.New("not implemented") }}
}
