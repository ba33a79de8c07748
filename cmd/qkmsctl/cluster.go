package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/qkms/qkms/api/keyspb"
)

// newClusterCmd is the site's raft cluster: members, leader and term, membership changes,
// snapshots.
func newClusterCmd(o *options) *cobra.Command {
	c := &cobra.Command{Use: "cluster", Short: "the site's raft cluster: status, join, remove, snapshot"}
	c.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "members, leader, term and indexes of the site's cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, func(ctx context.Context, a keyspb.AdminClient) error {
				r, err := a.ClusterStatus(ctx, &keyspb.ClusterStatusRequest{})
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				if o.json {
					return printJSON(w, r)
				}
				leader := r.LeaderId
				if leader == "" {
					leader = "(none: no quorum?)"
				}
				fields(w, "KME", r.KmeId, "Leader", leader, "Term", strconv.FormatUint(r.Term, 10),
					"Commit index", strconv.FormatUint(r.CommitIndex, 10), "Applied index", strconv.FormatUint(r.AppliedIndex, 10))
				fmt.Fprintln(w)
				t := newTable(w, "NODE", "RAFT ADDRESS", "VOTER", "LEADER")
				for _, m := range r.Members {
					t.row(m.Id, m.Address, yesNo(m.Voter), yesNo(m.Leader))
				}
				return t.flush()
			})
		},
	})

	var id, raftAddr string
	join := &cobra.Command{
		Use:   "join --id NODE_ID --raft-addr HOST:PORT",
		Short: "add a node to the site's cluster (the node must be running with the site's KME certificate)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, func(ctx context.Context, a keyspb.AdminClient) error {
				r, err := a.JoinNode(ctx, &keyspb.JoinNodeRequest{NodeId: id, RaftAddress: raftAddr})
				if err != nil {
					return err
				}
				if o.json {
					return printJSON(cmd.OutOrStdout(), r)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "node %s (%s) joined the cluster\n", id, raftAddr)
				return err
			})
		},
	}
	join.Flags().StringVar(&id, "id", "", "node ID")
	join.Flags().StringVar(&raftAddr, "raft-addr", "", "the node's raft address, HOST:PORT")
	join.MarkFlagRequired("id")
	join.MarkFlagRequired("raft-addr")

	var removeID string
	remove := &cobra.Command{
		Use:   "remove --id NODE_ID",
		Short: "remove a node from the site's cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, func(ctx context.Context, a keyspb.AdminClient) error {
				r, err := a.RemoveNode(ctx, &keyspb.RemoveNodeRequest{NodeId: removeID})
				if err != nil {
					return err
				}
				if o.json {
					return printJSON(cmd.OutOrStdout(), r)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "node %s removed from the cluster\n", removeID)
				return err
			})
		},
	}
	remove.Flags().StringVar(&removeID, "id", "", "node ID")
	remove.MarkFlagRequired("id")
	remove.RegisterFlagCompletionFunc("id", func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		var ids []string
		o.run(cmd, func(ctx context.Context, a keyspb.AdminClient) error {
			r, err := a.ClusterStatus(ctx, &keyspb.ClusterStatusRequest{})
			for _, m := range r.GetMembers() {
				ids = append(ids, m.Id)
			}
			return err
		})
		return ids, cobra.ShellCompDirectiveNoFileComp
	})

	c.AddCommand(join, remove, &cobra.Command{
		Use:   "snapshot",
		Short: "make the node take a raft snapshot now (compacts its log)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd, func(ctx context.Context, a keyspb.AdminClient) error {
				r, err := a.Snapshot(ctx, &keyspb.SnapshotRequest{})
				if err != nil {
					return err
				}
				if o.json {
					return printJSON(cmd.OutOrStdout(), r)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "snapshot taken at index %d\n", r.Index)
				return err
			})
		},
	})
	return c
}
