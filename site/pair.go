package site

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pki"
	"github.com/qkms/qkms/qkdsim"
	"github.com/qkms/qkms/store"
)

// Pair is two single-node sites on loopback joined by an in-process simulated QKD link: the
// network of `qkms demo` (and of `qkdsim serve`, whose sites play QKD devices).
type Pair struct {
	Layout pki.Layout
	Sites  [2]*Node   // the first node of each site
	Nodes  [2][]*Node // every node of each site
	SAEs   [2][]string

	logger *slog.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup
	linkMu sync.Mutex
	err    error
}

// PairConfig describes the two sites and their link.
type PairConfig struct {
	Dir    string
	KMEs   [2]string
	SAEs   [2][]string
	Link   *qkdsim.LinkConfig // nil: no link; the caller ingests blocks itself
	Limits kms.Limits
	// Upstream lists, per site, vendor devices it takes key from (instead of or besides Link).
	Upstream [2][]UpstreamConfig
	// KeyTTL of issued keys (0: the default).
	KeyTTL time.Duration
	// ETSI014 are the listen addresses of the sites' ETSI 014 listeners (default 127.0.0.1:0).
	ETSI014 [2]string
	// Durability of the sites ("fsync" by default, or "os"; see Config.Durability).
	Durability string
	// NodesPerSite is the size of each site's raft cluster (default 1).
	NodesPerSite int
	// Policies and DefaultPolicy are the key policies of both sites (Config.Policies).
	Policies      []PolicyConfig
	DefaultPolicy string
	Logger        *slog.Logger
}

// StartPair writes a development PKI and master keys into cfg.Dir, starts both sites on
// loopback with bootstrapped single-node raft clusters, and starts the link feeding them.
func StartPair(cfg PairConfig) (*Pair, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	kmes := map[string][]string{cfg.KMEs[0]: cfg.SAEs[0], cfg.KMEs[1]: cfg.SAEs[1]}
	layout, err := pki.WriteDevPKI(filepath.Join(cfg.Dir, "pki"), kmes, true)
	if err != nil {
		return nil, err
	}
	registry := map[string]string{}
	for i, k := range cfg.KMEs {
		for _, s := range cfg.SAEs[i] {
			registry[s] = k
		}
	}
	p := &Pair{Layout: layout, SAEs: cfg.SAEs, logger: cfg.Logger}
	nodes := max(cfg.NodesPerSite, 1)
	for i, k := range cfg.KMEs {
		if err := p.startSite(cfg, i, k, nodes, registry); err != nil {
			p.Close()
			return nil, fmt.Errorf("site %s: %w", k, err)
		}
	}
	for i := range cfg.KMEs {
		var addrs []string
		for _, n := range p.Nodes[1-i] {
			addrs = append(addrs, n.PeerAddr())
		}
		for _, n := range p.Nodes[i] {
			n.SetPeer(cfg.KMEs[1-i], addrs)
			n.SetPeerIdentity(cfg.KMEs[1-i], p.Sites[1-i].IdentityPublicKeyFile())
		}
	}

	if cfg.Link == nil {
		return p, nil
	}
	link, err := qkdsim.NewLink(*cfg.Link)
	if err != nil {
		p.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		a, b := p.Sites[0], p.Sites[1]
		// A KME holds at most max_key_count keys of the default size per link; the link waits
		// while a pool is full, as a real QKD device buffers or throttles, instead of spending
		// the CPU and disk on key nobody asks for.
		lim := a.machine.Limits()
		full := int64(lim.MaxKeyCount) * int64(lim.KeySize/8)
		err := link.Run(ctx,
			func(blk qkdsim.Block) error {
				if err := a.waitRoom(ctx, b.KMEID(), full); err != nil {
					return err
				}
				return a.Ingest(ctx, b.KMEID(), blk.ID, blk.Seq, blk.Key, blk.QBER)
			},
			func(blk qkdsim.Block) error {
				if err := b.waitRoom(ctx, a.KMEID(), full); err != nil {
					return err
				}
				return b.Ingest(ctx, a.KMEID(), blk.ID, blk.Seq, blk.Key, blk.QBER)
			})
		if err != nil && ctx.Err() == nil {
			cfg.Logger.Error("QKD link stopped", "err", err)
			p.linkMu.Lock()
			p.err = err
			p.linkMu.Unlock()
		}
	}()
	return p, nil
}

