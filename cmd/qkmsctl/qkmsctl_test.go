package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/qkms/qkms/api/etsi014"
	"github.com/qkms/qkms/pki"
	"github.com/qkms/qkms/site"
)

// testNet is a real two-site pair on loopback, fed identical blocks by the test (what a QKD
// link does), and the admin flags of each site.
type testNet struct {
	t    *testing.T
	p    *site.Pair
	seq  uint64
	dir  string
	demo string // demo.json describing the pair
}

func startNet(t *testing.T) *testNet {
	t.Helper()
	dir := t.TempDir()
	p, err := site.StartPair(site.PairConfig{
		Dir:    dir,
		KMEs:   [2]string{"KME-A", "KME-B"},
		SAEs:   [2][]string{{"SAE-A1"}, {"SAE-B1"}},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	n := &testNet{t: t, p: p, dir: dir}
	n.ingest(4, 4096)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.WaitForKey(ctx, 2048); err != nil {
		t.Fatal(err)
	}
	n.writeDemo()
	return n
}

func (n *testNet) ingest(blocks, size int) {
	n.t.Helper()
	a, b := n.p.Sites[0], n.p.Sites[1]
	for range blocks {
		blk := make([]byte, size)
		rand.Read(blk)
		id := fmt.Sprintf("blk-%d", n.seq)
		if err := a.Ingest(context.Background(), b.KMEID(), id, n.seq, bytes.Clone(blk), 0.03); err != nil {
			n.t.Fatal(err)
		}
		if err := b.Ingest(context.Background(), a.KMEID(), id, n.seq, blk, 0.03); err != nil {
			n.t.Fatal(err)
		}
		n.seq++
	}
}

// writeDemo writes a demo.json in the format of `qkms demo`, with relative certificate paths.
func (n *testNet) writeDemo() {
	type node struct {
		AdminAddr string `json:"admin_addr"`
	}
	type siteJSON struct {
		KMEID     string `json:"kme_id"`
		AdminAddr string `json:"admin_addr"`
		Nodes     []node `json:"nodes"`
		AdminCert string `json:"admin_cert"`
		AdminKey  string `json:"admin_key"`
	}
	df := struct {
		CA    string     `json:"ca"`
		Sites []siteJSON `json:"sites"`
	}{CA: "pki/" + pki.CACertFile}
	for _, s := range n.p.Sites {
		df.Sites = append(df.Sites, siteJSON{KMEID: s.KMEID(), AdminAddr: s.AdminAddr(), Nodes: []node{{s.AdminAddr()}},
			AdminCert: "pki/" + pki.AdminID(s.KMEID()) + ".pem", AdminKey: "pki/" + pki.AdminID(s.KMEID()) + "-key.pem"})
	}
	b, _ := json.Marshal(df)
	n.demo = filepath.Join(n.dir, "demo.json")
	if err := os.WriteFile(n.demo, b, 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// as returns the connection flags of site i with the certificate of entity id.
func (n *testNet) as(i int, id string) []string {
	e, ok := n.p.Layout.Find(id)
	if !ok {
		n.t.Fatalf("no certificate for %s", id)
	}
	return []string{"--addr", n.p.Sites[i].AdminAddr(), "--ca", n.p.Layout.CACert, "--cert", e.Cert, "--key", e.Key}
}

func (n *testNet) admin(i int) []string { return n.as(i, pki.AdminID(n.p.Sites[i].KMEID())) }

// run runs qkmsctl in-process with stdin and returns its standard output.
func run(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd(strings.NewReader(stdin), &out, &errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, "", args...)
	if err != nil {
		t.Fatalf("qkmsctl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func mustJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := must(t, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("qkmsctl %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (n *testNet) etsi(i int, sae string) *etsi014.Client {
	e, _ := n.p.Layout.Find(sae)
	cfg, err := pki.ClientConfig(e.Cert, e.Key, n.p.Layout.CACert)
	if err != nil {
		n.t.Fatal(err)
	}
	return etsi014.NewClient("https://"+n.p.Sites[i].ETSI014Addr(), cfg)
}

func TestAgainstPair(t *testing.T) {
	n := startNet(t)
	ctx := context.Background()
	keys, err := n.etsi(0, "SAE-A1").GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 2, Size: 256})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("cluster status", func(t *testing.T) {
		out := must(t, append(n.admin(0), "cluster", "status")...)
		t.Logf("cluster status:\n%s", out)
		for _, want := range []string{"KME:", "KME-A", "NODE", "KME-A-1", n.p.Sites[0].RaftAddr()} {
			if !strings.Contains(out, want) {
				t.Errorf("cluster status lacks %q:\n%s", want, out)
			}
		}
		var st struct {
			KmeID    string `json:"kme_id"`
			LeaderID string `json:"leader_id"`
			Term     string `json:"term"` // uint64 is a string in protobuf JSON
			Members  []struct {
				ID     string `json:"id"`
				Leader bool   `json:"leader"`
			} `json:"members"`
		}
		mustJSON(t, &st, append(n.admin(0), "cluster", "status")...)
		if st.KmeID != "KME-A" || st.LeaderID != "KME-A-1" || len(st.Members) != 1 || !st.Members[0].Leader || st.Term == "0" {
			t.Fatalf("cluster status --json: %+v", st)
		}
	})

	t.Run("demo file", func(t *testing.T) {
		out := must(t, "--demo", n.demo, "--site", "KME-B", "cluster", "status")
		if !strings.Contains(out, "KME-B-1") {
			t.Fatalf("--demo --site KME-B reached another site:\n%s", out)
		}
		_, err := run(t, "", "--demo", n.demo, "pools")
		if err == nil || !strings.Contains(err.Error(), "--site") {
			t.Fatalf("a two-site demo without --site: %v", err)
		}
	})

	t.Run("pools", func(t *testing.T) {
		out := must(t, append(n.admin(0), "pools")...)
		t.Logf("pools:\n%s", out)
		if !strings.Contains(out, "STORED KEYS") || !strings.Contains(out, "KME-B") {
			t.Fatalf("pools:\n%s", out)
		}
		var r struct {
			Pools []struct {
				Peer   string `json:"peer_kme_id"`
				Stored string `json:"stored_key_count"`
			} `json:"pools"`
		}
		mustJSON(t, &r, append(n.admin(0), "pools")...)
		if len(r.Pools) != 1 || r.Pools[0].Peer != "KME-B" || r.Pools[0].Stored == "0" {
			t.Fatalf("pools --json: %+v", r)
		}
	})

	t.Run("links and saes", func(t *testing.T) {
		out := must(t, append(n.admin(0), "links")...)
		t.Logf("links:\n%s", out)
		if !strings.Contains(out, "KME-B") || !strings.Contains(out, "qkdsim") || !strings.Contains(out, "3.00%") {
			t.Fatalf("links:\n%s", out)
		}
		out = must(t, append(n.admin(0), "saes")...)
		if !strings.Contains(out, "SAE-B1") || !strings.Contains(out, "SAE-A1") {
			t.Fatalf("saes:\n%s", out)
		}
		for _, verb := range []string{"pause", "resume"} {
			out := must(t, append(n.admin(0), "links", verb, "--peer", "KME-B", "--reason", "test")...)
			if !strings.Contains(out, verb+"d") {
				t.Fatalf("links %s: %s", verb, out)
			}
		}
		if _, err := run(t, "", append(n.admin(0), "links", "pause", "--peer", "KME-Z")...); err == nil {
			t.Fatal("links pause of an unknown peer succeeded")
		}
	})

	t.Run("keys show", func(t *testing.T) {
		k := keys[0]
		for _, args := range [][]string{{"keys", "show", k.ID}, {"keys", "show", k.ID, "--json"}} {
			out := must(t, append(n.admin(0), args...)...)
			for _, want := range []string{k.ID, "SAE-A1", "SAE-B1", "256"} {
				if !strings.Contains(out, want) {
					t.Errorf("%v lacks %q:\n%s", args, want, out)
				}
			}
			for _, enc := range []string{base64.StdEncoding.EncodeToString(k.Bytes), hex.EncodeToString(k.Bytes), string(k.Bytes)} {
				if strings.Contains(out, enc) {
					t.Fatalf("%v prints the key bytes", args)
				}
			}
		}
		_, err := run(t, "", append(n.admin(0), "keys", "show", "00000000-0000-4000-8000-000000000000")...)
		if err == nil || !strings.Contains(err.Error(), "not known") {
			t.Fatalf("unknown key: %v", err)
		}
	})

	t.Run("non-admin refused", func(t *testing.T) {
		for _, cmd := range [][]string{{"cluster", "status"}, {"pools"}, {"zeroize", "--peer", "KME-B", "--yes"}} {
			_, err := run(t, "", append(n.as(0, "SAE-A1"), cmd...)...)
			if err == nil || !strings.Contains(err.Error(), "this certificate is not an admin certificate") {
				t.Fatalf("%v with an SAE certificate: %v", cmd, err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		}
	})

	t.Run("zeroize", func(t *testing.T) {
		// The first key reaches SAE-B1: delivery works before the zeroize.
		b := n.etsi(1, "SAE-B1")
		if _, err := b.GetKeyWithIDs(ctx, "SAE-A1", []string{keys[0].ID}); err != nil {
			t.Fatal(err)
		}
		stored := func() string {
			var r struct {
				Pools []struct {
					Stored string `json:"stored_key_count"`
				} `json:"pools"`
			}
			mustJSON(t, &r, append(n.admin(1), "pools")...)
			return r.Pools[0].Stored
		}
		before := stored()
		if before == "0" {
			t.Fatal("KME-B has no key before the zeroize")
		}
		// Not confirmed: nothing happens.
		_, err := run(t, "KME-X\n", append(n.admin(1), "zeroize", "--peer", "KME-A")...)
		if err == nil || !strings.Contains(err.Error(), "not confirmed") || stored() != before {
			t.Fatalf("unconfirmed zeroize: %v, stored %s -> %s", err, before, stored())
		}
		out, err := run(t, "KME-A\n", append(n.admin(1), "zeroize", "--peer", "KME-A", "--reason", "test")...)
		if err != nil || !strings.Contains(out, "zeroized") {
			t.Fatalf("zeroize: %v\n%s", err, out)
		}
		if got := stored(); got != "0" {
			t.Fatalf("stored_key_count after zeroize: %s", got)
		}
		if _, err := b.GetKeyWithIDs(ctx, "SAE-A1", []string{keys[1].ID}); err == nil {
			t.Fatal("dec_keys of an issued key succeeded after the pool was zeroized")
		}
		_, err = run(t, "", append(n.admin(1), "zeroize", "--peer", "KME-Z", "--yes")...)
		if err == nil || !strings.Contains(err.Error(), "no pool") {
			t.Fatalf("zeroize of an unknown pool: %v", err)
		}
	})

	t.Run("audit", func(t *testing.T) {
		out, err := run(t, "", append(n.admin(0), "audit", "list", "--event", "key_issued")...)
		if err != nil && strings.Contains(err.Error(), "not supported") {
			t.Skip("this build's site has no audit RPCs")
		}
		if err != nil || !strings.Contains(out, keys[0].ID) {
			t.Fatalf("audit list: %v\n%s", err, out)
		}
		t.Logf("audit list --event key_issued:\n%s", out)
		file := filepath.Join(t.TempDir(), "export.jsonl")
		must(t, append(n.admin(0), "audit", "export", "--out", file)...)
		pub := filepath.Join(filepath.Dir(n.p.Layout.CACert), "KME-A.audit.pub")
		out = must(t, "audit", "verify", "--file", file, "--pubkey", pub)
		if !strings.Contains(out, "verified") {
			t.Fatalf("audit verify:\n%s", out)
		}
		// Edit one entry: verification names it.
		data, _ := os.ReadFile(file)
		lines := strings.Split(string(data), "\n")
		// Appended last, the edit wins over a "detail" the entry may already have (the decoder
		// keeps the last of duplicate members).
		lines[1] = strings.TrimSuffix(lines[1], "}") + `,"detail":"edited"}`
		bad := filepath.Join(t.TempDir(), "bad.jsonl")
		os.WriteFile(bad, []byte(strings.Join(lines, "\n")), 0o644)
		_, err = run(t, "", "audit", "verify", "--file", bad, "--pubkey", pub)
		t.Logf("verify of an edited export: %v", err)
		if err == nil || !strings.Contains(err.Error(), "first bad entry is 2 (line 2)") {
			t.Fatalf("verify of an edited export: %v", err)
		}
	})
}

// TestSettings checks where connection settings come from, without a server.
func TestSettings(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "qkmsctl.yaml")
	os.WriteFile(cfgFile, []byte("addr: [c1:1, c2:2]\nca: cfg-ca\ncert: cfg-cert\nkey: cfg-key\n"), 0o644)
	demo := filepath.Join(dir, "demo.json")
	os.WriteFile(demo, []byte(`{"ca":"pki/ca.pem","sites":[{"kme_id":"KME-A","admin_addr":"a:1","admin_cert":"pki/a.pem","admin_key":"pki/a-key.pem","nodes":[{"admin_addr":"a:1"},{"admin_addr":"a:2"}]},{"kme_id":"KME-B","admin_addr":"b:1","admin_cert":"/abs/b.pem","admin_key":"/abs/b-key.pem"}]}`), 0o644)
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    settings
		wantErr string
	}{
		{name: "nothing", wantErr: "no admin address"},
		{name: "config file", args: []string{"--config", cfgFile},
			want: settings{Addrs: []string{"c1:1", "c2:2"}, CA: "cfg-ca", Cert: "cfg-cert", Key: "cfg-key"}},
		{name: "env over config", env: map[string]string{envAddr: "e1:1,e2:2", envCert: "env-cert"}, args: []string{"--config", cfgFile},
			want: settings{Addrs: []string{"e1:1", "e2:2"}, CA: "cfg-ca", Cert: "env-cert", Key: "cfg-key"}},
		{name: "flags over env", env: map[string]string{envAddr: "e:1", envCA: "env-ca", envCert: "env-cert", envKey: "env-key"}, args: []string{"--addr", "f:1", "--key", "flag-key"},
			want: settings{Addrs: []string{"f:1"}, CA: "env-ca", Cert: "env-cert", Key: "flag-key"}},
		{name: "demo site", args: []string{"--demo", demo, "--site", "KME-A"},
			want: settings{Addrs: []string{"a:1", "a:2"}, CA: filepath.Join(dir, "pki/ca.pem"), Cert: filepath.Join(dir, "pki/a.pem"), Key: filepath.Join(dir, "pki/a-key.pem"), Site: "KME-A"}},
		{name: "demo site without nodes", args: []string{"--demo", demo, "--site", "KME-B", "--addr", "x:9"},
			want: settings{Addrs: []string{"x:9"}, CA: filepath.Join(dir, "pki/ca.pem"), Cert: "/abs/b.pem", Key: "/abs/b-key.pem", Site: "KME-B"}},
		{name: "demo without site", args: []string{"--demo", demo}, wantErr: "choose one with --site"},
		{name: "demo unknown site", args: []string{"--demo", demo, "--site", "KME-Q"}, wantErr: `no site "KME-Q"`},
		{name: "no certificate", args: []string{"--addr", "a:1"}, wantErr: "an admin certificate is needed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{envAddr, envCA, envCert, envKey} {
				t.Setenv(k, tc.env[k])
			}
			var got settings
			var gotErr error
			root, o := newRoot(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
			root.SetArgs(append(tc.args, "pools"))
			// Resolve inside the command, after flag parsing, instead of dialling.
			pools, _, _ := root.Find([]string{"pools"})
			pools.RunE = func(cmd *cobra.Command, _ []string) error {
				got, gotErr = o.resolve()
				return nil
			}
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" {
				if gotErr == nil || !strings.Contains(gotErr.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", gotErr, tc.wantErr)
				}
				return
			}
			if gotErr != nil {
				t.Fatal(gotErr)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("settings %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		out, err := run(t, "", "completion", shell)
		if err != nil || !strings.Contains(out, "qkmsctl") {
			t.Fatalf("completion %s: %v (%d bytes)", shell, err, len(out))
		}
	}
}

// FuzzDemoFile: any demo.json content yields settings or an error, never a panic, and
// settings always name an address and a certificate.
func FuzzDemoFile(f *testing.F) {
	f.Add([]byte(`{"ca":"ca.pem","sites":[{"kme_id":"KME-A","admin_addr":"a:1","admin_cert":"c","admin_key":"k"}]}`), "KME-A")
	f.Add([]byte(`{"sites":[{"kme_id":"KME-A","nodes":[{"admin_addr":""}]}]}`), "")
	f.Fuzz(func(t *testing.T, data []byte, site string) {
		p := filepath.Join(t.TempDir(), "demo.json")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		st, err := fromDemo(p, site)
		if err == nil && st.Cert == "" {
			t.Fatalf("settings without a certificate: %+v", st)
		}
	})
}
