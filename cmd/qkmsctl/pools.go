package main

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/qkms/qkms/api/keyspb"
)

// newPoolsCmd lists the site's key pools, one per peer site.
func newPoolsCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "pools",
		Short: "key pools per peer site: available, pending, reserved, stored key count",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, func(ctx context.Context, a keyspb.AdminClient) error {
				r, err := a.ListPools(ctx, &keyspb.ListPoolsRequest{})
				if err != nil {
					return err
				}
				if o.json {
					return printJSON(cmd.OutOrStdout(), r)
				}
				t := newTable(cmd.OutOrStdout(), "PEER", "AVAILABLE", "PENDING", "RESERVED", "STORED KEYS")
				for _, p := range r.Pools {
					t.row(p.PeerKmeId, bytesIEC(p.AvailableBytes), bytesIEC(p.PendingBytes), bytesIEC(p.ReservedBytes),
						strconv.FormatInt(p.StoredKeyCount, 10))
				}
				return t.flush()
			})
		},
	}
}

// newLinksCmd lists the QKD links, and will pause and resume them (issue 6).
func newLinksCmd(o *options) *cobra.Command {
	c := &cobra.Command{
		Use:   "links",
		Short: "QKD links per peer site: source, up, QBER, key rate, last block, discarded blocks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, func(ctx context.Context, a keyspb.AdminClient) error {
				r, err := a.ListLinks(ctx, &keyspb.ListLinksRequest{})
				if err != nil {
					return err
				}
				if o.json {
					return printJSON(cmd.OutOrStdout(), r)
				}
				t := newTable(cmd.OutOrStdout(), "PEER", "SOURCE", "UP", "QBER", "KEY RATE", "LAST BLOCK", "DISCARDED")
				for _, l := range r.Links {
					t.row(l.PeerKmeId, l.Source, yesNo(l.Up), fmt.Sprintf("%.2f%%", l.Qber*100), rate(l.KeyRateBps),
						ts(l.LastBlock), strconv.FormatInt(l.BlocksDiscarded, 10))
				}
				return t.flush()
			})
		},
	}
	for _, verb := range []string{"pause", "resume"} {
		var peer, reason string
		sub := &cobra.Command{
			Use:   verb + " --peer KME_ID",
			Short: verb + " issuing QKD key on the link with a peer site (pqc-fallback pairs get pqc keys while paused)",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return o.run(cmd, func(ctx context.Context, a keyspb.AdminClient) error {
					req := &keyspb.LinkRequest{PeerKmeId: peer, Reason: reason}
					var err error
					if verb == "pause" {
						_, err = a.PauseLink(ctx, req)
					} else {
						_, err = a.ResumeLink(ctx, req)
					}
					if err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "link with %s %sd\n", peer, verb)
					return nil
				})
			},
		}
		sub.Flags().StringVar(&reason, "reason", "", "reason, recorded in the audit trail")
		sub.Flags().StringVar(&peer, "peer", "", "KME ID of the peer site")
		sub.MarkFlagRequired("peer")
		sub.RegisterFlagCompletionFunc("peer", o.completePeers)
		c.AddCommand(sub)
	}
	return c
}

// completePeers completes --peer with the peer sites of the site's pools.
func (o *options) completePeers(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	var peers []string
	o.run(cmd, func(ctx context.Context, a keyspb.AdminClient) error {
		r, err := a.ListPools(ctx, &keyspb.ListPoolsRequest{})
		for _, p := range r.GetPools() {
			peers = append(peers, p.PeerKmeId)
		}
		return err
	})
	return peers, cobra.ShellCompDirectiveNoFileComp
}