// startSite starts the nodes of site i: the first bootstraps the raft cluster, the others join
// it through its admin listener. All share the site's master key and KME certificate.
func (p *Pair) startSite(cfg PairConfig, i int, k string, nodes int, registry map[string]string) error {
	kme, _ := p.Layout.Find(k)
	siteDir, _ := filepath.Abs(filepath.Join(cfg.Dir, k))
	keyFile := filepath.Join(siteDir, "master.key")
	if err := os.MkdirAll(siteDir, 0o700); err != nil {
		return err
	}
	if _, err := os.Stat(keyFile); err != nil {
		if err := store.GenerateMasterKey(keyFile); err != nil {
			return err
		}
	}
	for j := 0; j < nodes; j++ {
		raftAddr, err := freeLoopbackAddr()
		if err != nil {
			return err
		}
		etsiAddr := cfg.ETSI014[i]
		if etsiAddr == "" || j > 0 {
			etsiAddr = "127.0.0.1:0"
		}
		dir := siteDir
		if nodes > 1 {
			dir = filepath.Join(siteDir, fmt.Sprintf("node%d", j+1))
		}
		c := Config{
			KMEID: k, NodeID: fmt.Sprintf("%s-%d", k, j+1), DataDir: dir, MasterKeyFile: keyFile,
			TLS: TLSConfig{CA: p.Layout.CACert, Cert: kme.Cert, Key: kme.Key},
			Listen: ListenConfig{ETSI014: etsiAddr, Peer: "127.0.0.1:0", Raft: raftAddr, Admin: "127.0.0.1:0",
				GRPC: "127.0.0.1:0", Metrics: "127.0.0.1:0"},
			Raft: RaftConfig{Bootstrap: j == 0},
			SAEs: registry, Limits: cfg.Limits, KeyTTL: cfg.KeyTTL, Durability: cfg.Durability,
			Policies: cfg.Policies, DefaultPolicy: cfg.DefaultPolicy,
		}
		// Every node has the upstream devices: whichever is leader pulls from them.
		c.Upstream = cfg.Upstream[i]
		if j > 0 {
			c.Raft.Join = []string{p.Nodes[i][0].AdminAddr()}
		}
		n, err := Open(c, cfg.Logger)
		if err != nil {
			return err
		}
		p.Nodes[i] = append(p.Nodes[i], n)
	}
	p.Sites[i] = p.Nodes[i][0]
	// Wait until every node is a member, so the site is whole when StartPair returns.
	deadline := time.Now().Add(30 * time.Second)
	for {
		members, err := p.Sites[i].rn.Members()
		if err == nil && len(members) == nodes {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d nodes joined", len(members), nodes)
		}
		time.Sleep(50 * time.Millisecond) // membership changes have no notification to wait on
	}
}

// WaitForKey returns once each site owns at least minBytes of verified key for the other.
func (p *Pair) WaitForKey(ctx context.Context, minBytes int64) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		ok := true
		for i, n := range p.Sites {
			if n.Available(p.Sites[1-i].KMEID()) < minBytes {
				ok = false
			}
		}
		if ok {
			return nil
		}
		p.linkMu.Lock()
		err := p.err
		p.linkMu.Unlock()
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("site: waiting for key: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Close stops the link and both sites.
func (p *Pair) Close() error {
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	var err error
	for i := range p.Nodes {
		for _, n := range p.Nodes[i] {
			if n != nil {
				if e := n.Close(); e != nil && err == nil {
					err = e
				}
			}
		}
	}
	return err
}

// Restart closes site i and opens it again from its data directory, as after a crash or an
// upgrade; its listeners come back on the same addresses.
func (p *Pair) Restart(i int) error {
	n := p.Sites[i]
	cfg := n.cfg
	cfg.Listen.ETSI014, cfg.Listen.Peer = n.ETSI014Addr(), n.PeerAddr()
	if err := n.Close(); err != nil {
		return err
	}
	p.Sites[i], p.Nodes[i][0] = nil, nil
	n, err := Open(cfg, p.logger)
	if err != nil {
		return err
	}
	p.Sites[i], p.Nodes[i][0] = n, n
	return nil
}

// waitRoom returns at once while this site's pool for peerKME holds less than full bytes
// (verified or pending). Once the pool is full it returns only when the pool has drained below
// three quarters of full, polling (pools drain as SAEs take keys, with no event to wait on):
// like a QKD device's buffer with a low-water mark, the link then refills in a burst instead
// of producing a block each time SAEs take one block's worth.
func (n *Node) waitRoom(ctx context.Context, peerKME string, full int64) error {
	if n.poolFill(peerKME) < full {
		return nil
	}
	for low := full - full/4; n.poolFill(peerKME) >= low; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// Available is the verified key (bytes) this site may issue from on its link with peerKME.
func (n *Node) Available(peerKME string) int64 {
	var avail int64
	n.db.View(func(tx kms.Tx) error {
		p, err := tx.Pool(peerKME)
		if p != nil {
			avail = p.Available
		}
		return err
	})
	return avail
}

// SetPeer sets (or replaces) the peer-channel addresses of another site.
func (n *Node) SetPeer(kme string, addrs []string) {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	if c := n.peers[kme]; c != nil {
		c.Close()
		delete(n.peers, kme)
	}
	for i := range n.cfg.Peers {
		if n.cfg.Peers[i].KMEID == kme {
			n.cfg.Peers[i].Addrs = addrs
			return
		}
	}
	n.cfg.Peers = append(n.cfg.Peers, PeerConfig{KMEID: kme, Addrs: addrs})
	sort.Slice(n.cfg.Peers, func(i, j int) bool { return n.cfg.Peers[i].KMEID < n.cfg.Peers[j].KMEID })
}

func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
