package site

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/qkms/qkms/api/keyspb"
)

// joinSite asks the configured members, in turn, to add this node to the site until one does
// or the node is already a member. The call is authenticated by this node's KME certificate.
func (n *Node) joinSite() {
	backoff := 500 * time.Millisecond
	for n.ctx.Err() == nil {
		if n.isMember() {
			return
		}
		for _, addr := range n.cfg.Raft.Join {
			if addr == n.cfg.Listen.Admin || addr == n.AdminAddr() {
				continue // asking itself cannot help
			}
			if err := n.askToJoin(addr); err != nil {
				n.log.Warn("join the site", "via", addr, "err", err)
				continue
			}
			n.log.Info("joined the site", "via", addr)
			return
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (n *Node) isMember() bool {
	members, err := n.rn.Members()
	if err != nil {
		return false
	}
	for _, m := range members {
		if m.ID == n.cfg.NodeID {
			return true
		}
	}
	return false
}

func (n *Node) askToJoin(addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(n.clientTLS)))
	if err != nil {
		return err
	}
	defer conn.Close()
	// Short: a node that is not a member yet, or has no leader, should not hold up the next.
	ctx, cancel := context.WithTimeout(n.ctx, 3*time.Second)
	defer cancel()
	_, err = keyspb.NewAdminClient(conn).JoinNode(ctx, &keyspb.JoinNodeRequest{NodeId: n.cfg.NodeID, RaftAddress: n.cfg.Raft.Advertise})
	return err
}