// newSAEsCmd lists the SAE registry: which KME serves which SAE.
func newSAEsCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "saes",
		Short: "the SAE registry: every SAE and the KME that serves it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, func(ctx context.Context, a keyspb.AdminClient) error {
				r, err := a.ListSAEs(ctx, &keyspb.ListSAEsRequest{})
				if err != nil {
					return err
				}
				// The server lists a map; sort so output is stable.
				slices.SortFunc(r.Saes, func(x, y *keyspb.SAE) int {
					return strings.Compare(x.KmeId+"\x00"+x.SaeId, y.KmeId+"\x00"+y.SaeId)
				})
				if o.json {
					return printJSON(cmd.OutOrStdout(), r)
				}
				t := newTable(cmd.OutOrStdout(), "SAE", "KME")
				for _, s := range r.Saes {
					t.row(s.SaeId, s.KmeId)
				}
				return t.flush()
			})
		},
	}
}

// newKeysCmd shows a key's metadata. Admin never returns key bytes, so neither can this.
func newKeysCmd(o *options) *cobra.Command {
	c := &cobra.Command{Use: "keys", Short: "key metadata (never key bytes)"}
	c.AddCommand(&cobra.Command{
		Use:   "show KEY_ID",
		Short: "who a key was issued to and fetched by, its size, provenance, times and state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, func(ctx context.Context, a keyspb.AdminClient) error {
				k, err := a.GetKeyInfo(ctx, &keyspb.GetKeyInfoRequest{KeyId: args[0]})
				if err != nil {
					return err
				}
				if o.json {
					return printJSON(cmd.OutOrStdout(), k)
				}
				prov := strings.ToLower(strings.TrimPrefix(k.Provenance.String(), "PROVENANCE_"))
				return fields(cmd.OutOrStdout(),
					"Key ID", k.KeyId, "State", k.State, "Issued by", k.OwnerKmeId, "Peer", k.PeerKmeId,
					"Master SAE", k.MasterSaeId, "Slave SAEs", strings.Join(k.SlaveSaeIds, ", "),
					"Fetched by", orDash(strings.Join(k.FetchedBy, ", ")), "Bits", strconv.Itoa(int(k.Bits)),
					"Provenance", prov, "Issued", ts(k.Issued), "Expires", ts(k.Expires),
					"Pushed to peer", yesNo(k.Pushed))
			})
		},
	})
	return c
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// newZeroizeCmd erases a pool. It asks first, since the key cannot be recovered.
func newZeroizeCmd(o *options) *cobra.Command {
	var peer, reason string
	var yes bool
	c := &cobra.Command{
		Use:   "zeroize --peer KME_ID",
		Short: "erase every block and every unfetched key of the pool for a peer site (irreversible)",
		Long: `zeroize erases this site's pool for a peer site: the material of every block is destroyed,
every key of the pool not yet fetched here is voided (dec_keys for it fails), and the pool's
counters drop to zero. It is recorded in the audit trail with your certificate and --reason.
The peer site keeps its own copy; zeroize it there as well to retire the link's key on both sides.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !yes {
				fmt.Fprintf(cmd.ErrOrStderr(), "Erase every key of the pool for %s at this site? This cannot be undone. Type the peer's KME ID to confirm: ", peer)
				line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if strings.TrimSpace(line) != peer {
					return fmt.Errorf("zeroize not confirmed; nothing was erased (type %s at the prompt, or pass --yes)", peer)
				}
			}
			return o.run(cmd, func(ctx context.Context, a keyspb.AdminClient) error {
				r, err := a.Zeroize(ctx, &keyspb.ZeroizeRequest{PeerKmeId: peer, Reason: reason})
				if err != nil {
					return err
				}
				if o.json {
					return printJSON(cmd.OutOrStdout(), r)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "pool for %s zeroized: %d blocks erased, %d keys voided\n", peer, r.BlocksErased, r.KeysVoided)
				return err
			})
		},
	}
	c.Flags().StringVar(&peer, "peer", "", "KME ID of the peer site whose pool to erase")
	c.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit trail)")
	c.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	c.MarkFlagRequired("peer")
	c.RegisterFlagCompletionFunc("peer", o.completePeers)
	return c
}
