package site

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/qkms/qkms/api/etsi014"
	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/pki"
)

// DESIGN.md invariant 3 checked from the outside (issue 6, hardening): after a pair of sites
// has ingested link key, delivered keys over ETSI 014 and gRPC in both directions, taken raft
// snapshots and exported its audit trail, no file under the pair's directory (bbolt state, raft
// log and stable store, snapshots, debug logs, audit exports, metrics) holds any 16-byte window
// of a delivered key or of the ingested block material, raw or hex or base64 encoded at any
// alignment.

// windowLen is the size of the windows looked for: long enough that a random match is
// impossible (2^-128 per position), short enough to find a key cut in pieces or a part of a
// block.
const windowLen = 16

// secretScanner finds windows of known secrets in files.
type secretScanner struct {
	windows map[[windowLen]byte]string // window -> name of the secret it belongs to
}

func newSecretScanner() *secretScanner {
	return &secretScanner{windows: map[[windowLen]byte]string{}}
}

// add registers every windowLen-byte window of secret.
func (s *secretScanner) add(name string, secret []byte) {
	for i := 0; i+windowLen <= len(secret); i++ {
		w := [windowLen]byte(secret[i : i+windowLen])
		if _, ok := s.windows[w]; !ok {
			s.windows[w] = name
		}
	}
}

// raw returns the name of the first secret with a window in b.
func (s *secretScanner) raw(b []byte) (string, bool) {
	for i := 0; i+windowLen <= len(b); i++ {
		if name, ok := s.windows[[windowLen]byte(b[i:i+windowLen])]; ok {
			return name, true
		}
	}
	return "", false
}

// scan looks for secret windows in b as raw bytes, in every run of hex digits (both nibble
// phases, either case) and in every run of base64 characters (standard and URL alphabets, all
// four alignments), and describes the first it finds.
func (s *secretScanner) scan(b []byte) (string, bool) {
	if name, ok := s.raw(b); ok {
		return "raw bytes of " + name, true
	}
	for _, r := range runs(b, hexValue, 2*windowLen) {
		for phase := 0; phase < 2; phase++ {
			if name, ok := s.raw(unpack(r[phase:], hexValue, 4)); ok {
				return "hex of " + name, true
			}
		}
	}
	for _, r := range runs(b, base64Value, (8*windowLen+5)/6) {
		for align := 0; align < 4 && align < len(r); align++ {
			if name, ok := s.raw(unpack(r[align:], base64Value, 6)); ok {
				return "base64 of " + name, true
			}
		}
	}
	return "", false
}

