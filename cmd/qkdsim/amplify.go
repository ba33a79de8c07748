package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// STUB: owned by the privacy-amplification helper, who replaces this file.
func newAmplifyCmd() *cobra.Command {
	return &cobra.Command{Use: "amplify", Short: "privacy amplification alone",
		RunE: func(*cobra.Command, []string) error { return errors.New("not implemented") }}
}
