package site

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/qkms/qkms/kms"
)

// Key policies per SAE pair (issue 6, DESIGN.md invariant 6): which provenance a pair's keys
// may have.
const (
	// PolicyQKDOnly: QKD key only; 503 when the pool is empty or the link paused.
	PolicyQKDOnly = "qkd-only"
	// PolicyHybrid: every key is pq.HybridKey over its QKD bytes and the current PQ epoch.
	PolicyHybrid = "hybrid"
	// PolicyPQCFallback: QKD key while there is some; pq.PQCKey from the current epoch when the
	// pool cannot serve the request or the link is paused; QKD again once it recovers.
	PolicyPQCFallback = "pqc-fallback"
)

// PolicyConfig sets the policy of one master -> slave SAE pair.
type PolicyConfig struct {
	Master string `yaml:"master"`
	Slave  string `yaml:"slave"`
	Mode   string `yaml:"mode"`
}

// PQRefreshConfig says when the initiating site replaces a PQ epoch (pq.RefreshPolicy).
type PQRefreshConfig struct {
	Keys  uint64        `yaml:"keys"`  // after this many keys (default 65,536)
	Every time.Duration `yaml:"every"` // or this long (default 5m)
}

func checkPolicy(mode string) error {
	switch mode {
	case PolicyQKDOnly, PolicyHybrid, PolicyPQCFallback:
		return nil
	}
	return fmt.Errorf("site: config: policy %q: want %s, %s or %s", mode, PolicyQKDOnly, PolicyHybrid, PolicyPQCFallback)
}

// policyFor is the policy of the pair master -> slave.
func (n *Node) policyFor(master, slave string) string {
	for _, p := range n.cfg.Policies {
		if p.Master == master && p.Slave == slave {
			return p.Mode
		}
	}
	return n.cfg.DefaultPolicy
}

// provenanceFor is the provenance to issue number keys of size bits under policy: for
// pqc-fallback, pqc when the link is paused or the pool cannot serve the request now.
func (n *Node) provenanceFor(policy, peerKME string, number, size int) kms.Provenance {
	switch policy {
	case PolicyHybrid:
		return kms.ProvenanceHybrid
	case PolicyPQCFallback:
		var p *kms.Pool
		n.rn.ReadStale(func(tx kms.Tx) error {
			var err error
			p, err = tx.Pool(peerKME)
			return err
		})
		if p == nil || p.Paused || p.Available < int64(number)*int64(size/8) {
			return kms.ProvenancePQC
		}
	}
	return kms.ProvenanceQKD
}

// policyError names the policy in a refusal the policy could not avoid (ETSI 014 503).
func policyError(policy, master, slave string, err error) error {
	var ke *kms.Error
	if !errors.As(err, &ke) || !errors.Is(err, kms.ErrNotEnoughKey) {
		return err
	}
	return &kms.Error{Kind: ke.Kind, Msg: fmt.Sprintf("policy %s for %s -> %s cannot be met: %s", policy, master, slave, ke.Msg)}
}

// issueUnderPolicy proposes c (an Issue) with the provenance the pair's policy allows; a
// pqc-fallback request that QKD key cannot serve after all is retried as pqc.
func (n *Node) issueUnderPolicy(ctx context.Context, policy string, c *kms.Command) (*kms.Result, error) {
	in := c.Issue
	in.Provenance = n.provenanceFor(policy, in.Peer, len(in.KeyIDs), in.Bits)
	res, err := n.propose(ctx, c)
	if err != nil && policy == PolicyPQCFallback && in.Provenance == kms.ProvenanceQKD && errors.Is(err, kms.ErrNotEnoughKey) {
		in.Provenance = kms.ProvenancePQC
		res, err = n.propose(ctx, c)
	}
	if err != nil {
		return nil, policyError(policy, in.Master, in.Slaves[0], err)
	}
	return res, nil
}
