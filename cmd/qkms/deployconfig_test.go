package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/qkms/qkms/identity"
	"github.com/qkms/qkms/pki"
	"github.com/qkms/qkms/site"
)

// Every node config deploy-config writes loads with site.LoadConfig (which refuses unknown
// fields) and wires the node as the deployment needs.
func TestDeployConfigNodes(t *testing.T) {
	for _, nodes := range []int{1, 3} {
		t.Run(fmt.Sprintf("nodes=%d", nodes), func(t *testing.T) {
			dir := t.TempDir()
			if err := writeDeployConfig(io.Discard, dir, nodes); err != nil {
				t.Fatal(err)
			}
			for i, s := range deploySites {
				other := deploySites[1-i]
				var wantPeers []string
				for j := range nodes {
					wantPeers = append(wantPeers, fmt.Sprintf("%s:%d", other.host(j), portPeer))
				}
				for j := range nodes {
					path := filepath.Join(dir, s.KMEID, s.host(j)+".yaml")
					c, err := site.LoadConfig(path)
					if err != nil {
						t.Fatal(err)
					}
					if c.KMEID != s.KMEID || c.NodeID != s.host(j) || c.DataDir != dataMount {
						t.Errorf("%s: kme %q node %q data %q", path, c.KMEID, c.NodeID, c.DataDir)
					}
					if c.Raft.Bootstrap != (j == 0) {
						t.Errorf("%s: bootstrap %v", path, c.Raft.Bootstrap)
					}
					var wantJoin []string
					if j > 0 {
						wantJoin = []string{fmt.Sprintf("%s:%d", s.raftHost(0), portAdmin)}
					}
					if !slices.Equal(c.Raft.Join, wantJoin) {
						t.Errorf("%s: join %v, want %v", path, c.Raft.Join, wantJoin)
					}
					if want := fmt.Sprintf("%s:%d", s.raftHost(j), portRaft); c.Raft.Advertise != want {
						t.Errorf("%s: advertise %q, want %q", path, c.Raft.Advertise, want)
					}
					if len(c.Peers) != 1 || c.Peers[0].KMEID != other.KMEID || !slices.Equal(c.Peers[0].Addrs, wantPeers) {
						t.Errorf("%s: peers %+v, want %s at %v", path, c.Peers, other.KMEID, wantPeers)
					}
					// The peer's ML-DSA public key, so peer messages are signed and checked.
					pub := filepath.Join(dir, s.KMEID, other.KMEID+".audit.pub")
					if want := siteMount + "/" + other.KMEID + ".audit.pub"; len(c.Peers) == 1 && c.Peers[0].IdentityPub != want {
						t.Errorf("%s: identity_pub %q, want %q", path, c.Peers[0].IdentityPub, want)
					}
					if _, err := identity.LoadPublicKey(pub); err != nil {
						t.Errorf("%s: peer public key: %v", path, err)
					}
					for _, ds := range deploySites {
						for _, sae := range ds.SAEs {
							if c.SAEs[sae] != ds.KMEID {
								t.Errorf("%s: SAE %s served by %q, want %s", path, sae, c.SAEs[sae], ds.KMEID)
							}
						}
					}
					if len(c.Upstream) != 1 || c.Upstream[0].Peer != other.KMEID || c.Upstream[0].RemoteSAE != other.KMEID ||
						c.Upstream[0].URL != fmt.Sprintf("https://localhost:%d", s.Port) {
						t.Errorf("%s: upstream %+v", path, c.Upstream)
					}
					// Every file the config names is in the site's directory, mounted at siteMount.
					for _, f := range []string{c.MasterKeyFile, c.TLS.CA, c.TLS.Cert, c.TLS.Key, c.Audit.SigningKeyFile,
						c.Upstream[0].CA, c.Upstream[0].Cert, c.Upstream[0].Key} {
						rel, ok := strings.CutPrefix(f, siteMount+"/")
						if !ok {
							t.Fatalf("%s: %s is not under %s", path, f, siteMount)
						}
						if _, err := os.Stat(filepath.Join(dir, s.KMEID, rel)); err != nil {
							t.Errorf("%s: %v", path, err)
						}
					}
				}
				if _, err := os.Stat(filepath.Join(dir, s.KMEID, s.host(nodes)+".yaml")); err == nil {
					t.Errorf("config for node %s written with --nodes %d", s.host(nodes), nodes)
				}
			}
		})
	}
}