func hexValue(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func base64Value(c byte) int {
	switch {
	case 'A' <= c && c <= 'Z':
		return int(c - 'A')
	case 'a' <= c && c <= 'z':
		return int(c-'a') + 26
	case '0' <= c && c <= '9':
		return int(c-'0') + 52
	case c == '+' || c == '-':
		return 62
	case c == '/' || c == '_':
		return 63
	}
	return -1
}

// runs returns the maximal runs of b's characters that value accepts, at least min long.
func runs(b []byte, value func(byte) int, min int) [][]byte {
	var out [][]byte
	start := -1
	for i := 0; i <= len(b); i++ {
		if i < len(b) && value(b[i]) >= 0 {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 && i-start >= min {
			out = append(out, b[start:i])
		}
		start = -1
	}
	return out
}

// unpack decodes a run of digits of bits bits each, most significant first, into bytes.
func unpack(r []byte, value func(byte) int, bits int) []byte {
	out := make([]byte, 0, len(r)*bits/8)
	acc, n := 0, 0
	for _, c := range r {
		acc = acc<<bits | value(c)
		n += bits
		if n >= 8 {
			n -= 8
			out = append(out, byte(acc>>n))
			acc &= 1<<n - 1
		}
	}
	return out
}

// scanTree scans every regular file under dir and returns, per file that holds a secret, what
// was found.
func (s *secretScanner) scanTree(t *testing.T, dir string) (found map[string]string, files, size int) {
	t.Helper()
	found = map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		size += len(b)
		if what, ok := s.scan(b); ok {
			rel, _ := filepath.Rel(dir, path)
			found[rel] = what
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found, files, size
}

func TestNoSecretOnDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a pair of sites")
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "logs", "sites.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	p, err := StartPair(PairConfig{
		Dir:    dir,
		KMEs:   [2]string{"KME-A", "KME-B"},
		SAEs:   [2][]string{{"SAE-A1", "SAE-A2"}, {"SAE-B1", "SAE-B2"}},
		Logger: slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			p.Close()
		}
	})
	tp := &testPair{Pair: p, t: t}
	sc := newSecretScanner()
	var firstBlock, firstKey []byte

	// The link: identical blocks at both ends, registered before Ingest wipes them.
	for i := 0; i < 4; i++ {
		blk := make([]byte, 4096)
		rand.Read(blk)
		id := fmt.Sprintf("blk-%d", i)
		sc.add("block "+id, blk) // the tag key (the first tagKeyBytes) included
		if firstBlock == nil {
			firstBlock = bytes.Clone(blk[tagKeyBytes:])
		}
		for j, n := range p.Sites {
			if err := n.Ingest(context.Background(), p.Sites[1-j].KMEID(), id, uint64(i), bytes.Clone(blk), 0.02); err != nil {
				t.Fatal(err)
			}
		}
	}
	tp.waitKey(1024)

	// Deliveries in both directions, over ETSI 014 and gRPC, with multicast.
	ctx := context.Background()
	delivered := 0
	for dir := 0; dir < 2; dir++ {
		master, slave := p.SAEs[dir][0], p.SAEs[1-dir][0]
		extra := p.SAEs[1-dir][1]
		enc, dec, dec2 := tp.client(dir, master), tp.client(1-dir, slave), tp.client(1-dir, extra)
		keys, err := enc.GetKey(ctx, slave, etsi014.KeyRequest{Number: 8, Size: 256, AdditionalSlaveSAEIDs: []string{extra}})
		if err != nil {
			t.Fatal(err)
		}
		ids := make([]string, len(keys))
		for i, k := range keys {
			ids[i] = k.ID
			sc.add("ETSI 014 key "+k.ID, k.Bytes)
			if firstKey == nil {
				firstKey = bytes.Clone(k.Bytes)
			}
		}
		for _, c := range []*etsi014.Client{dec, dec2} {
			got, err := c.GetKeyWithIDs(ctx, master, ids)
			if err != nil || len(got) != len(keys) || !bytes.Equal(got[0].Bytes, keys[0].Bytes) {
				t.Fatalf("dec_keys: %v", err)
			}
		}
		delivered += len(keys)

		gkeys, err := tp.grpcClient(dir, master).GetKey(ctx, slave, 8, 512)
		if err != nil {
			t.Fatal(err)
		}
		ids = ids[:0]
		for _, k := range gkeys {
			ids = append(ids, k.ID)
			sc.add("gRPC key "+k.ID, k.Bytes)
		}
		got, err := tp.grpcClient(1-dir, slave).GetKeyWithIDs(ctx, master, ids)
		if err != nil || len(got) != len(gkeys) || !bytes.Equal(got[0].Bytes, gkeys[0].Bytes) {
			t.Fatalf("gRPC GetKeyWithIDs: %v", err)
		}
		delivered += len(gkeys)
		// Issued but not fetched: the slave site keeps it sealed until it expires.
		pending, err := enc.GetKey(ctx, slave, etsi014.KeyRequest{Number: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range pending {
			sc.add("pending key "+k.ID, k.Bytes)
		}
	}

	// Snapshots through the admin API, the audit trail exported next to them, and the metrics.
	for i, n := range p.Sites {
		admin := tp.adminClient(i, pki.AdminID(n.KMEID()))
		if _, err := admin.Snapshot(ctx, &keyspb.SnapshotRequest{}); err != nil {
			t.Fatalf("%s snapshot: %v", n.KMEID(), err)
		}
		if err := n.checkpoint(ctx, true); err != nil {
			t.Fatal(err)
		}
		export := exportAudit(t, admin)
		if len(export) == 0 {
			t.Fatalf("%s: empty audit export", n.KMEID())
		}
		if err := os.WriteFile(filepath.Join(dir, "audit-"+n.KMEID()+".jsonl"), export, 0o600); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + n.MetricsAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		m, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("metrics: %d %v", resp.StatusCode, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "metrics-"+n.KMEID()+".txt"), m, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Close the sites, so everything they buffer reaches the files.
	closed = true
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	// The scanner must be able to fail: plant each form of a secret in a file of its own and
	// check that exactly the planted files are reported.
	// (Delivered keys are cut from the blocks, so their windows are also block windows.)
	key, blockPart := firstKey, firstBlock[1000:1000+windowLen]
	junk := func(n int) []byte { b := make([]byte, n); rand.Read(b); return b }
	planted := map[string][]byte{
		"raw":       append(append(junk(1001), key...), junk(7)...),
		"hexupper":  []byte("material=" + fmt.Sprintf("%X", append(junk(3), key...)) + "\n"),
		"hexodd":    []byte("x" + hex.EncodeToString(append(junk(5), key...))[1:]),
		"b64":       []byte(`{"k":"` + base64.StdEncoding.EncodeToString(append(junk(1), key...)) + `"}`),
		"b64url":    []byte(base64.RawURLEncoding.EncodeToString(append(junk(2), key...))),
		"blockpart": append(append(junk(333), blockPart...), junk(3)...),
	}
	plantDir := filepath.Join(dir, "planted")
	if err := os.Mkdir(plantDir, 0o700); err != nil {
		t.Fatal(err)
	}
	want := []string{}
	for name, b := range planted {
		if err := os.WriteFile(filepath.Join(plantDir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
		want = append(want, filepath.Join("planted", name))
	}
	if err := os.WriteFile(filepath.Join(plantDir, "clean"), junk(1<<16), 0o600); err != nil {
		t.Fatal(err)
	}
	found, files, size := sc.scanTree(t, dir)
	var got []string
	for f, what := range found {
		got = append(got, f)
		if _, ok := planted[filepath.Base(f)]; !ok || filepath.Dir(f) != "planted" {
			t.Errorf("%s holds the %s", f, what)
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	for _, w := range want {
		if _, ok := found[w]; !ok {
			t.Errorf("the scanner missed the planted copy in %s", w)
		}
	}
	if files < 10 {
		t.Errorf("only %d files scanned: the pair's state is not where the test looks", files)
	}
	t.Logf("delivered %d keys; scanned %d files, %d bytes, for %d secret windows", delivered, files, size, len(sc.windows))
}
