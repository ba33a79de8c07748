package site

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/qkms/qkms/api/etsi014"
	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/peer"
	"github.com/qkms/qkms/pki"
	"github.com/qkms/qkms/raft"
	"github.com/qkms/qkms/store"
)

// Node is one running node of a site: the replicated kms state and every listener.
type Node struct {
	cfg     Config
	log     *slog.Logger
	machine *kms.Machine
	db      *store.DB
	rn      *raft.Node

	serverTLS *tls.Config
	clientTLS *tls.Config

	etsiSrv  *http.Server
	etsiLn   net.Listener
	peerSrv  *grpc.Server
	peerLn   net.Listener
	adminSrv *grpc.Server
	adminLn  net.Listener

	grpcSrv    *grpc.Server // KeyDelivery for SAEs (grpc.go)
	grpcLn     net.Listener
	grpcHealth *health.Server
	metricsSrv *http.Server // Prometheus /metrics (metrics.go)
	metricsLn  net.Listener
	metrics    *metrics

	peersMu  sync.Mutex
	peers    map[string]*peer.Client
	peerNext map[string]int // index of the address to dial next, per site

	upstreams []*upstream

	rebalanceReq map[string]string // per peer: the RequestBlocks ID awaiting an answer (leader loop only)
	lastSweep    time.Time         // last Expire proposed (leader loop only)

	audit   *auditState // audit key, signing key and checkpoint progress (audit.go)
	pq      *pqState    // peer-message signing and PQ epochs (epoch.go)
	macKeys macKeyring  // the peer channel's MAC keys (mackeys.go)
	rate    rateLimiter // per-SAE token buckets (ratelimit.go)

	push        chan []kms.Reservation
	pushed      chan []string // key IDs the peer acknowledged, for markLoop
	handoff     handoffs      // dec_keys waiting here for a push (handoff.go)
	pushBacklog atomic.Bool   // some reservation could not be pushed; rescan the store
	leading     atomic.Bool   // raft says this node leads its site (leaderChanged)
	takeover    atomic.Bool   // it gained leadership since the leader loops last looked
	kick        chan struct{} // wakes the leader loops (after an ingest, on gaining leadership)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Open opens the node's store, joins raft and starts its listeners and background loops.
func Open(cfg Config, logger *slog.Logger) (*Node, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("kme", cfg.KMEID, "node", cfg.NodeID)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("site: data dir: %w", err)
	}
	mk, err := store.LoadMasterKey(cfg.MasterKeyFile)
	if err != nil {
		return nil, err
	}
	defer clear(mk) // the store and the audit key keep what they derive from it
	aud, err := openAudit(cfg, mk)
	if err != nil {
		return nil, err
	}
	serverTLS, err := pki.ServerConfig(cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.CA)
	if err != nil {
		return nil, err
	}
	clientTLS, err := pki.ClientConfig(cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.CA)
	if err != nil {
		return nil, err
	}
	storeOpts := []store.Option{store.WithSelf(cfg.KMEID), store.WithDeferredCommit(deferUpdates, deferDelay)}
	if cfg.Durability == "os" {
		storeOpts = append(storeOpts, store.WithoutFsync())
	}
	db, err := store.Open(filepath.Join(cfg.DataDir, "state.db"), mk, storeOpts...)
	if err != nil {
		return nil, err
	}
	reg, err := kms.NewRegistry(cfg.SAEs)
	if err != nil {
		db.Close()
		return nil, err
	}
	machine := kms.NewMachine(kms.Config{Self: cfg.KMEID, Limits: cfg.Limits, Registry: reg, AuditKey: aud.key})

	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg: cfg, log: logger, machine: machine, db: db, audit: aud,
		serverTLS: serverTLS, clientTLS: clientTLS,
		peers: map[string]*peer.Client{}, peerNext: map[string]int{}, rebalanceReq: map[string]string{},
		push: make(chan []kms.Reservation, 1024), pushed: make(chan []string, 64),
		kick: make(chan struct{}, 1),
		ctx:  ctx, cancel: cancel,
	}
	// Raft and leader forwarding: only nodes of this same site (KME certificate naming this
	// KME_ID, from this CA) may connect, in either direction.
	raftTLS := serverTLS.Clone()
	raftTLS.RootCAs = clientTLS.RootCAs
	pki.RequirePeer(raftTLS, pki.RoleKME, cfg.KMEID)
	rn, err := raft.Open(raft.Config{
		ID: cfg.NodeID, Dir: filepath.Join(cfg.DataDir, "raft"),
		Bind: cfg.Listen.Raft, Advertise: cfg.Raft.Advertise,
		TLS: raftTLS, Bootstrap: cfg.Raft.Bootstrap, NoFsync: cfg.Durability == "os",
		SnapshotThreshold: cfg.Raft.SnapshotThreshold, TrailingLogs: cfg.Raft.TrailingLogs,
		HeartbeatTimeout: cfg.Raft.HeartbeatTimeout, ElectionTimeout: cfg.Raft.ElectionTimeout, LeaderLeaseTimeout: cfg.Raft.LeaderLeaseTimeout,
		Applier: machine, Store: db, Logger: logger, OnApplied: n.applied, OnLeaderChange: n.leaderChanged,
		MaxInflight: raftInflight,
	})
	if err != nil {
		cancel()
		db.Close()
		return nil, err
	}
	n.rn = rn
	n.pq = newPQState(n, aud.signer)
	n.metrics = newMetrics(n)
	if err := n.listen(); err != nil {
		n.Close()
		return nil, err
	}
	if !cfg.Raft.Bootstrap && len(cfg.Raft.Join) > 0 {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.joinSite() }()
	}
	if err := n.openUpstreams(); err != nil {
		n.Close()
		return nil, err
	}
	n.wg.Add(4)
	go func() { defer n.wg.Done(); n.leaderLoops() }()
	go func() { defer n.wg.Done(); n.pushLoop() }()
	go func() { defer n.wg.Done(); n.markLoop() }()
	go func() { defer n.wg.Done(); n.auditLoop() }()
	return n, nil
}