// Secrets are private; KME certificates name every address the node is dialled at; the
// consumers' device certificates survive qkdsim serve re-issuing the device PKI; a second run
// keeps the CAs and master keys.
func TestDeployConfigPKI(t *testing.T) {
	dir := t.TempDir()
	if err := writeDeployConfig(io.Discard, dir, 3); err != nil {
		t.Fatal(err)
	}
	masters := map[string][]byte{} // master key and audit signing key of each site
	for i, s := range deploySites {
		for _, f := range []string{"master.key", s.KMEID + "-key.pem", "device-" + s.KMEID + "-key.pem", s.KMEID + ".audit.key"} {
			fi, err := os.Stat(filepath.Join(dir, s.KMEID, f))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s/%s has mode %v, want 0600", s.KMEID, f, fi.Mode().Perm())
			}
		}
		masters[s.KMEID] = append(readFile(t, filepath.Join(dir, s.KMEID, "master.key")),
			readFile(t, filepath.Join(dir, s.KMEID, s.KMEID+".audit.key"))...)

		roots := certPool(t, filepath.Join(dir, s.KMEID, "ca.pem"))
		kme := parseCert(t, filepath.Join(dir, s.KMEID, s.KMEID+".pem"))
		if _, err := kme.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s certificate: %v", s.KMEID, err)
		}
		if kme.Subject.CommonName != s.KMEID {
			t.Errorf("%s certificate names %q", s.KMEID, kme.Subject.CommonName)
		}
		for j := range 3 {
			for _, h := range []string{s.host(j), s.raftHost(j), s.raftIP(j), "127.0.0.1"} {
				if err := kme.VerifyHostname(h); err != nil {
					t.Errorf("%s certificate: %v", s.KMEID, err)
				}
			}
		}
		for _, h := range []string{deploySites[1-i].host(0), deploySites[1-i].raftIP(0)} {
			if kme.VerifyHostname(h) == nil {
				t.Errorf("%s certificate names %s of the other site", s.KMEID, h)
			}
		}
	}

	// What qkdsim serve does at start: re-issue the device PKI's entities in its directory.
	devices := map[string][]string{}
	for _, s := range deploySites {
		devices[s.Device] = []string{s.KMEID}
	}
	if _, err := pki.WriteDevPKI(filepath.Join(dir, "qkd", "pki"), devices, true); err != nil {
		t.Fatal(err)
	}
	devRoots := certPool(t, filepath.Join(dir, "qkd", "pki", pki.CACertFile))
	for _, s := range deploySites {
		c := parseCert(t, filepath.Join(dir, s.KMEID, "device-"+s.KMEID+".pem"))
		if _, err := c.Verify(x509.VerifyOptions{Roots: devRoots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s device certificate after the device PKI was re-issued: %v", s.KMEID, err)
		}
		if c.Subject.CommonName != s.KMEID || !slices.Equal(c.Subject.OrganizationalUnit, []string{string(pki.RoleSAE)}) {
			t.Errorf("%s device certificate is %q %v, want SAE %s", s.KMEID, c.Subject.CommonName, c.Subject.OrganizationalUnit, s.KMEID)
		}
	}

	ca := readFile(t, filepath.Join(dir, "pki", pki.CACertFile))
	if err := writeDeployConfig(io.Discard, dir, 3); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(readFile(t, filepath.Join(dir, "pki", pki.CACertFile)), ca) {
		t.Error("a second run replaced the CA")
	}
	for _, s := range deploySites {
		again := append(readFile(t, filepath.Join(dir, s.KMEID, "master.key")),
			readFile(t, filepath.Join(dir, s.KMEID, s.KMEID+".audit.key"))...)
		if !slices.Equal(again, masters[s.KMEID]) {
			t.Errorf("a second run replaced %s's master key or audit signing key", s.KMEID)
		}
	}
	if slices.Equal(masters[deploySites[0].KMEID], masters[deploySites[1].KMEID]) {
		t.Error("both sites have the same master key and audit signing key")
	}
}

func TestDeployConfigFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--nodes", "3"}, false}, // no --dir
		{[]string{"--dir", "D", "--nodes", "0"}, false},
		{[]string{"--dir", "D", "--nodes", "4"}, false},
		{[]string{"--dir", "D", "--nodes", "1"}, true},
		{[]string{"--dir", "D"}, true},
		{[]string{"--dir", "D", "extra"}, false},
	} {
		dir := t.TempDir()
		args := slices.Clone(tc.args)
		for i := range args {
			if args[i] == "D" {
				args[i] = filepath.Join(dir, "gen")
			}
		}
		cmd := newDeployConfigCmd()
		cmd.SetArgs(args)
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.Execute()
		if (err == nil) != tc.ok {
			t.Errorf("%v: err %v, want ok=%v", tc.args, err, tc.ok)
		}
	}
}

