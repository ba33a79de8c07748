package raft

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	hraft "github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/qkms/qkms/kms"
)

// Sentinel errors callers branch on (the API layer answers 503 for the first three).
var (
	// ErrNoLeader: the site has no reachable leader (no quorum, or an election is running).
	// The operation had no effect.
	ErrNoLeader = errors.New("raft: no leader reachable; the site has no quorum right now, retry later")
	// ErrUnknownOutcome: the operation may or may not have been applied (leadership was lost
	// or the leader became unreachable after it was sent). Retry with the same ReqID.
	ErrUnknownOutcome = errors.New("raft: outcome unknown; retry with the same request ID")
	// ErrClosed: the node is shutting down.
	ErrClosed = errors.New("raft: node closed")
)

// Config configures one node of a site. Zero tunables take the defaults noted.
type Config struct {
	ID  string // node ID, unique and stable within the site
	Dir string // raft log, stable store and snapshots (not the state store)
	// Bind is the internal listener (raft and forwarding), e.g. "10.0.0.5:7000" or
	// "127.0.0.1:0". It must not be a client listener.
	Bind string
	// Advertise is the address other nodes dial; defaults to the bound address.
	Advertise string
	// TLS holds the node's certificate and the site's CA (RootCAs and/or ClientCAs); it is
	// used both to accept (client certificates required) and to dial.
	TLS *tls.Config
	// VerifyPeer, when set, decides whether a peer's verified leaf certificate belongs to a
	// node of this site. By default the peer's subject must name the same entity (CommonName
	// and OrganizationalUnit) as this node's certificate: the nodes of a site share its KME
	// identity, while SAEs and other sites' KMEs, even under the same CA, differ.
	VerifyPeer func(*x509.Certificate) error
	// Bootstrap makes a node with no raft state start a new site with itself as sole voter.
	Bootstrap bool
	// NoFsync makes log writes return once they reach the operating system, without waiting for
	// the disk: an acknowledged entry survives a crash of the process but not of the machine,
	// unless a quorum of other nodes holds it (site durability "os").
	NoFsync bool
	Applier Applier
	Store   Store
	Logger  *slog.Logger
	// OnLeaderChange is called, in order, from one goroutine when this node gains (true) or
	// loses (false) leadership; the node wiring starts and stops leader-only loops from it.
	// It must not block for long. Close ends with a call with false if the node was leader.
	OnLeaderChange func(isLeader bool)
	// OnApplied, when set, is called after each Update of the state store (committed, or
	// deferred: store.WithDeferredCommit), once per entry it applied, with that entry's
	// commands and their Results (res[i] for cmds[i]), in log order, on the goroutine that
	// applies entries: a request waiting for a replicated effect (a pushed reservation) can be
	// woken when it lands instead of re-reading the store after every entry, and the leader
	// can act on what every node's proposals did. After a snapshot replaced all state it is
	// called with nil, nil. It must not block, and must keep neither slice: Results may hold
	// key bytes.
	OnApplied func(cmds []*kms.Command, res []*kms.Result)

	// MaxBatch bounds the commands grouped into one log entry (default 512).
	MaxBatch int
	// MaxInflight bounds the log entries the group-commit loop has in flight (default 1:
	// the next entry fills while the previous is replicated and applied. More in flight
	// makes entries smaller, and every entry costs fsyncs on each node; measured with
	// BenchmarkPropose*, 1 was best on one node and on three for tiny commands. Sites, whose
	// entries cost more to apply than to store, use 2: see site.raftInflight).
	MaxInflight int
	// ProposeTimeout bounds Propose, Read and membership calls whose context has no
	// deadline (default 10s).
	ProposeTimeout time.Duration
	// ForwardTimeout bounds one forwarded request (default 10s).
	ForwardTimeout time.Duration
	// Raft timings and log compaction; zero keeps hashicorp/raft's defaults.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotInterval   time.Duration
	SnapshotThreshold  uint64
	TrailingLogs       uint64
	// SnapshotRetain is the number of snapshots kept in Dir (default 2).
	SnapshotRetain int
}

