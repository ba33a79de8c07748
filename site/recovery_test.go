package site

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/qkms/qkms/api/etsi014"
)

// Keys issued before a restart of either site are still delivered after it, and the restarted
// issuing site never hands out the same bytes again.
func TestRestartRecovers(t *testing.T) {
	tp := newTestPair(t, nil)
	tp.ingest(4, 4096)
	tp.waitKey(1024)
	ctx := context.Background()
	seen := map[string]bool{}
	issue := func(n int) []etsi014.DeliveredKey {
		keys, err := tp.client(0, "SAE-A1").GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: n})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			h := string(k.Bytes)
			if seen[h] {
				t.Fatal("the same key bytes were issued twice")
			}
			seen[h] = true
		}
		return keys
	}
	before := issue(5)
	for i := range tp.Sites {
		if err := tp.Restart(i); err != nil {
			t.Fatalf("restart site %d: %v", i, err)
		}
	}
	tp.waitKey(256)
	after := issue(5)
	for _, k := range append(before, after...) {
		got, err := tp.client(1, "SAE-B1").GetKeyWithIDs(ctx, "SAE-A1", []string{k.ID})
		if err != nil {
			t.Fatalf("fetch %s after restart: %v", k.ID, err)
		}
		if !bytes.Equal(got[0].Bytes, k.Bytes) {
			t.Fatalf("key %s differs after restart", k.ID)
		}
	}
}

// crashChildEnv makes the test binary act as the node process killed in TestKillDuringIssuance.
const crashChildEnv = "QKMS_SITE_CRASH_CHILD_DIR"

// TestKillDuringIssuance issues keys in a child process that is killed with SIGKILL mid-way;
// every key the child saw acknowledged must be delivered, with the same bytes, after the
// sites are opened again from their files, and no bytes may be issued twice.
func TestKillDuringIssuance(t *testing.T) {
	if v := os.Getenv(crashChildEnv); v != "" {
		dir, mode, _ := strings.Cut(v, "|")
		crashChild(t, dir, mode)
		return
	}
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	// Both durability modes must survive the death of the process.
	for _, mode := range []string{"fsync", "os"} {
		t.Run(mode, func(t *testing.T) { killDuringIssuance(t, mode) })
	}
}

func killDuringIssuance(t *testing.T, mode string) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillDuringIssuance$", "-test.v")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir+"|"+mode)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]string{} // key ID -> sha256 of its bytes, as the child's SAE got it
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "ACK" {
			acked[f[1]] = f[2]
		}
		if len(acked) >= 40 {
			break
		}
	}
	cmd.Process.Kill() // SIGKILL while the child keeps issuing
	cmd.Wait()
	if len(acked) < 40 {
		t.Fatalf("child acknowledged only %d keys before it ended", len(acked))
	}

	tp := reopenTestPair(t, dir, mode)
	ctx := context.Background()
	hashes := map[string]bool{}
	for id, want := range acked {
		got, err := tp.client(1, "SAE-B1").GetKeyWithIDs(ctx, "SAE-A1", []string{id})
		if err != nil {
			t.Fatalf("acknowledged key %s lost after SIGKILL: %v", id, err)
		}
		h := sha256.Sum256(got[0].Bytes)
		if hex.EncodeToString(h[:]) != want {
			t.Fatalf("key %s: bytes differ from those acknowledged", id)
		}
		hashes[want] = true
	}
	if len(hashes) != len(acked) {
		t.Fatal("two acknowledged keys have the same bytes")
	}
	// Keys issued after recovery are new bytes.
	keys, err := tp.client(0, "SAE-A1").GetKey(ctx, "SAE-B1", etsi014.KeyRequest{Number: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		h := sha256.Sum256(k.Bytes)
		if hashes[hex.EncodeToString(h[:])] {
			t.Fatal("a key issued before the crash was issued again after it")
		}
	}
}

func reopenTestPair(t *testing.T, dir, mode string) *testPair {
	t.Helper()
	cfg := PairConfig{
		Dir:        dir,
		Durability: mode,
		KMEs:       [2]string{"KME-A", "KME-B"},
		SAEs:       [2][]string{{"SAE-A1", "SAE-A2"}, {"SAE-B1", "SAE-B2", "SAE-B3"}},
		Logger:     quietLogger(),
	}
	p, err := StartPair(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return &testPair{Pair: p, t: t}
}

// crashChild runs in the child: two sites with key, then enc_keys forever, printing each
// acknowledged key's ID and hash (never its bytes).
func crashChild(t *testing.T, dir, mode string) {
	tp := reopenTestPair(t, dir, mode)
	tp.ingest(8, 4096)
	tp.waitKey(8192)
	a1 := tp.client(0, "SAE-A1")
	for i := 0; ; i++ {
		keys, err := a1.GetKey(context.Background(), "SAE-B1", etsi014.KeyRequest{Number: 2})
		if err != nil {
			fmt.Println("ERR", strings.ReplaceAll(err.Error(), " ", "_"))
			continue
		}
		for _, k := range keys {
			h := sha256.Sum256(k.Bytes)
			fmt.Printf("ACK %s %s\n", k.ID, hex.EncodeToString(h[:]))
		}
	}
}
