package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"

	"github.com/qkms/qkms/identity"
	"github.com/qkms/qkms/kms"
)

// Sentinel errors of Verify; a *VerifyError unwraps to one of them.
var (
	// ErrMalformed: a line is not an entry or end line of this format.
	ErrMalformed = errors.New("audit: malformed export line")
	// ErrBroken: the hash chain is broken here: an entry was edited, deleted, inserted or moved.
	ErrBroken = errors.New("audit: hash chain broken")
	// ErrSignature: a checkpoint or end signature does not verify under the keys given, or
	// signs a head that is not this chain's.
	ErrSignature = errors.New("audit: signature does not verify")
	// ErrTruncated: the export ends without its signed end line.
	ErrTruncated = errors.New("audit: export truncated (no signed end line)")
)

// VerifyError locates the first bad entry of an export.
type VerifyError struct {
	Line   int    // 1-based line of the export
	Seq    uint64 // Seq the entry at that line should have had
	Reason string
	Kind   error // ErrMalformed, ErrBroken, ErrSignature or ErrTruncated
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("%v at line %d (entry %d): %s", e.Kind, e.Line, e.Seq, e.Reason)
}

func (e *VerifyError) Unwrap() error { return e.Kind }

// Report summarises a verified export (or the part before the first bad entry).
type Report struct {
	KME         string   // site named by the checkpoints and the end line
	Entries     uint64   // entries checked, checkpoints included
	Checkpoints int      // checkpoint signatures verified
	Signed      uint64   // Seq of the last entry covered by a verified signature
	Head        []byte   // hash of the last entry
	Signers     []string // key IDs that signed
	Events      map[kms.AuditEvent]uint64
}

// maxLine bounds one line (an entry of a large Issue: 1024 key IDs with fingerprints).
const maxLine = 16 << 20

// Verify checks an export read from r: every line well formed, Seq from 1 without gaps, each
// entry's Prev the hash of the entry before and its Hash that of its canonical encoding, every
// checkpoint signing a hash this chain holds at that Seq under one of keys, and a signed end
// line that vouches for the last entry. It returns at the first bad entry with a *VerifyError
// giving its position; the Report then covers what came before.
func Verify(r io.Reader, keys ...*mldsa65.PublicKey) (Report, error) {
	byID := make(map[string]*mldsa65.PublicKey, len(keys))
	for _, k := range keys {
		byID[identity.KeyID(k)] = k
	}
	v := verifier{keys: byID, prev: make([]byte, kms.AuditHashSize),
		ring: make([][kms.AuditHashSize]byte, kms.AuditCheckpointLag),
		rep:  Report{Events: map[kms.AuditEvent]uint64{}}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256<<10), maxLine)
	lineNo := 0
	var ended bool
	for sc.Scan() {
		lineNo++
		if ended {
			return v.rep, &VerifyError{lineNo, v.seq + 1, "data after the end line", ErrMalformed}
		}
		var l line
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			return v.rep, &VerifyError{lineNo, v.seq + 1, err.Error(), ErrMalformed}
		}
		if dec.More() {
			return v.rep, &VerifyError{lineNo, v.seq + 1, "more than one value on the line", ErrMalformed}
		}
		var err *VerifyError
		if l.End != nil {
			err, ended = v.end(&l), true
		} else {
			err = v.entry(&l.AuditEntry)
		}
		if err != nil {
			err.Line = lineNo
			return v.rep, err
		}
	}
	if err := sc.Err(); err != nil {
		return v.rep, &VerifyError{lineNo + 1, v.seq + 1, err.Error(), ErrMalformed}
	}
	if !ended {
		return v.rep, &VerifyError{lineNo + 1, v.seq + 1, fmt.Sprintf("the export stops after entry %d without the site's signed end", v.seq), ErrTruncated}
	}
	return v.rep, nil
}

type verifier struct {
	keys    map[string]*mldsa65.PublicKey
	seq     uint64
	prev    []byte
	ring    [][kms.AuditHashSize]byte // hash of entry s at s % AuditCheckpointLag
	scratch []byte
	rep     Report
}

