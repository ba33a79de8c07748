package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/qkms/qkms/identity"
	"github.com/qkms/qkms/pki"
	"github.com/qkms/qkms/store"
)

// `qkms deploy-config` writes everything deploy/compose.yaml mounts: the PKI, the per-site
// master keys, one `qkms serve` config per node and the PKI of the simulated QKD device pair.
// The constants below are the contract with deploy/compose.yaml (container host names, ports,
// mount points, the device's fixed address); deployconfig_test.go checks that both agree.

// Paths inside the containers.
const (
	siteMount   = "/etc/qkms"     // generated/<KME_ID>, read-only
	dataMount   = "/var/lib/qkms" // a named volume per node
	deviceMount = "/qkd"          // qkdsim serve --dir; generated/qkd/pki is bind-mounted under it
)

// Ports inside the containers (the same in every node; each node is its own host).
const (
	portETSI014 = 8443
	portPeer    = 9443
	portRaft    = 7443
	portAdmin   = 7444
	portDeviceA = 8441 // ETSI 014 of the simulated device QKD-A (consumed by KME-A)
	portDeviceB = 8442 // ETSI 014 of QKD-B (consumed by KME-B)
)

// deviceIP is the fixed address of the device container on the shared network (subnet
// 172.29.77.0/24 in compose.yaml). The sites reach the devices as "localhost" mapped to this
// address (compose extra_hosts), because `qkdsim serve` issues its device certificates for
// 127.0.0.1, ::1 and localhost only, and the sites' ETSI 014 client verifies the host name.
const deviceIP = "172.29.77.10"

// Published ports on the host's loopback: ETSI 014 and admin of every node, so that host clients
// (SAEs, qkmsctl) can move to another node when one is killed.
func hostETSIPort(site, node int) int  { return 18441 + 10*site + node }
func hostAdminPort(site, node int) int { return 19441 + 10*site + node }

// deploySite is one site of the deployment.
type deploySite struct {
	KMEID  string
	Prefix string   // container host names are Prefix + node number: a1, a2, a3
	SAEs   []string // the SAEs it serves
	Device string   // KME ID of its simulated QKD device
	Port   int      // that device's ETSI 014 port
	// Subnet is the first three octets of the site network (a /24 in compose.yaml); node j has
	// the fixed address Subnet.(11+j) there.
	Subnet string
}

var deploySites = [2]deploySite{
	{KMEID: "KME-A", Prefix: "a", SAEs: []string{"SAE-A1", "SAE-A2"}, Device: "QKD-A", Port: portDeviceA, Subnet: "172.29.78"},
	{KMEID: "KME-B", Prefix: "b", SAEs: []string{"SAE-B1", "SAE-B2"}, Device: "QKD-B", Port: portDeviceB, Subnet: "172.29.79"},
}

// maxDeployNodes bounds --nodes: compose.yaml defines three nodes per site.
const maxDeployNodes = 3

// host is the container host name of node j (0-based) of site s, reachable on every network
// the node is on; raftHost is its alias on its site's network only, so raft and joins travel
// on the site network and `docker network disconnect` of that network partitions the node.
func (s deploySite) host(j int) string     { return fmt.Sprintf("%s%d", s.Prefix, j+1) }
func (s deploySite) raftHost(j int) string { return s.host(j) + "-site" }

// raftIP is node j's fixed address on its site network. The KME certificates name it because
// the raft configuration records the bootstrapping node by the address its advertised name
// resolved to at start (raft/transport.go resolves Advertise), so followers dial the first node
// by IP; fixed addresses also keep that record valid when a container is restarted.
func (s deploySite) raftIP(j int) string { return fmt.Sprintf("%s.%d", s.Subnet, 11+j) }

// nodeConfig is the YAML of `qkms serve --config` (the fields of site.Config that a deployment
// sets; the test loads every file with site.LoadConfig, which refuses unknown fields).
type nodeConfig struct {
	KMEID         string            `yaml:"kme_id"`
	NodeID        string            `yaml:"node_id"`
	DataDir       string            `yaml:"data_dir"`
	MasterKeyFile string            `yaml:"master_key_file"`
	TLS           tlsFiles          `yaml:"tls"`
	Listen        nodeListen        `yaml:"listen"`
	Raft          nodeRaft          `yaml:"raft"`
	Peers         []nodePeer        `yaml:"peers"`
	SAEs          map[string]string `yaml:"saes"`
	Upstream      []nodeUpstream    `yaml:"upstream"`
	Audit         nodeAudit         `yaml:"audit"`
}

