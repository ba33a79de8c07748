package site

import (
	"sync"
	"time"

	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pq"
)

// The MAC keys of the peer channel (peer.Authenticator.MACKey and MACKeyByID): one per PQ
// epoch this site shares with a peer, derived (pq.DeriveMACKey) from the epoch as the site's
// replicated state holds it, so every node of both sites has the same keys. A key is accepted
// while its epoch is kept (until retireEpochs erases it), and sent under once the epoch has
// been recorded here for macSendAfter.

const (
	// macKeysRefresh: how often a node rereads a peer's epochs. A retired epoch's key is
	// still accepted for up to this long.
	macKeysRefresh = time.Second
	// macKeysMissRefresh: an envelope under an epoch the last reading does not have makes the
	// node reread, if that reading is older than this (an epoch recorded since).
	macKeysMissRefresh = 100 * time.Millisecond
	// macSendAfter: calls go under the newest epoch recorded at least this long ago (by this
	// site's clock), so the peer's nodes have applied it too; a peer that has not is asked again
	// with a signature (peer.Authenticator).
	macSendAfter = 2 * time.Second
)

// macKeyring caches each peer's MAC keys.
type macKeyring struct {
	mu    sync.Mutex
	peers map[string]*peerMACKeys
}

// peerMACKeys is one reading of a peer's epochs; it is not changed once made.
type peerMACKeys struct {
	read time.Time
	byID map[string]*pq.MACKey
	send *pq.MACKey // nil: no epoch old enough yet
}

// macSendKey is Authenticator.MACKey.
func (n *Node) macSendKey(kme string) *pq.MACKey {
	ks := n.peerMACKeys(kme, macKeysRefresh)
	if ks == nil {
		return nil
	}
	return ks.send
}

// macKeyByID is Authenticator.MACKeyByID.
func (n *Node) macKeyByID(kme, id string) *pq.MACKey {
	if k := n.peerMACKeys(kme, macKeysRefresh).key(id); k != nil {
		return k
	}
	return n.peerMACKeys(kme, macKeysMissRefresh).key(id)
}

// peerMACKeys returns the MAC keys shared with kme, rereading the epochs when the last
// reading is older than maxAge.
func (n *Node) peerMACKeys(kme string, maxAge time.Duration) *peerMACKeys {
	r := &n.macKeys
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	old := r.peers[kme]
	if old != nil && now.Sub(old.read) < maxAge {
		return old
	}
	if n.rn == nil {
		return nil
	}
	ks := &peerMACKeys{read: now, byID: map[string]*pq.MACKey{}}
	err := n.rn.ReadStale(func(tx kms.Tx) error {
		pool, err := tx.Pool(kme)
		if err != nil || pool == nil {
			return err
		}
		for _, e := range pool.Epochs {
			k := old.key(e.ID)
			if k == nil {
				ep, err := kms.LoadEpoch(tx, pool, e.ID)
				if err != nil {
					return err
				}
				k, err = pq.DeriveMACKey(ep)
				ep.Destroy()
				if err != nil {
					return err
				}
			}
			ks.byID[e.ID] = k
			if now.Sub(e.Created) >= macSendAfter {
				ks.send = k // epochs are oldest first: the last old enough wins
			}
		}
		return nil
	})
	if err != nil {
		// Keep the last reading (signing is the fallback when it has nothing); try again later.
		n.log.Warn("peer channel: read PQ epochs for MAC keys", "peer", kme, "err", err)
		if old != nil {
			again := *old
			again.read = now
			ks = &again
		}
	}
	if r.peers == nil {
		r.peers = map[string]*peerMACKeys{}
	}
	r.peers[kme] = ks
	return ks
}

func (ks *peerMACKeys) key(id string) *pq.MACKey {
	if ks == nil {
		return nil
	}
	return ks.byID[id]
}
