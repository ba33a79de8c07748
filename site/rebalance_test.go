package site

import (
	"context"
	"testing"

	"github.com/google/uuid"
)

// A site asked for blocks keeps at least half of the free key it owns, whatever the request
// asks for: owning one block it gives none, owning three it gives one.
func TestRequestBlocksKeepsHalf(t *testing.T) {
	const size = 8192
	for _, c := range []struct{ owned, give int }{{1, 0}, {3, 1}} {
		tp := newTestPair(t, nil)
		tp.ingest(2*c.owned, size) // each site owns every other block
		tp.waitKey(int64(c.owned-1)*size + 1)
		a, b := tp.Sites[0], tp.Sites[1]
		before := a.Available(b.KMEID())
		ids, err := peerService{a}.RequestBlocks(context.Background(), b.KMEID(), uuid.NewString(), 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		after := a.Available(b.KMEID())
		if len(ids) != c.give || after*2 < before {
			t.Fatalf("owning %d bytes in %d blocks: gave %d blocks, %d bytes left; want %d given and at least half kept",
				before, c.owned, len(ids), after, c.give)
		}
	}
}
