package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/qkms/qkms/pki"
)

// newCertsCmd is `qkms certs`: write a development PKI (see package pki for the identity
// convention) for a set of KMEs and the SAEs each serves.
func newCertsCmd() *cobra.Command {
	var (
		dir         string
		kmeSpecs    []string
		hosts       []string
		singleAdmin bool
	)
	cmd := &cobra.Command{
		Use:   "certs --dir DIR --kme KME-A=SAE-A1,SAE-A2 [--kme KME-B=SAE-B1] [--host NAME]",
		Short: "create a development CA and mutual-TLS certificates for KMEs, SAEs and admins",
		Long: `certs writes a development PKI into DIR: ca.pem and ca-key.pem (reused if present), and
<ID>.pem with <ID>-key.pem (mode 0600) for every KME, every SAE and an administrator per site
(admin-<KME_ID>). The certificate Subject CN is the entity ID (the SAE_ID or KME_ID) and the
Subject OU its role: sae, kme or admin. KME certificates are server and client certificates
with the SANs 127.0.0.1, ::1, localhost and every --host. Not for production: the CA key sits
beside the certificates.`,
		Example: `  qkms certs --dir ./pki --kme KME-A=SAE-A1,SAE-A2 --kme KME-B=SAE-B1,SAE-B2
  curl --cacert pki/ca.pem --cert pki/SAE-A1.pem --key pki/SAE-A1-key.pem \
    https://localhost:8443/api/v1/keys/SAE-B1/status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("certs: --dir is required")
			}
			kmes, err := parseKMESpecs(kmeSpecs)
			if err != nil {
				return err
			}
			l, err := pki.WriteDevPKI(dir, kmes, !singleAdmin, hosts...)
			if err != nil {
				return err
			}
			printLayout(cmd.OutOrStdout(), l)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory to write the certificates and keys into (created if missing)")
	f.StringArrayVar(&kmeSpecs, "kme", nil, "a KME and the SAEs it serves, as KME_ID=SAE_ID,SAE_ID (repeatable)")
	f.StringArrayVar(&hosts, "host", nil, "extra DNS name or IP address for the KME certificates (repeatable)")
	f.BoolVar(&singleAdmin, "single-admin", false, "write one admin certificate named \"admin\" instead of one per site")
	return cmd
}

// parseKMESpecs reads --kme values "KME_ID=SAE_ID,SAE_ID" (the SAE list may be empty).
func parseKMESpecs(specs []string) (map[string][]string, error) {
	if len(specs) == 0 {
		return nil, fmt.Errorf("certs: give at least one --kme KME_ID=SAE_ID,...")
	}
	kmes := map[string][]string{}
	for _, s := range specs {
		kme, saes, _ := strings.Cut(s, "=")
		kme = strings.TrimSpace(kme)
		if err := pki.CheckID(kme); err != nil {
			return nil, fmt.Errorf("certs: --kme %q: KME ID: %w", s, err)
		}
		if _, dup := kmes[kme]; dup {
			return nil, fmt.Errorf("certs: --kme %q: KME %s given twice", s, kme)
		}
		kmes[kme] = []string{}
		for _, sae := range strings.Split(saes, ",") {
			if sae = strings.TrimSpace(sae); sae != "" {
				kmes[kme] = append(kmes[kme], sae)
			}
		}
	}
	return kmes, nil
}

func printLayout(w io.Writer, l pki.Layout) {
	fmt.Fprintf(w, "development PKI in %s\n", l.Dir)
	fmt.Fprintf(w, "  CA          %s (key %s)\n", l.CACert, l.CAKey)
	ents := append([]pki.Entity(nil), l.Entities...)
	sort.SliceStable(ents, func(i, j int) bool { return ents[i].KME < ents[j].KME })
	for _, e := range ents {
		fmt.Fprintf(w, "  %-5s %-16s %s (key %s)", e.Role, e.ID, e.Cert, e.Key)
		if e.Role != pki.RoleKME && e.KME != "" {
			fmt.Fprintf(w, " served by %s", e.KME)
		}
		fmt.Fprintln(w)
	}
}
