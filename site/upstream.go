package site

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"time"

	"github.com/qkms/qkms/api/etsi014"
	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pki"
)

// An upstream source is a vendor QKD device speaking ETSI GS QKD 014 (or `qkdsim serve`). The
// site at the end whose KME ID sorts first is the device's master SAE: it takes keys with
// enc_keys and ingests each as a block named by its key ID. The other site learns those IDs when
// the first one asks to compare the blocks' tags, fetches them from its own device with
// dec_keys, and ingests them too. No key crosses the peer channel, only key IDs and tags.

type upstream struct {
	cfg    UpstreamConfig
	client *etsi014.Client
	master bool
}

func (n *Node) openUpstreams() error {
	for _, u := range n.cfg.Upstream {
		tlsCfg, err := pki.ClientConfig(u.Cert, u.Key, u.CA)
		if err != nil {
			return err
		}
		up := &upstream{cfg: u, client: etsi014.NewClient(u.URL, tlsCfg), master: n.cfg.KMEID < u.Peer}
		n.upstreams = append(n.upstreams, up)
		if up.master {
			n.wg.Add(1)
			go func() { defer n.wg.Done(); n.runUpstreamMaster(up) }()
		}
	}
	return nil
}

// upstreamSeq maps a device key ID to a stream position both sites compute alike, so both agree
// on the block's owner.
func upstreamSeq(keyID string) uint64 {
	h := sha256.Sum256([]byte(keyID))
	return binary.BigEndian.Uint64(h[:8])
}

// lowWater is the pool level (bytes) under which the master end keeps pulling device key.
const lowWater = 4 << 20

func (n *Node) runUpstreamMaster(up *upstream) {
	backoff := time.Second
	for n.ctx.Err() == nil {
		if !n.rn.IsLeader() || n.poolFill(up.cfg.Peer) >= lowWater {
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
		keys, err := up.client.GetKey(ctx, up.cfg.RemoteSAE, etsi014.KeyRequest{Number: up.cfg.Number, Size: up.cfg.KeySize})
		cancel()
		if err != nil {
			n.log.Warn("upstream device enc_keys failed", "url", up.cfg.URL, "err", err, "retry_in", backoff)
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = time.Second
		for _, k := range keys {
			if err := n.Ingest(n.ctx, up.cfg.Peer, k.ID, upstreamSeq(k.ID), k.Bytes, 0); err != nil {
				n.log.Warn("ingest upstream key", "key_id", k.ID, "err", err)
			}
		}
	}
}

// fetchUpstream takes from this site's device, with dec_keys, the keys the peer announced
// that this site does not hold yet, and ingests them. It is a no-op unless this site is the
// slave end of an upstream link with the peer.
func (n *Node) fetchUpstream(ctx context.Context, peerKME string, blockIDs []string) {
	for _, up := range n.upstreams {
		if up.master || up.cfg.Peer != peerKME || len(blockIDs) == 0 {
			continue
		}
		for len(blockIDs) > 0 {
			k := min(len(blockIDs), up.cfg.Number)
			keys, err := up.client.GetKeyWithIDs(ctx, up.cfg.RemoteSAE, blockIDs[:k])
			if err != nil {
				n.log.Warn("upstream device dec_keys failed", "url", up.cfg.URL, "err", err)
				return
			}
			for _, key := range keys {
				if err := n.Ingest(ctx, peerKME, key.ID, upstreamSeq(key.ID), key.Bytes, 0); err != nil {
					n.log.Warn("ingest upstream key", "key_id", key.ID, "err", err)
				}
			}
			blockIDs = blockIDs[k:]
		}
	}
}

func (n *Node) poolFill(peerKME string) int64 {
	var avail int64
	n.db.View(func(tx kms.Tx) error {
		p, err := tx.Pool(peerKME)
		if p != nil {
			avail = p.Available + p.Pending
		}
		return err
	})
	return avail
}
