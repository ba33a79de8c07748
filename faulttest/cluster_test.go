package faulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"gopkg.in/yaml.v3"

	"github.com/qkms/qkms/api/etsi014"
	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/identity"
	"github.com/qkms/qkms/pki"
	"github.com/qkms/qkms/site"
	"github.com/qkms/qkms/store"
)

// qkmsBin is the qkms binary built once for the whole test run by TestMain.
var qkmsBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() || runtime.GOOS != "linux" {
		os.Exit(m.Run()) // the fault tests skip themselves
	}
	if bin := os.Getenv("QKMS_FAULT_BIN"); bin != "" {
		qkmsBin = bin // a prebuilt binary (e.g. of another revision)
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "qkms-faulttest-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	qkmsBin = filepath.Join(dir, "qkms")
	build := exec.Command("go", "build", "-o", qkmsBin, "./cmd/qkms")
	build.Dir = ".." // the module root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "faulttest: go build ./cmd/qkms:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	kmes = [2]string{"KME-A", "KME-B"}
	saes = [2][]string{{"SAE-A1", "SAE-A2"}, {"SAE-B1", "SAE-B2"}}
)

// node is one qkms process and the proxies in front of its raft and peer listeners.
type node struct {
	site, idx int
	id        string
	proc      *Process
	etsi      string // ETSI 014 listener (clients connect directly)
	metrics   string // Prometheus listener
	raftProxy *Proxy // advertised raft address; relays to the node's raft listener
	peerProxy *Proxy // the address the other site dials; relays to the node's peer listener
	admin     keyspb.AdminClient
	adminConn *grpc.ClientConn
	clients   map[string]*etsi014.Client // per SAE of this site
}

