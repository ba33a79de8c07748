package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"gopkg.in/yaml.v3"

	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/pki"
)

// Environment variables of the connection settings.
const (
	envAddr = "QKMS_ADDR"
	envCA   = "QKMS_CA"
	envCert = "QKMS_CERT"
	envKey  = "QKMS_KEY"
)

// options are the global flags.
type options struct {
	addrs   []string
	ca      string
	cert    string
	key     string
	config  string
	demo    string
	site    string
	json    bool
	timeout time.Duration

	cmd *cobra.Command // the root, to ask which flags were given
}

func (o *options) register(root *cobra.Command) {
	o.cmd = root
	f := root.PersistentFlags()
	f.StringSliceVar(&o.addrs, "addr", nil, "admin address(es) of the site's nodes, HOST:PORT, comma separated; tried in turn (env "+envAddr+")")
	f.StringVar(&o.ca, "ca", "", "CA certificate file (env "+envCA+")")
	f.StringVar(&o.cert, "cert", "", "admin certificate file (env "+envCert+")")
	f.StringVar(&o.key, "key", "", "admin private key file (env "+envKey+")")
	f.StringVar(&o.config, "config", "", "YAML config file with addr, ca, cert, key, demo, site")
	f.StringVar(&o.demo, "demo", "", "demo.json written by qkms demo: take the site's admin addresses and certificate")
	f.StringVar(&o.site, "site", "", "KME ID of the demo site to administer (with --demo)")
	f.BoolVar(&o.json, "json", false, "print JSON instead of tables")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "time allowed for each call")
	root.RegisterFlagCompletionFunc("site", func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		d, err := readDemo(o.demo)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var ids []string
		for _, s := range d.Sites {
			ids = append(ids, s.KMEID)
		}
		return ids, cobra.ShellCompDirectiveNoFileComp
	})
}

// settings are the resolved connection settings.
type settings struct {
	Addrs []string
	CA    string
	Cert  string
	Key   string
	Site  string // KME ID the server must present, when known (demo)
}

// fileConfig is the --config YAML file.
type fileConfig struct {
	Addr addrList `yaml:"addr"`
	CA   string   `yaml:"ca"`
	Cert string   `yaml:"cert"`
	Key  string   `yaml:"key"`
	Demo string   `yaml:"demo"`
	Site string   `yaml:"site"`
}

// addrList accepts one address, a comma-separated list or a YAML sequence.
type addrList []string

func (a *addrList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.SequenceNode {
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		*a = l
		return nil
	}
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	*a = splitAddrs(s)
	return nil
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// demoFile is the part of `qkms demo`'s demo.json that qkmsctl reads.
type demoFile struct {
	CA    string `json:"ca"`
	Sites []struct {
		KMEID     string `json:"kme_id"`
		AdminAddr string `json:"admin_addr"`
		AdminCert string `json:"admin_cert"`
		AdminKey  string `json:"admin_key"`
		Nodes     []struct {
			AdminAddr string `json:"admin_addr"`
		} `json:"nodes"`
	} `json:"sites"`
}

func readDemo(path string) (*demoFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read demo file: %w; give the demo.json that `qkms demo --dir DIR` wrote", err)
	}
	var d demoFile
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("demo file %s is not valid JSON (%v); give the demo.json that `qkms demo` wrote", path, err)
	}
	return &d, nil
}

// fromDemo takes the admin addresses and certificate of one site of a demo network. Relative
// paths in the file are relative to its directory.
func fromDemo(path, site string) (settings, error) {
	d, err := readDemo(path)
	if err != nil {
		return settings{}, err
	}
	var ids []string
	for _, s := range d.Sites {
		ids = append(ids, s.KMEID)
	}
	if site == "" {
		if len(d.Sites) != 1 {
			return settings{}, fmt.Errorf("the demo has sites %s; choose one with --site", strings.Join(ids, ", "))
		}
		site = d.Sites[0].KMEID
	}
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(filepath.Dir(path), p)
	}
	for _, s := range d.Sites {
		if s.KMEID != site {
			continue
		}
		st := settings{CA: rel(d.CA), Cert: rel(s.AdminCert), Key: rel(s.AdminKey), Site: site}
		for _, n := range s.Nodes {
			st.Addrs = append(st.Addrs, n.AdminAddr)
		}
		if len(st.Addrs) == 0 && s.AdminAddr != "" {
			st.Addrs = []string{s.AdminAddr}
		}
		if st.Cert == "" {
			return settings{}, fmt.Errorf("the demo file lists no admin certificate for %s; rerun `qkms demo` to write one", site)
		}
		return st, nil
	}
	return settings{}, fmt.Errorf("the demo has no site %q; choose one of %s", site, strings.Join(ids, ", "))
}