type nodeAudit struct {
	SigningKeyFile string `yaml:"signing_key_file"`
}

type tlsFiles struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

type nodeListen struct {
	ETSI014 string `yaml:"etsi014"`
	Peer    string `yaml:"peer"`
	Raft    string `yaml:"raft"`
	Admin   string `yaml:"admin"`
}

type nodeRaft struct {
	Bootstrap bool     `yaml:"bootstrap,omitempty"`
	Advertise string   `yaml:"advertise"`
	Join      []string `yaml:"join,omitempty"`
}

type nodePeer struct {
	KMEID       string   `yaml:"kme_id"`
	Addrs       []string `yaml:"addrs"`
	IdentityPub string   `yaml:"identity_pub"`
}

type nodeUpstream struct {
	Peer      string `yaml:"peer"`
	URL       string `yaml:"url"`
	RemoteSAE string `yaml:"remote_sae"`
	CA        string `yaml:"ca"`
	Cert      string `yaml:"cert"`
	Key       string `yaml:"key"`
	KeySize   int    `yaml:"key_size"`
	Number    int    `yaml:"number"`
}

// Upstream request shape: 4 keys of 4096 bits per enc_keys call keeps each call within what the
// paced simulated link holds soon after start, so the sites fill without long retry back-offs.
const (
	upstreamKeySize = 4096
	upstreamNumber  = 4
)

