package site

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"

	"github.com/qkms/qkms/kms"
)

// tagKeyBytes is how much of every block is spent on the key of its fingerprint. The
// fingerprint HMAC-SHA256(block[:32], blockID || block[32:]) is compared with the peer's
// before any bit of the block is used: equal tags mean equal blocks, and since the HMAC key is
// secret link key that is then destroyed, the tag reveals nothing about the usable bits.
const tagKeyBytes = 32

// minBlockBytes is the smallest block worth ingesting: the tag key plus one 64-bit key.
const minBlockBytes = tagKeyBytes + 8

// blockTag computes the fingerprint of a block as both sites do.
func blockTag(blockID string, block []byte) []byte {
	m := hmac.New(sha256.New, block[:tagKeyBytes])
	m.Write([]byte(blockID))
	m.Write([]byte{0})
	m.Write(block[tagKeyBytes:])
	return m.Sum(nil)
}

// Ingest adds a block of link key shared with peer to the site. seq is the block's position in
// the link's stream, the same at both ends, and decides which side issues from it. block is
// wiped before Ingest returns.
func (n *Node) Ingest(ctx context.Context, peer, blockID string, seq uint64, block []byte, qber float64) error {
	defer clear(block)
	if len(block) < minBlockBytes {
		return fmt.Errorf("site: ingest block %s: %d bytes is below the minimum of %d", blockID, len(block), minBlockBytes)
	}
	tag := blockTag(blockID, block)
	material := block[tagKeyBytes:]
	sealed, err := n.db.Seal(peer, blockID, material)
	if err != nil {
		return fmt.Errorf("site: ingest block %s: %w", blockID, err)
	}
	_, err = n.propose(ctx, &kms.Command{
		ReqID: "ingest/" + peer + "/" + blockID,
		Ingest: &kms.IngestCmd{
			Peer: peer, BlockID: blockID, Bytes: len(material),
			Owner: kms.DefaultOwner(n.cfg.KMEID, peer, seq),
			Tag:   tag, QBER: qber, Sealed: sealed,
		},
	})
	if err != nil && !errorsIsApplied(err) {
		return fmt.Errorf("site: ingest block %s: %w", blockID, err)
	}
	select {
	case n.kick <- struct{}{}:
	default:
	}
	return nil
}
