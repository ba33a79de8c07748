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
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

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

	etsiSrv *http.Server
	etsiLn  net.Listener
	peerSrv *grpc.Server
	peerLn  net.Listener

	peersMu sync.Mutex
	peers   map[string]*peer.Client

	upstreams []*upstream

	push chan []kms.Reservation
	kick chan struct{} // wakes the verifier after an ingest

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
	serverTLS, err := pki.ServerConfig(cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.CA)
	if err != nil {
		return nil, err
	}
	clientTLS, err := pki.ClientConfig(cfg.TLS.Cert, cfg.TLS.Key, cfg.TLS.CA)
	if err != nil {
		return nil, err
	}
	db, err := store.Open(filepath.Join(cfg.DataDir, "state.db"), mk)
	clear(mk)
	if err != nil {
		return nil, err
	}
	reg, err := kms.NewRegistry(cfg.SAEs)
	if err != nil {
		db.Close()
		return nil, err
	}
	machine := kms.NewMachine(kms.Config{Self: cfg.KMEID, Limits: cfg.Limits, Registry: reg})

	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg: cfg, log: logger, machine: machine, db: db,
		serverTLS: serverTLS, clientTLS: clientTLS,
		peers: map[string]*peer.Client{},
		push:  make(chan []kms.Reservation, 1024),
		kick:  make(chan struct{}, 1),
		ctx:   ctx, cancel: cancel,
	}
	raftTLS := serverTLS.Clone()
	raftTLS.Certificates = serverTLS.Certificates
	rn, err := raft.Open(raft.Config{
		ID: cfg.NodeID, Dir: filepath.Join(cfg.DataDir, "raft"),
		Bind: cfg.Listen.Raft, Advertise: cfg.Raft.Advertise,
		TLS: raftTLS, Bootstrap: cfg.Raft.Bootstrap,
		Applier: machine, Store: db, Logger: logger,
	})
	if err != nil {
		cancel()
		db.Close()
		return nil, err
	}
	n.rn = rn
	if err := n.listen(); err != nil {
		n.Close()
		return nil, err
	}
	if err := n.openUpstreams(); err != nil {
		n.Close()
		return nil, err
	}
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.leaderLoops() }()
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
			Handler:           etsi014.NewHandler(etsiService{n}, etsi014.Options{Logger: n.log}),
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
		n.peerSrv = grpc.NewServer(grpc.Creds(credentials.NewTLS(n.serverTLS)))
		peer.Register(n.peerSrv, peerService{n}, n.log)
		go n.peerSrv.Serve(ln)
	}
	return nil
}

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
	if n.peerSrv != nil {
		n.peerSrv.GracefulStop()
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
	if c.Time.IsZero() {
		c.Time = time.Now().UTC()
	}
	res, err := n.rn.Propose(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("%w: replication: %v", kms.ErrNotConfirmed, err)
	}
	if res.Err != nil {
		return res, res.Err
	}
	return res, nil
}

// peerClient returns (dialling once) the peer-channel client for a site.
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
		c, err := peer.Dial(p.Addrs[0], n.clientTLS, kme)
		if err != nil {
			return nil, err
		}
		n.peers[kme] = c
		return c, nil
	}
	return nil, fmt.Errorf("site: no peer-channel address configured for %s", kme)
}