func (n *Node) listen() error {
	if a := n.cfg.Listen.ETSI014; a != "" {
		ln, err := tls.Listen("tcp", a, n.serverTLS)
		if err != nil {
			return fmt.Errorf("site: etsi014 listener: %w", err)
		}
		n.etsiLn = ln
		n.etsiSrv = &http.Server{
			Handler:           n.metrics.instrumentETSI(etsi014.NewHandler(etsiService{n}, etsi014.Options{Logger: n.log})),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
		}
		go n.etsiSrv.Serve(ln)
	}
	if a := n.cfg.Listen.Peer; a != "" {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("site: peer listener: %w", err)
		}
		n.peerLn = ln
		n.peerSrv = grpc.NewServer(n.peerServerOptions()...)
		peer.Register(n.peerSrv, peerService{n}, n.log)
		go n.peerSrv.Serve(ln)
	}
	if a := n.cfg.Listen.Admin; a != "" {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("site: admin listener: %w", err)
		}
		n.adminLn = ln
		n.adminSrv = newAdminServer(n)
		go n.adminSrv.Serve(ln)
	}
	if err := n.listenGRPC(); err != nil {
		return err
	}
	return n.listenMetrics()
}

// AdminAddr is the bound address of the admin listener ("" if none).
func (n *Node) AdminAddr() string { return addrOf(n.adminLn) }

// RaftAddr is the address other nodes of the site reach this node's raft transport at.
func (n *Node) RaftAddr() string { return n.rn.Addr() }

// ETSI014Addr is the bound address of the ETSI 014 listener ("" if none).
func (n *Node) ETSI014Addr() string { return addrOf(n.etsiLn) }

// PeerAddr is the bound address of the peer-channel listener ("" if none).
func (n *Node) PeerAddr() string { return addrOf(n.peerLn) }

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// NodeID is this node's ID in the site's raft cluster.
func (n *Node) NodeID() string { return n.cfg.NodeID }