// network is two 3-node sites fed by an in-process simulated QKD device pair.
type network struct {
	t       testing.TB
	dir     string
	layout  pki.Layout
	devices *site.Pair
	nodes   [2][3]*node
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// freeAddr picks a free loopback port for a node process to bind later. It draws below
// Linux's ephemeral range (32768 and up), where the kernel hands out ports to every other
// listener and outgoing connection on the machine, so the port is unlikely to be taken in the
// time between this check and the process binding it; ports it handed out are not handed out
// again.
func freeAddr(t testing.TB) string {
	for range 1000 {
		port := 20000 + mrand.IntN(12000)
		if !takenPorts.take(port) {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		return ln.Addr().String()
	}
	t.Fatal("no free loopback port between 20000 and 32000")
	return ""
}

// takenPorts remembers the ports freeAddr handed out in this test process.
var takenPorts = portSet{m: map[int]bool{}}

type portSet struct {
	mu sync.Mutex
	m  map[int]bool
}

// take marks port as handed out and reports whether it was free before.
func (s *portSet) take(port int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[port] {
		return false
	}
	s.m[port] = true
	return true
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// startDevices runs the QKD device pair in this process, as site/upstream_test.go does: two
// single-node "sites" QKD-A and QKD-B whose SAEs are the qkms sites, fed identical random blocks
// (what a QKD link delivers at both ends), and keeps their pools filled in the background.
func (nw *network) startDevices(ctx context.Context) {
	t := nw.t
	dev, err := site.StartPair(site.PairConfig{
		Dir: filepath.Join(nw.dir, "devices"), KMEs: [2]string{"QKD-A", "QKD-B"},
		SAEs: [2][]string{{kmes[0]}, {kmes[1]}}, Logger: quietLogger(), KeyTTL: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	nw.devices = dev
	var seq uint64
	feed := func(n int) error {
		for range n {
			blk := make([]byte, 64<<10)
			rand.Read(blk)
			id := fmt.Sprintf("blk-%d", seq)
			if err := dev.Sites[0].Ingest(ctx, "QKD-B", id, seq, bytes.Clone(blk), 0.02); err != nil {
				return err
			}
			if err := dev.Sites[1].Ingest(ctx, "QKD-A", id, seq, blk, 0.02); err != nil {
				return err
			}
			seq++
		}
		return nil
	}
	if err := feed(96); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := dev.WaitForKey(wctx, 1<<20); err != nil {
		t.Fatal(err)
	}
	nw.wg.Add(1)
	go func() {
		defer nw.wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if dev.Sites[0].Available("QKD-B") < 3<<20 {
				if err := feed(32); err != nil && ctx.Err() == nil {
					t.Logf("feeding the QKD devices: %v", err)
				}
			}
		}
	}()
}

// startNetwork writes the PKI, master keys and configs of two 3-node sites and starts them.
func startNetwork(t testing.TB) *network {
	nw := &network{t: t, dir: t.TempDir()}
	ctx, cancel := context.WithCancel(context.Background())
	nw.stop = cancel
	t.Cleanup(nw.close)
	nw.startDevices(ctx)

	layout, err := pki.WriteDevPKI(filepath.Join(nw.dir, "pki"),
		map[string][]string{kmes[0]: saes[0], kmes[1]: saes[1]}, true)
	if err != nil {
		t.Fatal(err)
	}
	nw.layout = layout
	registry := map[string]string{}
	for i, k := range kmes {
		for _, s := range saes[i] {
			registry[s] = k
		}
	}
	// Listener addresses and proxies first: each site's config names the other's peer proxies.
	type addrs struct{ etsi, peer, raft, admin, metrics string }
	var la [2][3]addrs
	for i := range kmes {
		for j := range 3 {
			a := addrs{freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)}
			la[i][j] = a
			n := &node{site: i, idx: j, id: fmt.Sprintf("%s-%d", kmes[i], j+1), etsi: a.etsi, metrics: a.metrics,
				clients: map[string]*etsi014.Client{}}
			if n.raftProxy, err = NewProxy("127.0.0.1:0", a.raft); err != nil {
				t.Fatal(err)
			}
			n.raftProxy.Source = nw.raftSource(i)
			if n.peerProxy, err = NewProxy("127.0.0.1:0", a.peer); err != nil {
				t.Fatal(err)
			}
			nw.nodes[i][j] = n
		}
	}
	// Each site's ML-DSA identity (its nodes find it beside the KME certificate), made before
	// the nodes start so that each site can name the other's public key: peer messages are then
	// authenticated as in a real deployment, signed or, once the sites share a PQ epoch, under
	// its MAC key.
	identityPub := map[string]string{}
	for _, k := range kmes {
		kme, _ := layout.Find(k)
		keyFile := filepath.Join(filepath.Dir(kme.Cert), k+".audit.key")
		if _, err := identity.LoadOrCreate(keyFile); err != nil {
			t.Fatal(err)
		}
		identityPub[k] = identity.PublicKeyPath(keyFile)
	}
	for i, k := range kmes {
		siteDir := filepath.Join(nw.dir, k)
		if err := os.MkdirAll(siteDir, 0o700); err != nil {
			t.Fatal(err)
		}
		keyFile := filepath.Join(siteDir, "master.key")
		if err := store.GenerateMasterKey(keyFile); err != nil {
			t.Fatal(err)
		}
		kme, _ := layout.Find(k)
		devSAE, _ := nw.devices.Layout.Find(k)
		var peerAddrs []string
		for _, o := range nw.nodes[1-i] {
			peerAddrs = append(peerAddrs, o.peerProxy.Addr())
		}
		joins := []string{la[i][0].admin}
		for j, n := range nw.nodes[i] {
			a := la[i][j]
			cfg := site.Config{
				KMEID: k, NodeID: n.id, DataDir: filepath.Join(siteDir, fmt.Sprintf("node%d", j+1)),
				MasterKeyFile: keyFile,
				TLS:           site.TLSConfig{CA: layout.CACert, Cert: kme.Cert, Key: kme.Key},
				Listen:        site.ListenConfig{ETSI014: a.etsi, Peer: a.peer, Raft: a.raft, Admin: a.admin, Metrics: a.metrics},
				Raft: site.RaftConfig{Bootstrap: j == 0, Advertise: n.raftProxy.Addr(),
					SnapshotThreshold: trailingLogs, TrailingLogs: trailingLogs},
				Peers: []site.PeerConfig{{KMEID: kmes[1-i], Addrs: peerAddrs, IdentityPub: identityPub[kmes[1-i]]}},
				SAEs:  registry,
				// Long enough that no acknowledged key expires during a run: every one must
				// still be fetchable after healing.
				KeyTTL: 2 * time.Hour,
				Upstream: []site.UpstreamConfig{{
					Peer: kmes[1-i], URL: "https://" + nw.devices.Sites[i].ETSI014Addr(), RemoteSAE: kmes[1-i],
					CA: nw.devices.Layout.CACert, Cert: devSAE.Cert, Key: devSAE.Key, KeySize: 8192, Number: 16,
				}},
			}
			if j > 0 {
				cfg.Raft.Join = joins
			}
			b, err := yaml.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(siteDir, n.id+".yaml")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			n.proc = &Process{Bin: qkmsBin, Config: path, Log: filepath.Join(siteDir, n.id+".log")}
			n.adminConn, n.admin = nw.adminClient(k, a.admin)
			for _, s := range saes[i] {
				e, _ := layout.Find(s)
				tc, err := pki.ClientConfig(e.Cert, e.Key, layout.CACert)
				if err != nil {
					t.Fatal(err)
				}
				n.clients[s] = etsi014.NewClient("https://"+a.etsi, tc)
			}
		}
	}
	// Bootstrap node 1 of each site, then let the others join through the admin listeners.
	for i := range kmes {
		if err := nw.nodes[i][0].proc.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range kmes {
		nw.waitLeader(i, nw.nodes[i][0], 30*time.Second)
		for _, n := range nw.nodes[i][1:] {
			if err := n.proc.Start(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range kmes {
		if err := nw.waitHealthy(i, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	nw.waitKey(4096)
	return nw
}

// raftSource names, for the raft proxies of site i, which node's process opened a connection.
func (nw *network) raftSource(i int) func(net.Conn) int {
	return func(c net.Conn) int {
		pids := map[int]int{}
		var list []int
		for j, n := range nw.nodes[i] {
			if n == nil || n.proc == nil {
				continue
			}
			if pid := n.proc.Pid(); pid != 0 {
				pids[pid] = j
				list = append(list, pid)
			}
		}
		if pid := SocketOwner(c, list); pid > 0 {
			return pids[pid]
		}
		return -1
	}
}

func (nw *network) adminClient(kme, addr string) (*grpc.ClientConn, keyspb.AdminClient) {
	e, ok := nw.layout.Find(pki.AdminID(kme))
	if !ok {
		nw.t.Fatalf("no admin certificate for %s", kme)
	}
	tc, err := pki.ClientConfig(e.Cert, e.Key, nw.layout.CACert)
	if err != nil {
		nw.t.Fatal(err)
	}
	// Redial quickly after a node restarts: grpc's default backoff grows to two minutes.
	bc := backoff.DefaultConfig
	bc.MaxDelay = 200 * time.Millisecond
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: time.Second}))
	if err != nil {
		nw.t.Fatal(err)
	}
	return conn, keyspb.NewAdminClient(conn)
}

func (nw *network) status(n *node) (*keyspb.ClusterStatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return n.admin.ClusterStatus(ctx, &keyspb.ClusterStatusRequest{})
}

// poll calls f every 50 ms until it reports done or the timeout passes. Cluster state changes
// have no notification a test could wait on from another process; polling ClusterStatus is
// the synchronisation.
func poll(timeout time.Duration, f func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !f() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

func (nw *network) waitLeader(i int, n *node, timeout time.Duration) {
	ok := poll(timeout, func() bool {
		st, err := nw.status(n)
		return err == nil && st.LeaderId == n.id
	})
	if !ok {
		nw.t.Fatalf("%s did not become leader of %s", n.id, kmes[i])
	}
}

// leader returns the node of site i that the running nodes name as leader, or nil.
func (nw *network) leader(i int) *node {
	for _, n := range nw.nodes[i] {
		if !n.proc.Running() {
			continue
		}
		st, err := nw.status(n)
		if err != nil || st.LeaderId == "" {
			continue
		}
		for _, m := range nw.nodes[i] {
			if m.id == st.LeaderId && m.proc.Running() {
				return m
			}
		}
	}
	return nil
}

// waitLeaderOf polls until site i has a leader and returns it.
func (nw *network) waitLeaderOf(i int, timeout time.Duration) (*node, error) {
	var l *node
	if !poll(timeout, func() bool { l = nw.leader(i); return l != nil }) {
		return nil, fmt.Errorf("site %s has no leader after %v", kmes[i], timeout)
	}
	return l, nil
}

// waitHealthy polls until every node of site i answers, all name the same leader, and the
// site has its three members.
func (nw *network) waitHealthy(i int, timeout time.Duration) error {
	var last string
	ok := poll(timeout, func() bool {
		leader := ""
		for _, n := range nw.nodes[i] {
			st, err := nw.status(n)
			if err != nil {
				last = fmt.Sprintf("%s: %v", n.id, err)
				return false
			}
			if st.LeaderId == "" || (leader != "" && st.LeaderId != leader) || len(st.Members) != 3 {
				last = fmt.Sprintf("%s sees leader %q and %d members", n.id, st.LeaderId, len(st.Members))
				return false
			}
			leader = st.LeaderId
		}
		return true
	})
	if !ok {
		return fmt.Errorf("site %s not healthy after %v: %s", kmes[i], timeout, last)
	}
	return nil
}

// waitKey polls until each site can issue count keys for the other.
func (nw *network) waitKey(count int) {
	ok := poll(90*time.Second, func() bool {
		for i := range kmes {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := nw.nodes[i][0].clients[saes[i][0]].Status(ctx, saes[1-i][0])
			cancel()
			if err != nil || st.StoredKeyCount < count {
				return false
			}
		}
		return true
	})
	if !ok {
		nw.t.Fatalf("the sites did not get %d keys from their QKD devices", count)
	}
}

// waitConverged polls until all nodes of site i report the same StateDigest.
func (nw *network) waitConverged(i int, timeout time.Duration) error {
	var last string
	ok := poll(timeout, func() bool {
		var first []byte
		for _, n := range nw.nodes[i] {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			d, err := n.admin.StateDigest(ctx, &keyspb.StateDigestRequest{})
			cancel()
			if err != nil {
				last = err.Error()
				return false
			}
			if first == nil {
				first = d.Digest
			} else if !bytes.Equal(first, d.Digest) {
				last = fmt.Sprintf("%s differs (applied %d)", n.id, d.AppliedIndex)
				return false
			}
		}
		return true
	})
	if !ok {
		return fmt.Errorf("site %s did not converge to one state digest in %v: %s", kmes[i], timeout, last)
	}
	return nil
}

// logContains reports whether node n's log holds s.
func (n *node) logContains(s string) bool {
	b, err := os.ReadFile(n.proc.Log)
	return err == nil && bytes.Contains(bytes.ToLower(b), []byte(strings.ToLower(s)))
}

func (nw *network) close() {
	if nw.t.Failed() {
		nw.keepLogs()
	}
	for i := range nw.nodes {
		for _, n := range nw.nodes[i] {
			if n == nil {
				continue
			}
			if n.proc != nil {
				n.proc.Kill()
			}
			if n.adminConn != nil {
				n.adminConn.Close()
			}
			n.raftProxy.Close()
			n.peerProxy.Close()
		}
	}
	if nw.stop != nil {
		nw.stop()
	}
	nw.wg.Wait()
	if nw.devices != nil {
		nw.devices.Close()
	}
}

// keepLogs copies the nodes' logs of a failed run next to its history (QKMS_FAULT_OUT or a
// temporary directory), since the test's own directory is removed.
func (nw *network) keepLogs() {
	dir := os.Getenv("QKMS_FAULT_OUT")
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "qkms-fault-"); err != nil {
			return
		}
	}
	dir = filepath.Join(dir, "logs-"+filepath.Base(nw.dir))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	for _, s := range nw.nodes {
		for _, n := range s {
			if n == nil || n.proc == nil {
				continue
			}
			if b, err := os.ReadFile(n.proc.Log); err == nil {
				os.WriteFile(filepath.Join(dir, n.id+".log"), b, 0o644)
			}
		}
	}
	nw.t.Logf("node logs kept in %s", dir)
}

// envelopes sums, over the running nodes, the peer-channel envelopes they made of each kind
// (qkms_peer_envelopes_total; a restarted node counts from zero).
func (nw *network) envelopes() (mac, signed float64) {
	for _, site := range nw.nodes {
		for _, n := range site {
			resp, err := http.Get("http://" + n.metrics + "/metrics")
			if err != nil {
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, line := range strings.Split(string(body), "\n") {
				var v float64
				if _, err := fmt.Sscanf(line, `qkms_peer_envelopes_total{kind="mac"} %g`, &v); err == nil {
					mac += v
				} else if _, err := fmt.Sscanf(line, `qkms_peer_envelopes_total{kind="signed"} %g`, &v); err == nil {
					signed += v
				}
			}
		}
	}
	return mac, signed
}
