package site

import (
	"errors"
	"fmt"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pq"
)

// Config is everything one node of one site needs. It is read from a YAML file (qkms serve
// --config) and may be overridden by flags; README.md documents every field.
type Config struct {
	KMEID  string `yaml:"kme_id"`  // this site's KME ID (the CN of its KME certificate)
	NodeID string `yaml:"node_id"` // this node's ID inside the site's raft cluster
	// DataDir holds the node's bbolt state file, raft log and snapshots.
	DataDir string `yaml:"data_dir"`
	// MasterKeyFile holds the site's 256-bit master key (64 hex chars, mode 0600). Empty: the
	// key is read from the environment variable QKMS_MASTER_KEY. All nodes of a site share it.
	MasterKeyFile string `yaml:"master_key_file"`

	TLS    TLSConfig    `yaml:"tls"`
	Listen ListenConfig `yaml:"listen"`
	Raft   RaftConfig   `yaml:"raft"`

	// Peers are the other sites this site shares QKD links with.
	Peers []PeerConfig `yaml:"peers"`
	// SAEs maps every SAE ID in the network to the KME ID that serves it.
	SAEs map[string]string `yaml:"saes"`

	Limits kms.Limits `yaml:"limits"`
	// Durability says when a write is acknowledged: "fsync" (default) after the raft log and the
	// state store reached the disk, so acknowledged keys survive power loss of the node; "os"
	// once they reached the operating system, which survives a crash of the qkms process
	// (kill -9) but not of the machine — in a 3-node site the other nodes then hold every
	// acknowledged key. "os" multiplies throughput on disks with slow fsync.
	Durability string `yaml:"durability"`

	// RequestTimeout bounds how long an SAE request waits for the site's replicated log (for
	// instance while a new leader is elected) before it is answered 503. Default 5s.
	RequestTimeout time.Duration `yaml:"request_timeout"`

	// KeyTTL is how long an issued key waits for its slaves before it expires and is erased.
	KeyTTL time.Duration `yaml:"key_ttl"`

	// RateLimit bounds, per SAE ID, the keys each SAE may take per second through Get key and
	// (separately) Get key with key IDs at this node; the entry "*" applies to SAEs not listed.
	// No entry, or keys_per_second 0, is unlimited (the default). See ratelimit.go.
	RateLimit map[string]RateLimit `yaml:"rate_limit"`

	// Policies set the key policy of SAE pairs (qkd-only, hybrid, pqc-fallback; policy.go);
	// DefaultPolicy applies to the others (default qkd-only).
	Policies      []PolicyConfig `yaml:"policies"`
	DefaultPolicy string         `yaml:"default_policy"`
	// PQRefresh says when PQ epochs are replaced (default every 65,536 keys or 5 minutes).
	PQRefresh PQRefreshConfig `yaml:"pq_refresh"`

	// Audit configures the audit trail: audit key, signing key, checkpoint spacing.
	Audit AuditConfig `yaml:"audit"`

	// Upstream, when set, takes key from a vendor QKD device speaking ETSI GS QKD 014.
	Upstream []UpstreamConfig `yaml:"upstream"`
}

// TLSConfig names the PEM files of the node's KME certificate and of the CA that signs the
// certificates of SAEs, KMEs and admins.
type TLSConfig struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// ListenConfig holds the node's listener addresses; an empty address disables that listener.
type ListenConfig struct {
	ETSI014 string `yaml:"etsi014"` // ETSI GS QKD 014 REST for SAEs (mTLS)
	Peer    string `yaml:"peer"`    // peer channel for other sites' KMEs (gRPC, mTLS)
	Raft    string `yaml:"raft"`    // raft transport between the nodes of this site (mTLS)
	Admin   string `yaml:"admin"`   // qkms.v1.Admin gRPC for operators and joining nodes (mTLS)
	// GRPC serves qkms.v1.KeyDelivery for SAEs (mTLS), with gRPC health and reflection.
	GRPC string `yaml:"grpc"`
	// Metrics serves Prometheus /metrics over plain HTTP (no secrets, but SAE and KME IDs and
	// traffic figures): bind it to loopback or a management network.
	Metrics string `yaml:"metrics"`
}

// RaftConfig says how the node joins its site's raft cluster.
type RaftConfig struct {
	// Bootstrap makes this node form a new cluster on first start (exactly one node per site).
	Bootstrap bool `yaml:"bootstrap"`
	// Advertise is the raft address other nodes dial; defaults to Listen.Raft.
	Advertise string `yaml:"advertise"`
	// Join lists admin addresses of existing nodes of the site; a node that is not yet a member
	// asks them, in turn, to add it (retrying until one does).
	Join []string `yaml:"join"`
	// SnapshotThreshold is how many log entries since the last snapshot trigger a new one, and
	// TrailingLogs how many entries a snapshot leaves in the log for slow followers; a follower
	// further behind installs the snapshot. 0 keeps the raft defaults (8192 and 10240).
	SnapshotThreshold uint64 `yaml:"snapshot_threshold"`
	TrailingLogs      uint64 `yaml:"trailing_logs"`
	// HeartbeatTimeout is how long a follower goes without hearing from the leader before it
	// stands for election (it waits between one and two of these; the leader sends a heartbeat
	// every tenth of it). ElectionTimeout bounds one election round, and LeaderLeaseTimeout is
	// how long a leader keeps serving without hearing from a quorum (at most HeartbeatTimeout).
	// Default 500ms each: a new leader serves 0.5-1.5 s after the old one died. hashicorp/raft's
	// own defaults (1s, 1s, 500ms) double that; raise them where the nodes' network is slow.
	HeartbeatTimeout   time.Duration `yaml:"heartbeat_timeout"`
	ElectionTimeout    time.Duration `yaml:"election_timeout"`
	LeaderLeaseTimeout time.Duration `yaml:"leader_lease_timeout"`
}