func (c *Config) setDefaults() error {
	switch {
	case c.ID == "":
		return errors.New("raft: config: ID is required")
	case c.Dir == "":
		return errors.New("raft: config: Dir is required")
	case c.Bind == "":
		return errors.New("raft: config: Bind is required")
	case c.Applier == nil || c.Store == nil:
		return errors.New("raft: config: Applier and Store are required")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 512
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = 1
	}
	if c.ProposeTimeout <= 0 {
		c.ProposeTimeout = 10 * time.Second
	}
	if c.ForwardTimeout <= 0 {
		c.ForwardTimeout = 10 * time.Second
	}
	if c.SnapshotRetain <= 0 {
		c.SnapshotRetain = 2
	}
	return nil
}

func (c *Config) raftConfig(notify chan<- bool) *hraft.Config {
	rc := hraft.DefaultConfig()
	rc.LocalID = hraft.ServerID(c.ID)
	rc.Logger = hclogger(c.Logger, "raft")
	rc.NotifyCh = notify
	// The state store is durable and records its applied index, so a restart starts from it
	// rather than from the last snapshot (recoverState handles a lost store).
	rc.NoSnapshotRestoreOnStart = true
	// Let raft gather queued entries (group-committed batches from us and from forwarding
	// followers) into one log write and one FSM batch.
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	set := func(dst *time.Duration, v time.Duration) {
		if v > 0 {
			*dst = v
		}
	}
	set(&rc.HeartbeatTimeout, c.HeartbeatTimeout)
	set(&rc.ElectionTimeout, c.ElectionTimeout)
	set(&rc.LeaderLeaseTimeout, c.LeaderLeaseTimeout)
	set(&rc.CommitTimeout, c.CommitTimeout)
	set(&rc.SnapshotInterval, c.SnapshotInterval)
	if c.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = c.SnapshotThreshold
	}
	if c.TrailingLogs > 0 {
		rc.TrailingLogs = c.TrailingLogs
	}
	return rc
}

// logMmapSize is the address space reserved for the log store's file (only address space on
// Linux; the file grows as needed).
const logMmapSize = 1 << 30

// Node is one member of a site's raft cluster.
type Node struct {
	cfg       Config
	log       *slog.Logger
	raft      *hraft.Raft
	fsm       *fsm
	logs      *raftboltdb.BoltStore
	snaps     *hraft.FileSnapshotStore
	sl        *streamLayer
	transport *hraft.NetworkTransport
	fwd       *forwardClient
	fwdSrv    *forwardServer
	// ready is closed once n.raft is set: the internal listener serves (raft needs its
	// transport) before the raft instance exists, and forwarded requests must wait for it.
	ready chan struct{}

	proposals chan *proposal
	stop      chan struct{}
	wg        sync.WaitGroup // group-commit loop, in-flight commits, notification loops
	observer  *hraft.Observer

	leaderMu  sync.Mutex
	leaderChg chan struct{} // closed and replaced on every leader observation

	barrierMu   sync.Mutex
	barrierTerm uint64 // term in which this node, as leader, completed a Barrier

	raftDown chan struct{} // closed once raft has shut down

	closeOnce sync.Once
	closeErr  error
}

