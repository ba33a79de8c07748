package audit

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/qkms/qkms/kms"
)

// Signature contexts (FIPS 204 ctx strings): a checkpoint signature cannot be replayed as an
// export end, nor either as a signature of another protocol using the same key.
const (
	CheckpointContext = "qkms audit checkpoint v1"
	EndContext        = "qkms audit export end v1"
)

// CheckpointMessage is what a site signs to checkpoint entry seq, whose hash is head.
func CheckpointMessage(kme string, seq uint64, head []byte) []byte {
	return signedMessage(kme, seq, head, nil)
}

// End is the last line of an export: the site vouches that the export holds every entry up to
// Seq, whose hash is Head.
type End struct {
	KME       string    `json:"kme"`
	Seq       uint64    `json:"seq"`  // last entry exported (0 for an empty trail)
	Head      []byte    `json:"head"` // its hash (zeros for an empty trail)
	Time      time.Time `json:"time"` // when the export was made
	Signer    string    `json:"signer"`
	Signature []byte    `json:"sig"`
}

// EndMessage is what a site signs for the end line of an export.
func EndMessage(e *End) []byte {
	return signedMessage(e.KME, e.Seq, e.Head, binary.BigEndian.AppendUint64(nil, uint64(e.Time.UnixNano())))
}

func signedMessage(kme string, seq uint64, head, extra []byte) []byte {
	b := binary.AppendUvarint(nil, uint64(len(kme)))
	b = append(b, kme...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.AppendUvarint(b, uint64(len(head)))
	b = append(b, head...)
	return append(b, extra...)
}

// line is one line of an export: an entry, or the end.
type line struct {
	kms.AuditEntry
	End *End `json:"end,omitempty"`
}

// Writer writes an export. Entries must be written in Seq order from 1, then Close writes the
// signed end.
type Writer struct {
	w    *bufio.Writer
	enc  *json.Encoder
	seq  uint64
	head []byte
}

// NewWriter starts an export on w.
func NewWriter(w io.Writer) *Writer {
	bw := bufio.NewWriterSize(w, 64<<10)
	return &Writer{w: bw, enc: json.NewEncoder(bw), head: make([]byte, kms.AuditHashSize)}
}

// Entry writes one entry (one line).
func (w *Writer) Entry(e *kms.AuditEntry) error {
	if e.Seq != w.seq+1 {
		return fmt.Errorf("audit: export entry %d after entry %d", e.Seq, w.seq)
	}
	if err := w.enc.Encode(e); err != nil {
		return fmt.Errorf("audit: export entry %d: %w", e.Seq, err)
	}
	w.seq, w.head = e.Seq, e.Hash
	return nil
}

// Head returns the Seq and hash of the last entry written.
func (w *Writer) Head() (uint64, []byte) { return w.seq, w.head }

// Close writes the end line, signed by sign (which returns the signer's key ID and the
// signature over EndMessage under EndContext), and flushes.
func (w *Writer) Close(kme string, now time.Time, sign func(msg []byte) (signer string, sig []byte, err error)) error {
	end := &End{KME: kme, Seq: w.seq, Head: w.head, Time: now.UTC()}
	var err error
	if end.Signer, end.Signature, err = sign(EndMessage(end)); err != nil {
		return fmt.Errorf("audit: sign export end: %w", err)
	}
	if err := w.enc.Encode(struct {
		End *End `json:"end"`
	}{end}); err != nil {
		return fmt.Errorf("audit: export end: %w", err)
	}
	return w.w.Flush()
}
