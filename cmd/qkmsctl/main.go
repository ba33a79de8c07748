// Command qkmsctl is the operators' CLI of qkms (issue 5): it talks to the Admin gRPC service
// of any node of a site over mutual TLS with an admin certificate (Subject OU "admin") and
// shows the cluster, pools, links, SAEs, key metadata (never key bytes) and the audit trail,
// and it zeroizes pools, adds and removes nodes, triggers snapshots, and verifies audit exports
// offline.
//
// Output is a table by default and JSON with --json. Connection settings come from flags
// (--addr, --ca, --cert, --key), from a demo network (--demo DIR/demo.json --site KME-A),
// from the environment (QKMS_ADDR, QKMS_CA, QKMS_CERT, QKMS_KEY) or from a YAML config file
// (--config), in that order of precedence. --addr may name several nodes of a site; they are
// tried in turn.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

func main() {
	root := newRootCmd(os.Stdin, os.Stdout, os.Stderr)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "qkmsctl: "+oneLine(err))
		os.Exit(1)
	}
}

// oneLine keeps an error to the single line the user reads.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// errNotSupported marks commands whose server side has not landed yet.
var errNotSupported = errors.New("not supported yet")

// newRootCmd builds the command tree. Tests run it in-process with their own streams.
func newRootCmd(in io.Reader, out, errOut io.Writer) *cobra.Command {
	root, _ := newRoot(in, out, errOut)
	return root
}

// newRoot builds the command tree and returns its global options.
func newRoot(in io.Reader, out, errOut io.Writer) (*cobra.Command, *options) {
	o := &options{}
	root := &cobra.Command{
		Use:   "qkmsctl",
		Short: "administer a qkms site: cluster, pools, links, keys, audit",
		Long: `qkmsctl administers a qkms site through its Admin gRPC service (mutual TLS, admin certificate).

Connection settings, first found wins:
  flags        --addr HOST:PORT[,HOST:PORT...] --ca FILE --cert FILE --key FILE
  demo         --demo DIR/demo.json --site KME-A   (addresses and admin certificate of a demo site)
  environment  QKMS_ADDR, QKMS_CA, QKMS_CERT, QKMS_KEY
  config file  --config FILE (YAML: addr, ca, cert, key, demo, site)`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errOut)
	o.register(root)
	root.AddCommand(newClusterCmd(o), newPoolsCmd(o), newLinksCmd(o), newSAEsCmd(o), newKeysCmd(o),
		newZeroizeCmd(o), newAuditCmd(o))
	return root, o
}