// resolve applies the precedence flags > demo > environment > config file, per setting.
func (o *options) resolve() (settings, error) {
	var cfg fileConfig
	if o.config != "" {
		b, err := os.ReadFile(o.config)
		if err != nil {
			return settings{}, fmt.Errorf("read config file: %w", err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			return settings{}, fmt.Errorf("config file %s: %v; it takes addr, ca, cert, key, demo and site", o.config, err)
		}
	}
	st := settings{Addrs: cfg.Addr, CA: cfg.CA, Cert: cfg.Cert, Key: cfg.Key}
	demo, site := cfg.Demo, cfg.Site
	if env := splitAddrs(os.Getenv(envAddr)); len(env) > 0 {
		st.Addrs = env
	}
	for p, env := range map[*string]string{&st.CA: envCA, &st.Cert: envCert, &st.Key: envKey} {
		if v := os.Getenv(env); v != "" {
			*p = v
		}
	}
	if o.demo != "" {
		demo = o.demo
	}
	if o.site != "" {
		site = o.site
	}
	if demo != "" {
		d, err := fromDemo(demo, site)
		if err != nil {
			return settings{}, err
		}
		st = d
	}
	flags := o.cmd.PersistentFlags()
	if flags.Changed("addr") {
		st.Addrs = o.addrs
	}
	if flags.Changed("ca") {
		st.CA = o.ca
	}
	if flags.Changed("cert") {
		st.Cert = o.cert
	}
	if flags.Changed("key") {
		st.Key = o.key
	}
	switch {
	case len(st.Addrs) == 0:
		return settings{}, errors.New("no admin address: give --addr HOST:PORT, " + envAddr + ", a config file, or --demo DIR/demo.json --site KME-A")
	case st.CA == "" || st.Cert == "" || st.Key == "":
		return settings{}, errors.New("an admin certificate is needed: give --ca, --cert and --key (or " + envCA + ", " + envCert + ", " + envKey + "), or --demo DIR/demo.json --site KME-A")
	}
	return st, nil
}

// client is an Admin client that moves on to the next node of the site when one cannot be
// reached.
type client struct {
	st    settings
	tls   *tls.Config
	conns []*grpc.ClientConn
	o     *options
}

func (o *options) dial() (*client, error) {
	st, err := o.resolve()
	if err != nil {
		return nil, err
	}
	tc, err := pki.ClientConfig(st.Cert, st.Key, st.CA)
	if err != nil {
		return nil, fmt.Errorf("%v; check --cert, --key and --ca", strings.TrimPrefix(err.Error(), "pki: "))
	}
	if st.Site != "" {
		// From a demo file the site is known: refuse a server that is not that KME.
		pki.RequirePeer(tc, pki.RoleKME, st.Site)
	}
	return &client{st: st, tls: tc, conns: make([]*grpc.ClientConn, len(st.Addrs)), o: o}, nil
}

func (c *client) Close() {
	for _, cc := range c.conns {
		if cc != nil {
			cc.Close()
		}
	}
}

// call runs f against the site's nodes in turn until one answers (a node that cannot be
// reached answers Unavailable). The error of the last node tried is returned, explained.
func (c *client) call(ctx context.Context, f func(context.Context, keyspb.AdminClient) error) error {
	var err error
	for i, addr := range c.st.Addrs {
		if c.conns[i] == nil {
			cc, derr := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(c.tls)))
			if derr != nil {
				err = fmt.Errorf("%s: %w", addr, derr)
				continue
			}
			c.conns[i] = cc
		}
		cctx, cancel := context.WithTimeout(ctx, c.o.timeout)
		err = f(cctx, keyspb.NewAdminClient(c.conns[i]))
		cancel()
		if err == nil {
			return nil
		}
		if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
			break
		}
	}
	return explain(err, c.st.Addrs)
}

// explain turns a gRPC error into one line telling the user what to do.
func explain(err error, addrs []string) error {
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := s.Message()
	where := strings.Join(addrs, ", ")
	switch s.Code() {
	case codes.PermissionDenied:
		return fmt.Errorf("this certificate is not an admin certificate (%s); use a certificate with the admin role (--cert/--key, or --demo with --site)", msg)
	case codes.Unauthenticated:
		return fmt.Errorf("the site did not accept this certificate (%s); use an admin certificate issued by the site's CA", msg)
	case codes.Unavailable:
		if strings.Contains(msg, "handshake") || strings.Contains(msg, "certificate") {
			return fmt.Errorf("TLS with %s failed (%s); check --ca, --cert, --key and that the address is the site's admin listener", where, msg)
		}
		if strings.Contains(msg, "connection") || strings.Contains(msg, "dial") {
			return fmt.Errorf("cannot reach any node at %s (%s); check --addr and that the nodes are running", where, msg)
		}
		return fmt.Errorf("%s; retry, or try another node of the site", msg)
	case codes.DeadlineExceeded:
		return fmt.Errorf("no answer from %s in time; check the nodes, or raise --timeout", where)
	case codes.Unimplemented:
		return fmt.Errorf("%w by this server (%s); upgrade the site's nodes", errNotSupported, msg)
	case codes.NotFound, codes.InvalidArgument, codes.FailedPrecondition:
		return errors.New(msg)
	}
	return fmt.Errorf("%s: %s", s.Code(), msg)
}

// run dials, runs f, and closes; the common body of every command that calls the site.
func (o *options) run(cmd *cobra.Command, f func(ctx context.Context, a keyspb.AdminClient) error) error {
	c, err := o.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	return c.call(cmd.Context(), f)
}