// KMEID is the site's KME ID.
func (n *Node) KMEID() string { return n.cfg.KMEID }

// Close stops listeners and loops, then raft and the store.
func (n *Node) Close() error {
	n.cancel()
	if n.etsiSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		n.etsiSrv.Shutdown(ctx)
		cancel()
	}
	n.closeGRPC()
	n.closeMetrics()
	for _, g := range []*grpc.Server{n.peerSrv, n.adminSrv} {
		if g != nil {
			g.GracefulStop()
		}
	}
	n.wg.Wait()
	n.peersMu.Lock()
	for _, c := range n.peers {
		c.Close()
	}
	n.peersMu.Unlock()
	var errs []error
	if n.rn != nil {
		errs = append(errs, n.rn.Close())
	}
	errs = append(errs, n.db.Close())
	return errors.Join(errs...)
}

// propose sends a command through the site's replicated log and returns its result's error
// as the error, so callers branch on the kms sentinels.
func (n *Node) propose(ctx context.Context, c *kms.Command) (*kms.Result, error) {
	rs, err := n.proposeAll(ctx, []*kms.Command{c})
	if err != nil {
		return nil, err
	}
	if rs[0].Err != nil {
		return rs[0], rs[0].Err
	}
	return rs[0], nil
}

// proposeAll replicates commands that must be applied one right after the other (see
// raft.Node.ProposeAll). Each command's own failure is in its Result; the error is the
// replication's (wrapping kms.ErrNotConfirmed).
func (n *Node) proposeAll(ctx context.Context, cmds []*kms.Command) ([]*kms.Result, error) {
	now := time.Now()
	for _, c := range cmds {
		if c.Time.IsZero() {
			c.Time = now.UTC()
		}
	}
	rs, err := n.rn.ProposeAll(ctx, cmds)
	d := time.Since(now)
	for i, c := range cmds {
		var res *kms.Result
		if err == nil {
			res = rs[i]
		}
		n.observeCommand(c, res, err, d)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: replication: %v", kms.ErrNotConfirmed, err)
	}
	return rs, nil
}

// peerClient returns (dialling once) the peer-channel client for a site. A site has several
// nodes; after a failed call peerFailed moves on to the next address, so the channel works
// through any node and survives the loss of one.
func (n *Node) peerClient(kme string) (*peer.Client, error) {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	if c := n.peers[kme]; c != nil {
		return c, nil
	}
	for _, p := range n.cfg.Peers {
		if p.KMEID != kme || len(p.Addrs) == 0 {
			continue
		}
		var opts []peer.ClientOption
		if p.IdentityPub != "" {
			opts = append(opts, peer.WithAuthenticator(n.pq.auth))
		}
		c, err := peer.Dial(p.Addrs[n.peerNext[kme]%len(p.Addrs)], n.clientTLS, kme, opts...)
		if err != nil {
			return nil, err
		}
		n.peers[kme] = c
		return c, nil
	}
	return nil, fmt.Errorf("site: no peer-channel address configured for %s", kme)
}

// peerFailed drops the client of a site after a call that may succeed elsewhere, so the next
// call dials the site's next node.
func (n *Node) peerFailed(kme string, err error) {
	if !peer.Retryable(err) {
		return
	}
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	if c := n.peers[kme]; c != nil {
		c.Close()
		delete(n.peers, kme)
	}
	n.peerNext[kme]++
}

// withPeer runs call against a site's peer channel, moving on to the site's next node after a
// failure that another node may not have, until every address was tried once.
func (n *Node) withPeer(kme string, call func(*peer.Client) error) error {
	n.peersMu.Lock()
	tries := 1
	for _, p := range n.cfg.Peers {
		if p.KMEID == kme {
			tries = max(1, len(p.Addrs))
		}
	}
	n.peersMu.Unlock()
	var err error
	for i := 0; i < tries; i++ {
		var c *peer.Client
		if c, err = n.peerClient(kme); err != nil {
			return err
		}
		if err = call(c); err == nil || !peer.Retryable(err) {
			return err
		}
		n.peerFailed(kme, err)
	}
	return err
}
