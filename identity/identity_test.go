package identity

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "KME-A.audit.key")
	a, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyID() != b.KeyID() || !a.Public().Equal(b.Public()) {
		t.Fatal("a second LoadOrCreate made another key")
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key file: %v, mode %v", err, st.Mode())
	}
	pub, err := LoadPublicKey(PublicKeyPath(path))
	if err != nil {
		t.Fatal(err)
	}
	if KeyID(pub) != a.KeyID() {
		t.Fatal("public key file holds another key")
	}
	msg := []byte("head")
	sig, err := a.Sign(msg, "ctx")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		msg  []byte
		ctx  string
		want bool
	}{
		{"good", msg, "ctx", true},
		{"other message", []byte("heae"), "ctx", false},
		{"other context", msg, "ctx2", false},
	} {
		if got := Verify(pub, tc.msg, tc.ctx, sig); got != tc.want {
			t.Errorf("%s: Verify = %v, want %v", tc.name, got, tc.want)
		}
	}
	other, _ := Generate()
	if Verify(other.Public(), msg, "ctx", sig) {
		t.Error("signature verified under another key")
	}
}

func TestLoadRejects(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		"empty":  "",
		"public": "-----BEGIN ML-DSA-65 PUBLIC KEY-----\nAAAA\n-----END ML-DSA-65 PUBLIC KEY-----\n",
		"short":  "-----BEGIN ML-DSA-65 SEED-----\nAAAA\n-----END ML-DSA-65 SEED-----\n",
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(data), 0o600)
		if _, err := Load(p); !errors.Is(err, ErrBadKeyFile) {
			t.Errorf("%s: Load err = %v, want ErrBadKeyFile", name, err)
		}
		if _, err := LoadPublicKey(p); !errors.Is(err, ErrBadKeyFile) {
			t.Errorf("%s: LoadPublicKey err = %v, want ErrBadKeyFile", name, err)
		}
	}
}

func FuzzParsePublicKey(f *testing.F) {
	s, _ := Generate()
	dir := f.TempDir()
	WritePublicKey(filepath.Join(dir, "k.pub"), s.Public())
	good, _ := os.ReadFile(filepath.Join(dir, "k.pub"))
	f.Add(good)
	f.Add([]byte("-----BEGIN ML-DSA-65 PUBLIC KEY-----\n-----END ML-DSA-65 PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pk, err := ParsePublicKey(data)
		if err == nil && pk == nil {
			t.Fatal("nil key without error")
		}
	})
}