func newDeployConfigCmd() *cobra.Command {
	var (
		dir   string
		nodes int
	)
	cmd := &cobra.Command{
		Use:   "deploy-config --dir deploy/generated [--nodes 3]",
		Short: "write certificates, master keys and node configs for deploy/compose.yaml",
		Long: `deploy-config writes what the container deployment (deploy/compose.yaml) mounts:

  DIR/pki/         development CA, KME certificates with SANs for every container host name,
                   SAE and admin certificates (host clients use these)
  DIR/KME-A/       what KME-A's containers mount at /etc/qkms: ca.pem, KME-A.pem + key, the site's
                   master.key (mode 0600), KME-A.audit.key (audit signing key, public key in
                   KME-A.audit.pub), device-*.pem (KME-A's SAE certificate at its QKD device),
                   and a1.yaml, a2.yaml, a3.yaml (one qkms serve config per node)
  DIR/KME-B/       the same for KME-B (b1, b2, b3)
  DIR/qkd/pki/     the device pair's CA, reused by 'qkdsim serve' in the device container
  DIR/deploy.json  host endpoints in the demo.json format, for 'qkms bench --demo' and
                   'qkmsctl --demo DIR/deploy.json --site KME-A'

Running it again keeps the CAs and master keys (existing volumes stay readable) and rewrites
certificates and configs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("deploy-config: --dir is required")
			}
			if nodes < 1 || nodes > maxDeployNodes {
				return fmt.Errorf("deploy-config: --nodes must be 1 to %d (compose.yaml runs up to %d nodes per site), got %d",
					maxDeployNodes, maxDeployNodes, nodes)
			}
			return writeDeployConfig(cmd.OutOrStdout(), dir, nodes)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory to write into (compose.yaml expects deploy/generated)")
	cmd.Flags().IntVar(&nodes, "nodes", 3, "nodes per site")
	return cmd
}

// writeDeployConfig writes the whole deployment into dir.
func writeDeployConfig(w io.Writer, dir string, nodes int) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("deploy-config: %w", err)
	}
	// One call per site so that each KME certificate names only its own site's hosts; the
	// second call reuses the CA the first wrote.
	var layout pki.Layout
	for _, s := range deploySites {
		var hosts []string
		for j := range nodes {
			hosts = append(hosts, s.host(j), s.raftHost(j), s.raftIP(j))
		}
		l, err := pki.WriteDevPKI(filepath.Join(abs, "pki"), map[string][]string{s.KMEID: s.SAEs}, true, hosts...)
		if err != nil {
			return fmt.Errorf("deploy-config: %w", err)
		}
		layout.Dir, layout.CACert, layout.CAKey = l.Dir, l.CACert, l.CAKey
		layout.Entities = append(layout.Entities, l.Entities...)
	}
	// The device pair's PKI: qkdsim serve rewrites the entity files at start but keeps this CA,
	// so the consumer certificates copied to the sites below stay valid.
	devices := map[string][]string{}
	for _, s := range deploySites {
		devices[s.Device] = []string{s.KMEID}
	}
	devLayout, err := pki.WriteDevPKI(filepath.Join(abs, "qkd", "pki"), devices, true)
	if err != nil {
		return fmt.Errorf("deploy-config: device PKI: %w", err)
	}

	registry := map[string]string{}
	for _, s := range deploySites {
		for _, sae := range s.SAEs {
			registry[sae] = s.KMEID
		}
	}
	// Each site's ML-DSA-65 key signs its audit checkpoints and its peer-channel messages; the
	// other site verifies those with the public key, so both keys exist before either site's
	// files are written (each site's directory gets a copy of the other's public key).
	for _, s := range deploySites {
		siteDir := filepath.Join(abs, s.KMEID)
		if err := os.MkdirAll(siteDir, 0o700); err != nil {
			return err
		}
		if _, err := identity.LoadOrCreate(filepath.Join(siteDir, s.KMEID+".audit.key")); err != nil {
			return fmt.Errorf("deploy-config: site %s: signing key: %w", s.KMEID, err)
		}
	}
	for i, s := range deploySites {
		if err := writeSite(abs, layout, devLayout, i, nodes, registry); err != nil {
			return fmt.Errorf("deploy-config: site %s: %w", s.KMEID, err)
		}
	}
	if err := writeDeployEndpoints(abs, layout, nodes); err != nil {
		return err
	}
	fmt.Fprintf(w, "deployment of %d node(s) per site written to %s\n", nodes, abs)
	fmt.Fprintf(w, "  host clients: CA %s, SAE certificates in %s\n", layout.CACert, layout.Dir)
	for i, s := range deploySites {
		fmt.Fprintf(w, "  %s: ETSI 014 https://127.0.0.1:%d (node %s), admin 127.0.0.1:%d\n",
			s.KMEID, hostETSIPort(i, 0), s.host(0), hostAdminPort(i, 0))
	}
	fmt.Fprintf(w, "  endpoints for `qkms bench --demo`: %s\n", filepath.Join(abs, "deploy.json"))
	return nil
}

// writeSite fills DIR/<KME_ID>: the files the site's containers mount at siteMount.
func writeSite(abs string, layout, devLayout pki.Layout, i, nodes int, registry map[string]string) error {
	s := deploySites[i]
	other := deploySites[1-i]
	siteDir := filepath.Join(abs, s.KMEID)
	if err := os.MkdirAll(siteDir, 0o700); err != nil {
		return err
	}
	kme, _ := layout.Find(s.KMEID)
	consumer, _ := devLayout.Find(s.KMEID)
	copies := []struct {
		from, to string
		mode     os.FileMode
	}{
		{layout.CACert, "ca.pem", 0o644},
		{kme.Cert, s.KMEID + ".pem", 0o644},
		{kme.Key, s.KMEID + "-key.pem", 0o600},
		{devLayout.CACert, "device-ca.pem", 0o644},
		{consumer.Cert, "device-" + s.KMEID + ".pem", 0o644},
		{consumer.Key, "device-" + s.KMEID + "-key.pem", 0o600},
		{filepath.Join(abs, other.KMEID, other.KMEID+".audit.pub"), other.KMEID + ".audit.pub", 0o644},
	}
	for _, c := range copies {
		if err := copyFile(c.from, filepath.Join(siteDir, c.to), c.mode); err != nil {
			return err
		}
	}
	// All nodes of a site share the master key (the raft log carries sealed material); keep an
	// existing one so the data volumes of an earlier run stay readable.
	keyFile := filepath.Join(siteDir, "master.key")
	if _, err := os.Stat(keyFile); errors.Is(err, fs.ErrNotExist) {
		if err := store.GenerateMasterKey(keyFile); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("master key: %w", err)
	}

	// The audit signing key (ML-DSA-65) must be the same file on every node of a site and
	// /etc/qkms is read-only in the containers, so it is created here, with its public key
	// beside it for auditors.
	auditKey := s.KMEID + ".audit.key"
	if _, err := identity.LoadOrCreate(filepath.Join(siteDir, auditKey)); err != nil {
		return err
	}

	var peerAddrs []string
	for j := range nodes {
		peerAddrs = append(peerAddrs, fmt.Sprintf("%s:%d", other.host(j), portPeer))
	}
	in := func(name string) string { return siteMount + "/" + name }
	for j := range nodes {
		c := nodeConfig{
			KMEID: s.KMEID, NodeID: s.host(j), DataDir: dataMount, MasterKeyFile: in("master.key"),
			TLS: tlsFiles{CA: in("ca.pem"), Cert: in(s.KMEID + ".pem"), Key: in(s.KMEID + "-key.pem")},
			Listen: nodeListen{
				ETSI014: fmt.Sprintf("0.0.0.0:%d", portETSI014), Peer: fmt.Sprintf("0.0.0.0:%d", portPeer),
				Raft: fmt.Sprintf("0.0.0.0:%d", portRaft), Admin: fmt.Sprintf("0.0.0.0:%d", portAdmin),
			},
			Raft:  nodeRaft{Bootstrap: j == 0, Advertise: fmt.Sprintf("%s:%d", s.raftHost(j), portRaft)},
			Peers: []nodePeer{{KMEID: other.KMEID, Addrs: peerAddrs, IdentityPub: in(other.KMEID + ".audit.pub")}},
			SAEs:  registry,
			// Every node names the device: the leader pulls from it (master end) and any node
			// answering the peer fetches announced keys from it (slave end).
			Upstream: []nodeUpstream{{
				Peer: other.KMEID, URL: fmt.Sprintf("https://localhost:%d", s.Port), RemoteSAE: other.KMEID,
				CA: in("device-ca.pem"), Cert: in("device-" + s.KMEID + ".pem"), Key: in("device-" + s.KMEID + "-key.pem"),
				KeySize: upstreamKeySize, Number: upstreamNumber,
			}},
			Audit: nodeAudit{SigningKeyFile: in(auditKey)},
		}
		if j > 0 {
			c.Raft.Join = []string{fmt.Sprintf("%s:%d", s.raftHost(0), portAdmin)}
		}
		var b bytes.Buffer
		enc := yaml.NewEncoder(&b)
		enc.SetIndent(2)
		if err := enc.Encode(c); err != nil {
			return err
		}
		if err := enc.Close(); err != nil {
			return err
		}
		head := fmt.Sprintf("# node %s of site %s, written by `qkms deploy-config`; run by deploy/compose.yaml as\n"+
			"# `qkms serve --config %s/%s.yaml`. README.md documents every field.\n", s.host(j), s.KMEID, siteMount, s.host(j))
		if err := os.WriteFile(filepath.Join(siteDir, s.host(j)+".yaml"), append([]byte(head), b.Bytes()...), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeDeployEndpoints writes DIR/deploy.json: the host's view of the deployment in the format
// of demo.json, so `qkms bench --demo DIR/deploy.json` drives the containers.
func writeDeployEndpoints(abs string, layout pki.Layout, nodes int) error {
	df := demoFile{CA: layout.CACert}
	for i, s := range deploySites {
		ds := demoSite{KMEID: s.KMEID, ETSI014URL: fmt.Sprintf("https://127.0.0.1:%d", hostETSIPort(i, 0)),
			AdminAddr: fmt.Sprintf("127.0.0.1:%d", hostAdminPort(i, 0))}
		for j := range nodes {
			// Peer and raft listeners are not published: only the containers reach them.
			ds.Nodes = append(ds.Nodes, demoNode{NodeID: s.host(j),
				ETSI014URL: fmt.Sprintf("https://127.0.0.1:%d", hostETSIPort(i, j)),
				AdminAddr:  fmt.Sprintf("127.0.0.1:%d", hostAdminPort(i, j))})
		}
		for _, sae := range s.SAEs {
			e, _ := layout.Find(sae)
			ds.SAEs = append(ds.SAEs, demoSAE{SAEID: sae, Cert: e.Cert, Key: e.Key})
		}
		if e, ok := layout.Find(pki.AdminID(s.KMEID)); ok {
			ds.AdminCert, ds.AdminKey = e.Cert, e.Key
		}
		df.Sites = append(df.Sites, ds)
	}
	b, _ := json.MarshalIndent(df, "", "  ")
	if err := os.WriteFile(filepath.Join(abs, "deploy.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("deploy-config: %w", err)
	}
	return nil
}

// copyFile copies a PEM file, replacing dst so that its mode is exactly mode.
func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		return err
	}
	return nil
}
