package site

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

// TestMemoryFlat ingests key until a site stores 10^4 and then 10^7 keys of 256 bits and
// reports the process's resident memory at both; stored key lives in the bbolt file, not in
// the heap. It takes a minute or so: run it with QKMS_MEMFLAT=1 (docs/benchmarks.md).
func TestMemoryFlat(t *testing.T) {
	if os.Getenv("QKMS_MEMFLAT") == "" {
		t.Skip("set QKMS_MEMFLAT=1 to run (ingests 320 MB of key)")
	}
	tp := newTestPair(t, func(c *PairConfig) { c.Durability = "os" })
	a := tp.Sites[0]
	const blockBytes = 4 << 20
	blk := make([]byte, blockBytes)
	rand.Read(blk)
	buf := make([]byte, blockBytes)
	stored, seq := int64(0), uint64(0)
	for _, target := range []int64{1e4, 1e7} {
		for stored < target*32 {
			n := min(int64(blockBytes), target*32-stored+tagKeyBytes+32)
			copy(buf, blk)
			buf[0], buf[1] = byte(seq), byte(seq>>8) // a different block each time
			if err := a.Ingest(context.Background(), "KME-B", fmt.Sprint("m-", seq), seq, buf[:n], 0.02); err != nil {
				t.Fatal(err)
			}
			stored += n - tagKeyBytes
			seq++
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		t.Logf("%.0e keys stored (%d MB of key): RSS %d MB (anonymous %d MB, file-backed %d MB: bbolt's mmap), Go heap in use %d MB",
			float64(target), stored>>20, rssMB(t, "VmRSS:"), rssMB(t, "RssAnon:"), rssMB(t, "RssFile:"), ms.HeapInuse>>20)
		// The anonymous part includes heap the collector freed but the runtime has not handed
		// back to the OS yet (its scavenger does so over minutes); return it now to see what
		// the process really holds.
		debug.FreeOSMemory()
		t.Logf("%.0e keys stored, after returning freed heap to the OS: RSS %d MB (anonymous %d MB, file-backed %d MB)",
			float64(target), rssMB(t, "VmRSS:"), rssMB(t, "RssAnon:"), rssMB(t, "RssFile:"))
	}
}

// rssMB reads one memory field (kB) of /proc/self/status, in MB.
func rssMB(t *testing.T, field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb >> 10
		}
	}
	return -1
}