// composeFile is the part of deploy/compose.yaml the generator's constants must agree with.
type composeFile struct {
	Services map[string]struct {
		Image      string   `yaml:"image"`
		Command    []string `yaml:"command"`
		Volumes    []string `yaml:"volumes"`
		Ports      []string `yaml:"ports"`
		ExtraHosts []string `yaml:"extra_hosts"`
		Networks   map[string]struct {
			Aliases     []string `yaml:"aliases"`
			IPv4Address string   `yaml:"ipv4_address"`
		} `yaml:"networks"`
	} `yaml:"services"`
	Networks map[string]struct {
		Internal bool `yaml:"internal"`
		IPAM     struct {
			Config []struct {
				Subnet string `yaml:"subnet"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
}

// deploy/compose.yaml runs what deploy-config writes: same host names, ports, mounts and
// addresses; nothing is published beyond loopback.
func TestComposeMatchesDeployConfig(t *testing.T) {
	var cf composeFile
	if err := yaml.Unmarshal(readFile(t, filepath.Join("..", "..", "deploy", "compose.yaml")), &cf); err != nil {
		t.Fatal(err)
	}
	const gen = "${QKMS_DEPLOY_DIR:-./generated}"
	subnetOf := func(network string) string {
		n, ok := cf.Networks[network]
		if !ok || len(n.IPAM.Config) != 1 {
			t.Fatalf("network %s: missing or without one ipam subnet", network)
		}
		return n.IPAM.Config[0].Subnet
	}

	qkd, ok := cf.Services["qkd"]
	if !ok {
		t.Fatal("no qkd service")
	}
	if got := qkd.Networks["wan"].IPv4Address; got != deviceIP {
		t.Errorf("qkd address %q, want %s", got, deviceIP)
	}
	if !strings.HasPrefix(deviceIP, strings.TrimSuffix(subnetOf("wan"), "0/24")) {
		t.Errorf("device address %s outside wan subnet %s", deviceIP, subnetOf("wan"))
	}
	cmd := strings.Join(qkd.Command, " ")
	for _, want := range []string{"--dir " + deviceMount, fmt.Sprintf("--listen-a 0.0.0.0:%d", portDeviceA),
		fmt.Sprintf("--listen-b 0.0.0.0:%d", portDeviceB)} {
		if !strings.Contains(cmd, want) {
			t.Errorf("qkd command %q lacks %q", cmd, want)
		}
	}
	if !slices.Contains(qkd.Volumes, gen+"/qkd/pki:"+deviceMount+"/pki") {
		t.Errorf("qkd volumes %v lack the device PKI", qkd.Volumes)
	}

	seen := 1
	for i, s := range deploySites {
		network := "site-" + strings.ToLower(s.Prefix)
		if !cf.Networks[network].Internal {
			t.Errorf("network %s is not internal", network)
		}
		if got := subnetOf(network); got != s.Subnet+".0/24" {
			t.Errorf("network %s subnet %s, want %s.0/24", network, got, s.Subnet)
		}
		for j := range maxDeployNodes {
			name := s.host(j)
			svc, ok := cf.Services[name]
			if !ok {
				t.Fatalf("no service %s", name)
			}
			seen++
			if want := []string{"serve", "--config", siteMount + "/" + name + ".yaml"}; !slices.Equal(svc.Command, want) {
				t.Errorf("%s command %v, want %v", name, svc.Command, want)
			}
			for _, v := range []string{name + "-data:" + dataMount, gen + "/" + s.KMEID + ":" + siteMount + ":ro"} {
				if !slices.Contains(svc.Volumes, v) {
					t.Errorf("%s volumes %v lack %s", name, svc.Volumes, v)
				}
			}
			sn, ok := svc.Networks[network]
			if !ok || !slices.Contains(sn.Aliases, s.raftHost(j)) || sn.IPv4Address != s.raftIP(j) {
				t.Errorf("%s on %s: %+v, want alias %s and address %s", name, network, sn, s.raftHost(j), s.raftIP(j))
			}
			if _, ok := svc.Networks["wan"]; !ok || len(svc.Networks) != 2 {
				t.Errorf("%s networks %v, want %s and wan", name, svc.Networks, network)
			}
			if !slices.Equal(svc.ExtraHosts, []string{"localhost:" + deviceIP}) {
				t.Errorf("%s extra_hosts %v", name, svc.ExtraHosts)
			}
			want := []string{fmt.Sprintf("127.0.0.1:%d:%d", hostETSIPort(i, j), portETSI014),
				fmt.Sprintf("127.0.0.1:%d:%d", hostAdminPort(i, j), portAdmin)}
			if !slices.Equal(svc.Ports, want) {
				t.Errorf("%s ports %v, want %v", name, svc.Ports, want)
			}
		}
	}
	if len(cf.Services) != seen {
		t.Errorf("compose.yaml has %d services, want %d", len(cf.Services), seen)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parseCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(readFile(t, path))
	if b == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func certPool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	p, err := pki.CertPool(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