// Open starts a node: it opens the raft stores in cfg.Dir, listens on cfg.Bind and joins
// raft. With cfg.Bootstrap and no existing raft state it creates a one-node site.
func Open(cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("raft: create %s: %w", cfg.Dir, err)
	}
	n := &Node{
		cfg: cfg, log: cfg.Logger,
		proposals: make(chan *proposal, 4*cfg.MaxBatch),
		stop:      make(chan struct{}),
		raftDown:  make(chan struct{}),
		leaderChg: make(chan struct{}),
	}
	var err error
	closers := []func() error{}
	fail := func(err error) (*Node, error) {
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i]()
		}
		return nil, err
	}
	n.logs, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "raft.db"), NoSync: cfg.NoFsync,
		BoltOptions: &bolt.Options{
			// Growing the mapping of a growing log would stop every reader and writer of the
			// log store for the remap (tens of ms); reserve the address space up front.
			InitialMmapSize: logMmapSize,
			FreelistType:    bolt.FreelistMapType,
			// Every log write would also rewrite the free-page list, which the log's
			// truncations keep long (one pwrite of several pages per entry, 2-4% of the
			// delivery path's CPU); without it, opening the store rebuilds the list by
			// walking the file, as the state store does.
			NoFreelistSync: true,
			// Without fsync, growing the file needs none either (bbolt syncs the new size).
			NoGrowSync: cfg.NoFsync,
		}})
	if err != nil {
		return fail(fmt.Errorf("raft: open log store %s: %w (is another node using this directory?)", filepath.Join(cfg.Dir, "raft.db"), err))
	}
	closers = append(closers, n.logs.Close)
	n.snaps, err = hraft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.SnapshotRetain, hclogger(cfg.Logger, "raft-snapshots"))
	if err != nil {
		return fail(fmt.Errorf("raft: open snapshot store in %s: %w", cfg.Dir, err))
	}
	n.fsm, err = newFSM(cfg.Applier, cfg.Store, n.fatal)
	if err != nil {
		return fail(err)
	}
	n.fsm.onApplied = cfg.OnApplied
	hasState, err := hraft.HasExistingState(n.logs, n.logs, n.snaps)
	if err != nil {
		return fail(fmt.Errorf("raft: inspect raft state in %s: %w", cfg.Dir, err))
	}
	if err := n.recoverState(hasState); err != nil {
		return fail(err)
	}

	ln, err := net.Listen("tcp", cfg.Bind)
	if err != nil {
		return fail(fmt.Errorf("raft: listen on %s: %w", cfg.Bind, err))
	}
	closers = append(closers, ln.Close)
	to := cfg.ForwardTimeout
	n.sl, err = newStreamLayer(ln, cfg.Advertise, cfg.TLS, cfg.VerifyPeer, to, cfg.Logger)
	if err != nil {
		return fail(err)
	}
	n.ready = make(chan struct{})
	n.fwdSrv = &forwardServer{n: n, conns: map[net.Conn]struct{}{}}
	n.sl.forward = n.fwdSrv.serve
	n.fwd = &forwardClient{sl: n.sl, timeout: cfg.ForwardTimeout, idle: map[string][]net.Conn{}}
	n.transport = hraft.NewNetworkTransportWithConfig(&hraft.NetworkTransportConfig{
		Stream: n.sl, MaxPool: 3, Timeout: 10 * time.Second, Logger: hclogger(cfg.Logger, "raft-net"),
	})
	closers = append(closers, n.transport.Close)
	n.sl.wg.Add(1)
	go n.sl.serve()

	notify := make(chan bool, 16)
	n.raft, err = hraft.NewRaft(cfg.raftConfig(notify), n.fsm, n.logs, n.logs, n.snaps, n.transport)
	if err != nil {
		return fail(fmt.Errorf("raft: start: %w", err))
	}
	close(n.ready)
	if cfg.Bootstrap && !hasState {
		f := n.raft.BootstrapCluster(hraft.Configuration{Servers: []hraft.Server{{
			Suffrage: hraft.Voter, ID: hraft.ServerID(cfg.ID), Address: n.transport.LocalAddr(),
		}}})
		if err := f.Error(); err != nil {
			_ = n.raft.Shutdown().Error()
			return fail(fmt.Errorf("raft: bootstrap site with %s: %w", cfg.ID, err))
		}
	}

	obs := make(chan hraft.Observation, 16)
	n.observer = hraft.NewObserver(obs, false, func(o *hraft.Observation) bool {
		_, ok := o.Data.(hraft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(n.observer)
	n.wg.Add(3)
	go n.watchLeader(obs)
	go n.watchLeadership(notify)
	go n.commitLoop()
	n.log.Info("raft: node started", "id", cfg.ID, "addr", string(n.transport.LocalAddr()), "bootstrap", cfg.Bootstrap && !hasState)
	return n, nil
}

// watchLeader wakes everything waiting for a (new) leader.
func (n *Node) watchLeader(obs chan hraft.Observation) {
	defer n.wg.Done()
	for {
		select {
		case <-obs:
			n.leaderMu.Lock()
			close(n.leaderChg)
			n.leaderChg = make(chan struct{})
			n.leaderMu.Unlock()
		case <-n.stop:
			return
		}
	}
}

// leaderChanged returns a channel closed at the next leader observation.
func (n *Node) leaderChanged() <-chan struct{} {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	return n.leaderChg
}

func (n *Node) watchLeadership(notify chan bool) {
	defer n.wg.Done()
	leader := false
	deliver := func(isLeader bool) {
		if isLeader == leader {
			return
		}
		leader = isLeader
		n.log.Info("raft: leadership changed", "id", n.cfg.ID, "leader", isLeader)
		if n.cfg.OnLeaderChange != nil {
			n.cfg.OnLeaderChange(isLeader)
		}
	}
	for {
		select {
		case isLeader := <-notify:
			deliver(isLeader)
		case <-n.raftDown:
			// Raft has stopped: deliver what it sent last, and make sure the wiring hears
			// that leadership is gone.
		drain:
			for {
				select {
				case isLeader := <-notify:
					deliver(isLeader)
				default:
					break drain
				}
			}
			deliver(false)
			return
		}
	}
}

// fatal stops the node when its state store failed to commit applied entries: serving on
// would answer from a state behind the log. A restart replays from the store's index.
func (n *Node) fatal(err error) {
	n.log.Error("raft: cannot apply the log; stopping this node", "id", n.cfg.ID, "err", err)
	_ = n.Close()
}

// Close stops the node gracefully: a leader first hands leadership to another voter, so the
// site does not wait out an election timeout. It does not close the Store.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		if n.raft.State() == hraft.Leader && n.voters() > 1 {
			if err := n.raft.LeadershipTransfer().Error(); err != nil {
				n.log.Warn("raft: leadership transfer on close failed", "id", n.cfg.ID, "err", err)
			}
		}
		close(n.stop)
		n.fwdSrv.close()
		var errs []error
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft: shutdown: %w", err))
		}
		close(n.raftDown)
		n.raft.DeregisterObserver(n.observer)
		n.fwd.close()
		if err := n.transport.Close(); err != nil {
			errs = append(errs, fmt.Errorf("raft: close transport: %w", err))
		}
		n.sl.wait()
		n.wg.Wait()
		if err := n.logs.Close(); err != nil {
			errs = append(errs, fmt.Errorf("raft: close log store: %w", err))
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// await waits for f like f.Error(), but no longer than raft runs. raft buffers Apply and
// Barrier requests (BatchApplyCh) and VerifyLeader requests, and one still in its buffer when
// raft shuts down is never answered: f.Error() would block forever, and a commit waiting so held
// Close (seen once in the site tests). Once raft is down a wait may end with ErrRaftShutdown
// even if an answer was on its way: an unknown outcome, which every caller already handles.
// The goroutine left waiting on a future never answered stays blocked; there is one per
// request cut off by the shutdown.
func (n *Node) await(f hraft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-n.raftDown:
		select {
		case err := <-done:
			return err
		default:
			return hraft.ErrRaftShutdown
		}
	}
}

func (n *Node) voters() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	v := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == hraft.Voter {
			v++
		}
	}
	return v
}