func (v *verifier) entry(e *kms.AuditEntry) *VerifyError {
	want := v.seq + 1
	bad := func(kind error, format string, args ...any) *VerifyError {
		return &VerifyError{Seq: want, Reason: fmt.Sprintf(format, args...), Kind: kind}
	}
	switch {
	case e.Seq != want:
		return bad(ErrBroken, "entry %d where entry %d should be (deleted, inserted or reordered)", e.Seq, want)
	case !slices.Contains(kms.AuditEvents, e.Event):
		return bad(ErrMalformed, "unknown event %q", e.Event)
	case !bytes.Equal(e.Prev, v.prev):
		return bad(ErrBroken, "prev is not the hash of entry %d", v.seq)
	}
	v.scratch = kms.AppendAuditCanonical(v.scratch[:0], e)
	h := sha256.Sum256(v.scratch)
	if !bytes.Equal(h[:], e.Hash) {
		return bad(ErrBroken, "hash does not match the entry's content (edited)")
	}
	if cp := e.Checkpoint; cp != nil || e.Event == kms.EventCheckpoint {
		if cp == nil || e.Event != kms.EventCheckpoint {
			return bad(ErrMalformed, "checkpoint data and event disagree")
		}
		if cp.Seq == 0 || cp.Seq >= e.Seq || e.Seq-cp.Seq > kms.AuditCheckpointLag {
			return bad(ErrSignature, "checkpoint signs entry %d, not within the %d before it", cp.Seq, kms.AuditCheckpointLag)
		}
		if !bytes.Equal(v.ring[cp.Seq%kms.AuditCheckpointLag][:], cp.Head) {
			return bad(ErrSignature, "checkpoint signs a head that is not entry %d of this chain", cp.Seq)
		}
		if err := v.signature(cp.KME, cp.Signer, CheckpointMessage(cp.KME, cp.Seq, cp.Head), CheckpointContext, cp.Signature); err != "" {
			return bad(ErrSignature, "checkpoint of entry %d: %s", cp.Seq, err)
		}
		v.rep.Checkpoints++
		v.rep.Signed = max(v.rep.Signed, cp.Seq)
	}
	v.seq, v.prev = e.Seq, e.Hash
	v.ring[e.Seq%kms.AuditCheckpointLag] = h
	v.rep.Entries++
	v.rep.Head = e.Hash
	v.rep.Events[e.Event]++
	return nil
}

func (v *verifier) end(l *line) *VerifyError {
	end := l.End
	bad := func(kind error, format string, args ...any) *VerifyError {
		return &VerifyError{Seq: v.seq + 1, Reason: fmt.Sprintf(format, args...), Kind: kind}
	}
	if l.Seq != 0 || l.Event != "" || l.Hash != nil || l.Prev != nil {
		return bad(ErrMalformed, "end line carries entry fields")
	}
	if end.Seq != v.seq || !bytes.Equal(end.Head, v.prev) {
		return bad(ErrTruncated, "the signed end vouches for entry %d but the export holds %d entries", end.Seq, v.seq)
	}
	if err := v.signature(end.KME, end.Signer, EndMessage(end), EndContext, end.Signature); err != "" {
		return bad(ErrSignature, "end line: %s", err)
	}
	v.rep.Signed = end.Seq
	return nil
}

// signature checks one signature and that every signature of the export is by one site.
func (v *verifier) signature(kme, signer string, msg []byte, ctx string, sig []byte) string {
	if v.rep.KME == "" {
		v.rep.KME = kme
	} else if kme != v.rep.KME {
		return fmt.Sprintf("signed for %q in an export of %q", kme, v.rep.KME)
	}
	pk, ok := v.keys[signer]
	if !ok {
		return fmt.Sprintf("signer %q is not among the public keys given", signer)
	}
	if !identity.Verify(pk, msg, ctx, sig) {
		return fmt.Sprintf("signature by %s does not verify", signer)
	}
	if !slices.Contains(v.rep.Signers, signer) {
		v.rep.Signers = append(v.rep.Signers, signer)
	}
	return ""
}
