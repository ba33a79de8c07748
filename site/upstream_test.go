package site

import (
	"bytes"
	"context"
	"testing"

	"github.com/qkms/qkms/api/etsi014"
)

// Two qkms sites take their link key from a simulated QKD device pair over ETSI 014 (what
// `qkdsim serve` runs), as they would from vendor hardware, and deliver it to their SAEs.
func TestUpstreamDeviceSource(t *testing.T) {
	devices := newTestPair(t, func(c *PairConfig) {
		c.KMEs = [2]string{"QKD-A", "QKD-B"}
		c.SAEs = [2][]string{{"KME-A"}, {"KME-B"}}
	})
	devices.ingest(8, 64<<10)
	devices.waitKey(64 << 10)

	up := func(i int, peer, remote string) UpstreamConfig {
		e, _ := devices.Layout.Find(devices.SAEs[i][0])
		return UpstreamConfig{Peer: peer, URL: "https://" + devices.Sites[i].ETSI014Addr(), RemoteSAE: remote,
			CA: devices.Layout.CACert, Cert: e.Cert, Key: e.Key, KeySize: 8192, Number: 8}
	}
	sites := newTestPair(t, func(c *PairConfig) {
		c.Upstream = [2][]UpstreamConfig{{up(0, "KME-B", "KME-B")}, {up(1, "KME-A", "KME-A")}}
	})
	sites.waitKey(2048)

	ctx := context.Background()
	for _, dir := range []struct {
		enc, dec      int
		master, slave string
	}{{0, 1, "SAE-A1", "SAE-B1"}, {1, 0, "SAE-B1", "SAE-A1"}} {
		keys, err := sites.client(dir.enc, dir.master).GetKey(ctx, dir.slave, etsi014.KeyRequest{Number: 4})
		if err != nil {
			t.Fatal(err)
		}
		ids := make([]string, len(keys))
		for i, k := range keys {
			ids[i] = k.ID
		}
		got, err := sites.client(dir.dec, dir.slave).GetKeyWithIDs(ctx, dir.master, ids)
		if err != nil {
			t.Fatal(err)
		}
		for i := range keys {
			if !bytes.Equal(got[i].Bytes, keys[i].Bytes) {
				t.Fatalf("key %d differs between the sites", i)
			}
		}
	}
}
