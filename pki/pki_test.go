package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"SAE-A1", true},
		{"SAE A", true},
		{"kme.site1", true},
		{"", false},
		{"a/b", false},
		{`a\b`, false},
		{"..", false},
		{".", false},
		{"a..b", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\u0085b", false},
		{"\xff", false},
		{strings.Repeat("x", MaxIDLen), true},
		{strings.Repeat("x", MaxIDLen+1), false},
	}
	for _, tc := range tests {
		err := CheckID(tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("CheckID(%q) = %v, want ok=%v", tc.id, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadID) {
			t.Errorf("CheckID(%q) error %v does not wrap ErrBadID", tc.id, err)
		}
	}
}

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIssueConvention(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	tests := []struct {
		role       Role
		id         string
		hosts      []string
		server     bool
		wantDNS    []string
		wantIPs    int
		verifyHost string
	}{
		{RoleKME, "KME-A", []string{"kme-a.example", "10.0.0.7"}, true, []string{"localhost", "kme-a.example"}, 3, "kme-a.example"},
		{RoleKME, "KME-B", nil, true, []string{"localhost"}, 2, "127.0.0.1"},
		{RoleSAE, "SAE A1", []string{"ignored"}, false, nil, 0, ""},
		{RoleAdmin, "admin", nil, false, nil, 0, ""},
	}
	for _, tc := range tests {
		certPEM, keyPEM, err := ca.Issue(tc.role, tc.id, tc.hosts)
		if err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			t.Fatalf("%s: key pair: %v", tc.id, err)
		}
		c := parseCert(t, certPEM)
		if c.Subject.CommonName != tc.id || len(c.Subject.OrganizationalUnit) != 1 || c.Subject.OrganizationalUnit[0] != string(tc.role) {
			t.Errorf("%s: subject %v", tc.id, c.Subject)
		}
		if strings.Join(c.DNSNames, ",") != strings.Join(tc.wantDNS, ",") || len(c.IPAddresses) != tc.wantIPs {
			t.Errorf("%s: SANs %v %v", tc.id, c.DNSNames, c.IPAddresses)
		}
		_, err = c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			t.Errorf("%s: not a valid client certificate: %v", tc.id, err)
		}
		_, err = c.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.verifyHost})
		if (err == nil) != tc.server {
			t.Errorf("%s: server verification err=%v, want server=%v", tc.id, err, tc.server)
		}
	}
	if _, _, err := ca.Issue("root", "x", nil); err == nil {
		t.Error("unknown role accepted")
	}
	if _, _, err := ca.Issue(RoleSAE, "../x", nil); err == nil {
		t.Error("bad ID accepted")
	}
}

