package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCertsCmd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	cmd := newCertsCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--dir", dir, "--kme", "KME-A=SAE-A1,SAE-A2", "--kme", "KME-B=SAE-B1, SAE-B2", "--host", "kme.example"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"KME-A", "KME-B", "SAE-A1", "SAE-A2", "SAE-B1", "SAE-B2", "admin-KME-A", "admin-KME-B"} {
		b, err := os.ReadFile(filepath.Join(dir, id+".pem"))
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil || c.Subject.CommonName != id {
			t.Errorf("%s: %v %v", id, c.Subject, err)
		}
		if strings.HasPrefix(id, "KME") && !strings.Contains(strings.Join(c.DNSNames, ","), "kme.example") {
			t.Errorf("%s lacks --host SAN: %v", id, c.DNSNames)
		}
		if st, err := os.Stat(filepath.Join(dir, id+"-key.pem")); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s key: %v", id, err)
		}
		if !strings.Contains(out.String(), filepath.Join(dir, id+".pem")) {
			t.Errorf("output does not mention %s", id)
		}
	}
}

func TestCertsCmdRejects(t *testing.T) {
	for _, args := range [][]string{
		{"--kme", "KME-A=SAE-A1"},
		{"--dir", "x"},
		{"--dir", "x", "--kme", "=SAE-A1"},
		{"--dir", "x", "--kme", "KME-A=a", "--kme", "KME-A=b"},
		{"--dir", "x", "--kme", "../KME=a"},
	} {
		cmd := newCertsCmd()
		cmd.SetOut(new(bytes.Buffer))
		cmd.SetErr(new(bytes.Buffer))
		dir := t.TempDir()
		for i := range args {
			if args[i] == "x" {
				args[i] = filepath.Join(dir, "out")
			}
		}
		cmd.SetArgs(args)
		if err := cmd.Execute(); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
