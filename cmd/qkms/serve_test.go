package main

import (
	"os"
	"path/filepath"
	"testing"
)

// Flags override the config file's fields; fields no flag sets keep the file's values.
func TestServeFlagsOverrideFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(path, []byte("kme_id: KME-A\nnode_id: a1\ndata_dir: /from/file\nlisten:\n  etsi014: 127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var f serveFlags
	cmd := serveCmd(&f)
	if err := cmd.ParseFlags([]string{"--config", path, "--data-dir", "/from/flag", "--raft-join", "x:1,y:2", "--bootstrap"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.load(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/from/flag" || cfg.NodeID != "a1" || cfg.Listen.ETSI014 != "127.0.0.1:1" ||
		len(cfg.Raft.Join) != 2 || !cfg.Raft.Bootstrap {
		t.Fatalf("config after flags: %+v", cfg)
	}
}