func TestWriteDevPKI(t *testing.T) {
	dir := t.TempDir()
	kmes := map[string][]string{"KME-B": {"SAE-B1"}, "KME-A": {"SAE-A1", "SAE-A2"}}
	l, err := WriteDevPKI(dir, kmes, true, "node1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range l.Entities {
		got = append(got, string(e.Role)+":"+e.ID+"@"+e.KME)
		for _, p := range []string{e.Cert, e.Key} {
			if !filepath.IsAbs(p) {
				t.Errorf("%s not absolute", p)
			}
		}
		st, err := os.Stat(e.Key)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", e.Key, st.Mode())
		}
		if _, err := ClientConfig(e.Cert, e.Key, l.CACert); err != nil {
			t.Errorf("%s: %v", e.ID, err)
		}
	}
	want := "kme:KME-A@KME-A sae:SAE-A1@KME-A sae:SAE-A2@KME-A admin:admin-KME-A@KME-A kme:KME-B@KME-B sae:SAE-B1@KME-B admin:admin-KME-B@KME-B"
	if strings.Join(got, " ") != want {
		t.Errorf("entities\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	kmeA, _ := l.Find("KME-A")
	certPEM, _ := os.ReadFile(kmeA.Cert)
	if c := parseCert(t, certPEM); strings.Join(c.DNSNames, ",") != "localhost,node1" {
		t.Errorf("KME-A DNS SANs %v", c.DNSNames)
	}

	// A second run reuses the CA: certificates of the first run still verify.
	caBefore, _ := os.ReadFile(l.CACert)
	l2, err := WriteDevPKI(dir, map[string][]string{"KME-C": nil}, false)
	if err != nil {
		t.Fatal(err)
	}
	caAfter, _ := os.ReadFile(l2.CACert)
	if string(caBefore) != string(caAfter) {
		t.Error("CA was replaced on the second run")
	}
	if _, ok := l2.Find("admin"); !ok {
		t.Error("single admin missing")
	}

	for _, bad := range []map[string][]string{
		{"KME-A": {"ca"}},
		{"KME-A": {"KME-A"}},
		{"KME-A": {"X", "X-key"}},
		{"KME-A": {"a/b"}},
		{},
	} {
		if _, err := WriteDevPKI(t.TempDir(), bad, true); err == nil {
			t.Errorf("WriteDevPKI(%v) accepted", bad)
		}
	}
}

// TestMutualTLS runs a real handshake with the configurations of this package.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	l, err := WriteDevPKI(dir, map[string][]string{"KME-A": {"SAE-A1"}, "KME-B": nil}, true)
	if err != nil {
		t.Fatal(err)
	}
	kme, _ := l.Find("KME-A")
	srvCfg, err := ServerConfig(kme.Cert, kme.Key, l.CACert)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := Identify(r.TLS)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		io.WriteString(w, string(id.Role)+":"+id.ID+":"+tls.VersionName(r.TLS.Version))
	}))
	srv.TLS = srvCfg
	srv.StartTLS()
	defer srv.Close()

	client := func(id string, pin func(*tls.Config)) *http.Client {
		e, _ := l.Find(id)
		cfg, err := ClientConfig(e.Cert, e.Key, l.CACert)
		if err != nil {
			t.Fatal(err)
		}
		if pin != nil {
			pin(cfg)
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	get := func(c *http.Client) (string, error) {
		resp, err := c.Get(srv.URL)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	}

	tests := []struct {
		name    string
		client  *http.Client
		want    string
		wantErr bool
	}{
		{"sae", client("SAE-A1", nil), "sae:SAE-A1:TLS 1.3", false},
		{"peer kme", client("KME-B", nil), "kme:KME-B:TLS 1.3", false},
		{"admin", client("admin-KME-A", nil), "admin:admin-KME-A:TLS 1.3", false},
		{"pinned right", client("SAE-A1", func(c *tls.Config) { RequirePeer(c, RoleKME, "KME-A") }), "sae:SAE-A1:TLS 1.3", false},
		{"pinned wrong", client("SAE-A1", func(c *tls.Config) { RequirePeer(c, RoleKME, "KME-B") }), "", true},
		{"tls12", client("SAE-A1", func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }), "sae:SAE-A1:TLS 1.2", false},
		{"no client cert", &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: mustPool(t, l.CACert)}}}, "", true},
	}
	for _, tc := range tests {
		got, err := get(tc.client)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q, err=%v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}

	// A certificate from another CA is refused at the handshake.
	other, err := WriteDevPKI(t.TempDir(), map[string][]string{"KME-A": {"SAE-A1"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := other.Find("SAE-A1")
	cert, _ := tls.LoadX509KeyPair(e.Cert, e.Key)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: mustPool(t, l.CACert), Certificates: []tls.Certificate{cert}}}}
	if _, err := get(c); err == nil {
		t.Error("foreign client certificate accepted")
	}
}

func mustPool(t *testing.T, caFile string) *x509.CertPool {
	p, err := CertPool(caFile)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestIdentifyRejects(t *testing.T) {
	if _, err := Identify(nil); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("nil state: %v", err)
	}
	if _, err := Identify(&tls.ConnectionState{}); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("no chains: %v", err)
	}
	ca, _ := NewCA("x")
	certPEM, _, _ := ca.Issue(RoleSAE, "SAE-1", nil)
	c := parseCert(t, certPEM)
	// Unverified peer certificates never yield an identity.
	if _, err := Identify(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("unverified: %v", err)
	}
	for _, ou := range [][]string{nil, {"root"}, {"sae", "kme"}} {
		bad := *c
		bad.Subject.OrganizationalUnit = ou
		_, err := Identify(&tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{&bad}}})
		if !errors.Is(err, ErrBadIdentity) {
			t.Errorf("OU %v: %v", ou, err)
		}
	}
	got, err := Identify(&tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}})
	if err != nil || got != (Identity{ID: "SAE-1", Role: RoleSAE}) {
		t.Errorf("good: %v %v", got, err)
	}
}

func TestLoadCAMismatch(t *testing.T) {
	a, _ := NewCA("a")
	b, _ := NewCA("b")
	if _, err := ParseCA(a.CertPEM, b.KeyPEM()); err == nil {
		t.Error("mismatched CA key accepted")
	}
	if _, err := ParseCA(a.CertPEM, a.KeyPEM()); err != nil {
		t.Error(err)
	}
	leaf, key, _ := a.Issue(RoleSAE, "s", nil)
	if _, err := ParseCA(leaf, key); err == nil {
		t.Error("leaf accepted as CA")
	}
}

func TestOptionalID(t *testing.T) {
	if id, err := OptionalID(nil); id != "" || err != nil {
		t.Fatalf("no value: %q %v", id, err)
	}
	if id, err := OptionalID([]string{"retry-1"}); id != "retry-1" || err != nil {
		t.Fatalf("one value: %q %v", id, err)
	}
	for _, vals := range [][]string{{""}, {"a/b"}, {".."}, {"a", "b"}} {
		if _, err := OptionalID(vals); !errors.Is(err, ErrBadID) {
			t.Errorf("%q: %v, want ErrBadID", vals, err)
		}
	}
}