// Default raft timings of a site (RaftConfig).
const (
	DefaultHeartbeatTimeout   = 500 * time.Millisecond
	DefaultElectionTimeout    = 500 * time.Millisecond
	DefaultLeaderLeaseTimeout = 500 * time.Millisecond
)

// PeerConfig names another site and the peer-channel addresses of its nodes (any will do).
type PeerConfig struct {
	KMEID string   `yaml:"kme_id"`
	Addrs []string `yaml:"addrs"`
	// IdentityPub is the peer site's ML-DSA-65 public key file (its audit.signing_key_file
	// with ".pub"). When any peer has one, every peer message is signed and verified
	// (peer.Authenticator) in addition to mutual TLS.
	IdentityPub string `yaml:"identity_pub"`
}

// UpstreamConfig is one vendor QKD device this site consumes as an SAE over ETSI 014. The
// device pair shares a link with Peer: the site whose KME ID sorts first calls enc_keys for
// RemoteSAE; the other learns the key IDs over the peer channel and calls dec_keys.
type UpstreamConfig struct {
	Peer      string `yaml:"peer"`       // KME ID of the qkms site at the other end of the link
	URL       string `yaml:"url"`        // https://device:port of this end's device
	RemoteSAE string `yaml:"remote_sae"` // SAE ID the other qkms site has at its own device
	CA        string `yaml:"ca"`
	Cert      string `yaml:"cert"` // this site's SAE certificate at its device
	Key       string `yaml:"key"`
	// KeySize is the size of the keys taken from the device, in bits (default 8192).
	KeySize int `yaml:"key_size"`
	// Number is the number of keys per enc_keys call (default 16).
	Number int `yaml:"number"`
}

// LoadConfig reads a YAML config file; unknown fields are an error so typos are caught.
func LoadConfig(path string) (Config, error) {
	var c Config
	f, err := os.Open(path)
	if err != nil {
		return c, fmt.Errorf("site: config: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("site: config %s: %w", path, err)
	}
	return c, nil
}

func (c *Config) fill() error {
	if c.KMEID == "" {
		return errors.New("site: config: kme_id is required")
	}
	if c.NodeID == "" {
		c.NodeID = c.KMEID
	}
	if c.DataDir == "" {
		return errors.New("site: config: data_dir is required")
	}
	if c.TLS.CA == "" || c.TLS.Cert == "" || c.TLS.Key == "" {
		return errors.New("site: config: tls.ca, tls.cert and tls.key are required (run `qkms certs` for a development PKI)")
	}
	switch c.Durability {
	case "":
		c.Durability = "fsync"
	case "fsync", "os":
	default:
		return fmt.Errorf("site: config: durability %q: want fsync or os", c.Durability)
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.KeyTTL <= 0 {
		c.KeyTTL = 10 * time.Minute
	}
	if c.DefaultPolicy == "" {
		c.DefaultPolicy = PolicyQKDOnly
	}
	if err := checkPolicy(c.DefaultPolicy); err != nil {
		return err
	}
	for _, p := range c.Policies {
		if err := checkPolicy(p.Mode); err != nil {
			return err
		}
	}
	if c.PQRefresh.Keys == 0 {
		c.PQRefresh.Keys = pq.DefaultRefresh.MaxKeys
	}
	if c.PQRefresh.Every <= 0 {
		c.PQRefresh.Every = pq.DefaultRefresh.MaxAge
	}
	if c.Raft.Advertise == "" {
		c.Raft.Advertise = c.Listen.Raft
	}
	r := &c.Raft
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"heartbeat_timeout", &r.HeartbeatTimeout, DefaultHeartbeatTimeout},
		{"election_timeout", &r.ElectionTimeout, DefaultElectionTimeout},
		{"leader_lease_timeout", &r.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout},
	} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 50*time.Millisecond:
			return fmt.Errorf("site: config: raft.%s %s: must be at least 50ms", d.name, *d.v)
		}
	}
	if r.LeaderLeaseTimeout > r.HeartbeatTimeout {
		return fmt.Errorf("site: config: raft.leader_lease_timeout %s exceeds raft.heartbeat_timeout %s: a leader must step down before its followers elect another",
			r.LeaderLeaseTimeout, r.HeartbeatTimeout)
	}
	for sae, l := range c.RateLimit {
		if err := l.validate(sae); err != nil {
			return err
		}
	}
	for i := range c.Upstream {
		u := &c.Upstream[i]
		if u.KeySize == 0 {
			u.KeySize = 8192
		}
		if u.Number == 0 {
			u.Number = 16
		}
	}
	return nil
}
