package peer

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qkms/qkms/api/peerpb"
	"github.com/qkms/qkms/kms"
)

// Limits on one message. They bound the work and memory a peer can cause per call; the gRPC
// message size limit (4 MiB by default) bounds the rest.
const (
	MaxTags         = 4096    // tags per CompareBlocks
	MaxTagBytes     = 64      // bytes per tag (a SHA-512-sized MAC at most)
	MaxReservations = 1024    // reservations per PushReservations / PullReservations answer
	MaxKeyIDs       = 1024    // key IDs per PullReservations
	MaxSlaves       = 64      // slave SAEs per reservation (slave + additional slaves)
	MaxRanges       = 1024    // ranges per reservation
	MaxEpochMessage = 8192    // an epoch exchange message (an X-Wing offer is 1,237 bytes)
	maxEpochID      = 64      // epoch IDs are 32 hex characters
	MaxKeyBits      = 1 << 23 // bits per key (1 MiB keys)
	MaxBlockBytes   = 1 << 30 // bound on any offset + length inside a block
	MaxWantBytes    = 1 << 40 // bytes asked for in one RequestBlocks
	MaxBlocks       = 4096    // blocks transferred by one RequestBlocks
	MaxIDLen        = 256     // bytes in a KME, SAE or block ID (as pki.MaxIDLen)
	MaxDetailLen    = 512     // bytes of a reject's detail (longer ones are cut)
)

// ErrInvalid is wrapped by every validation failure of a message, in either direction. The
// server answers it with codes.InvalidArgument.
var ErrInvalid = errors.New("peer: invalid message")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// quote shows an untrusted string in an error without letting it flood logs.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// checkID applies the project's entity ID rule (pki.CheckID: non-empty, at most MaxIDLen
// bytes, UTF-8, no control characters, no slashes or "..") to KME, SAE and block IDs, which
// end up in URL paths, file names and logs at the other site.
func checkID(kind, id string) error {
	if plainID(id) {
		return nil
	}
	bad := ""
	switch {
	case id == "":
		bad = "empty"
	case len(id) > MaxIDLen:
		bad = "longer than " + strconv.Itoa(MaxIDLen) + " bytes"
	case !utf8.ValidString(id):
		bad = "not UTF-8"
	case strings.ContainsAny(id, `/\`):
		bad = "contains a slash"
	case strings.Contains(id, ".."), id == ".":
		bad = "contains dots"
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		bad = "contains a control character"
	}
	if bad != "" {
		return invalid("%s ID %s: %s", kind, quote(id), bad)
	}
	return nil
}

// plainID is checkID's common case in one pass and no allocation: a non-empty ASCII ID of at
// most MaxIDLen bytes, with no slash, backslash, control character or "..", and not ".".
// Every ID it accepts passes the full rule; the others (non-ASCII ones included) go through it.
func plainID(id string) bool {
	if id == "" || len(id) > MaxIDLen || id == "." {
		return false
	}
	var prev byte
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c < 0x20 || c >= 0x7f || c == '/' || c == '\\' || c == '.' && prev == '.' {
			return false
		}
		prev = c
	}
	return true
}

// checkKeyID requires the canonical lower-case form of a UUID (RFC 9562 clause 4), so one key
// has exactly one spelling at both sites.
func checkKeyID(id string) error {
	if !canonicalUUID(id) {
		return invalid("key ID %s is not a canonical lower-case UUID", quote(id))
	}
	return nil
}

// canonicalUUID says whether s is a UUID in its canonical form: 36 characters, hyphens at 8,
// 13, 18 and 23, lower-case hexadecimal digits elsewhere. That is what uuid.Parse accepts and
// String gives back unchanged, without parsing into a value and formatting it again.
func canonicalUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

// checkKeyIDs validates a list of key IDs: count, form, no duplicates.
func checkKeyIDs(ids []string, max int) error {
	if len(ids) == 0 {
		return invalid("no key IDs")
	}
	if len(ids) > max {
		return invalid("%d key IDs, at most %d per call", len(ids), max)
	}
	seen := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		if err := checkKeyID(id); err != nil {
			return err
		}
		if _, dup := seen[id]; dup {
			return invalid("key ID %s appears twice", id)
		}
		seen[id] = struct{}{}
	}
	return nil
}

// checkTags validates the tags of a CompareBlocks request.
func checkTags(tags []BlockTag) error {
	if len(tags) == 0 {
		return invalid("no tags")
	}
	if len(tags) > MaxTags {
		return invalid("%d tags, at most %d per call", len(tags), MaxTags)
	}
	seen := make(map[string]struct{}, len(tags))
	for _, t := range tags {
		if err := checkID("block", t.BlockID); err != nil {
			return err
		}
		if len(t.Tag) == 0 || len(t.Tag) > MaxTagBytes {
			return invalid("tag of block %s has %d bytes, want 1 to %d", quote(t.BlockID), len(t.Tag), MaxTagBytes)
		}
		if _, dup := seen[t.BlockID]; dup {
			return invalid("block %s appears twice", quote(t.BlockID))
		}
		seen[t.BlockID] = struct{}{}
	}
	return nil
}

func tagsFromProto(in []*peerpb.BlockTag) ([]BlockTag, error) {
	if len(in) > MaxTags {
		return nil, invalid("%d tags, at most %d per call", len(in), MaxTags)
	}
	out := make([]BlockTag, len(in))
	for i, t := range in {
		out[i] = BlockTag{BlockID: t.GetBlockId(), Tag: bytes.Clone(t.GetTag())}
	}
	return out, checkTags(out)
}

func tagsToProto(in []BlockTag) []*peerpb.BlockTag {
	out := make([]*peerpb.BlockTag, len(in))
	for i, t := range in {
		out[i] = &peerpb.BlockTag{BlockId: t.BlockID, Tag: t.Tag}
	}
	return out
}

// verdictsFromProto validates a CompareBlocks answer against the request: one verdict per
// asked block, none for a block not asked about.
func verdictsFromProto(in []*peerpb.BlockVerdict, asked []BlockTag) ([]Verdict, error) {
	if len(in) != len(asked) {
		return nil, invalid("%d verdicts for %d blocks", len(in), len(asked))
	}
	want := make(map[string]bool, len(asked))
	for _, t := range asked {
		want[t.BlockID] = true
	}
	out := make([]Verdict, len(in))
	for i, v := range in {
		id := v.GetBlockId()
		pending, ok := want[id]
		if !ok {
			return nil, invalid("verdict for block %s that was not asked about", quote(id))
		}
		if !pending {
			return nil, invalid("two verdicts for block %s", quote(id))
		}
		want[id] = false
		o, err := outcomeFromProto(v.GetVerdict())
		if err != nil {
			return nil, fmt.Errorf("block %s: %w", quote(id), err)
		}
		out[i] = Verdict{BlockID: id, Outcome: o}
	}
	return out, nil
}

// checkVerdicts validates a Service's answer to CompareBlocks before it goes on the wire.
func checkVerdicts(vs []Verdict, asked []BlockTag) error {
	pb := make([]*peerpb.BlockVerdict, len(vs))
	for i, v := range vs {
		pb[i] = &peerpb.BlockVerdict{BlockId: v.BlockID, Verdict: outcomeToProto(v.Outcome)}
	}
	_, err := verdictsFromProto(pb, asked)
	return err
}

func outcomeFromProto(v peerpb.Verdict) (Outcome, error) {
	switch v {
	case peerpb.Verdict_VERDICT_MATCH:
		return OutcomeMatch, nil
	case peerpb.Verdict_VERDICT_MISMATCH:
		return OutcomeMismatch, nil
	case peerpb.Verdict_VERDICT_UNKNOWN:
		return OutcomeUnknown, nil
	}
	return 0, invalid("verdict %d is not defined", int32(v))
}

func outcomeToProto(o Outcome) peerpb.Verdict {
	switch o {
	case OutcomeMatch:
		return peerpb.Verdict_VERDICT_MATCH
	case OutcomeMismatch:
		return peerpb.Verdict_VERDICT_MISMATCH
	case OutcomeUnknown:
		return peerpb.Verdict_VERDICT_UNKNOWN
	}
	return peerpb.Verdict_VERDICT_UNSPECIFIED
}

func verdictsToProto(vs []Verdict) []*peerpb.BlockVerdict {
	out := make([]*peerpb.BlockVerdict, len(vs))
	for i, v := range vs {
		out[i] = &peerpb.BlockVerdict{BlockId: v.BlockID, Verdict: outcomeToProto(v.Outcome)}
	}
	return out
}

func provenanceFromProto(p peerpb.Provenance) (kms.Provenance, error) {
	switch p {
	case peerpb.Provenance_PROVENANCE_QKD:
		return kms.ProvenanceQKD, nil
	case peerpb.Provenance_PROVENANCE_HYBRID:
		return kms.ProvenanceHybrid, nil
	case peerpb.Provenance_PROVENANCE_PQC:
		return kms.ProvenancePQC, nil
	}
	return "", invalid("provenance %d is not defined", int32(p))
}

func provenanceToProto(p kms.Provenance) peerpb.Provenance {
	switch p {
	case kms.ProvenanceQKD:
		return peerpb.Provenance_PROVENANCE_QKD
	case kms.ProvenanceHybrid:
		return peerpb.Provenance_PROVENANCE_HYBRID
	case kms.ProvenancePQC:
		return peerpb.Provenance_PROVENANCE_PQC
	}
	return peerpb.Provenance_PROVENANCE_UNSPECIFIED
}

// The range of a valid protobuf Timestamp, 0001-01-01 to 9999-12-31 UTC, in Unix seconds.
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
)

// checkTimestamp is timestamppb.New(t).CheckValid() without building the message: a time.Time's
// nanoseconds are always in range, so only its seconds can be outside.
func checkTimestamp(t time.Time) error {
	if sec := t.Unix(); sec >= minTimestampSeconds && sec <= maxTimestampSeconds {
		return nil
	}
	return timestamppb.New(t).CheckValid()
}

func timeFromProto(what string, ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, invalid("%s time missing", what)
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, invalid("%s time: %v", what, err)
	}
	return ts.AsTime(), nil
}

// reservationFromProto converts and validates a reservation received from a peer. Fields
// local to one site (Fetched, State, Pushed) start at their zero values.
func reservationFromProto(in *peerpb.Reservation) (kms.Reservation, error) {
	if in == nil {
		return kms.Reservation{}, invalid("empty reservation")
	}
	if len(in.GetSlaves()) > MaxSlaves {
		return kms.Reservation{}, invalid("%d slaves, at most %d", len(in.GetSlaves()), MaxSlaves)
	}
	if len(in.GetRanges()) > MaxRanges {
		return kms.Reservation{}, invalid("%d ranges, at most %d", len(in.GetRanges()), MaxRanges)
	}
	prov, err := provenanceFromProto(in.GetProvenance())
	if err != nil {
		return kms.Reservation{}, err
	}
	issued, err := timeFromProto("issued", in.GetIssued())
	if err != nil {
		return kms.Reservation{}, err
	}
	expires, err := timeFromProto("expires", in.GetExpires())
	if err != nil {
		return kms.Reservation{}, err
	}
	if in.GetBits() <= 0 || in.GetBits() > MaxKeyBits {
		return kms.Reservation{}, invalid("key size %d bits, want 8 to %d", in.GetBits(), MaxKeyBits)
	}
	r := kms.Reservation{
		KeyID:      in.GetKeyId(),
		Peer:       in.GetPeer(),
		Owner:      in.GetOwner(),
		Master:     in.GetMaster(),
		Slaves:     slices.Clone(in.GetSlaves()),
		Bits:       int(in.GetBits()),
		Provenance: prov,
		Issued:     issued,
		Expires:    expires,
		Epoch:      in.GetEpoch(),
	}
	if len(in.GetRanges()) > 0 {
		r.Ranges = make([]kms.Range, len(in.GetRanges()))
	}
	for i, g := range in.GetRanges() {
		if g.GetOff() < 0 || g.GetLen() <= 0 || g.GetOff() > MaxBlockBytes || g.GetLen() > MaxBlockBytes-g.GetOff() {
			return kms.Reservation{}, invalid("key %s range %d [%d, +%d) outside [0, %d)", quote(r.KeyID), i, g.GetOff(), g.GetLen(), MaxBlockBytes)
		}
		r.Ranges[i] = kms.Range{Block: g.GetBlockId(), Off: int(g.GetOff()), Len: int(g.GetLen())}
	}
	return r, checkReservation(r)
}

func reservationToProto(r kms.Reservation) *peerpb.Reservation {
	out := &peerpb.Reservation{
		KeyId:      r.KeyID,
		Peer:       r.Peer,
		Owner:      r.Owner,
		Master:     r.Master,
		Slaves:     r.Slaves,
		Bits:       int64(r.Bits),
		Provenance: provenanceToProto(r.Provenance),
		Issued:     timestamppb.New(r.Issued),
		Expires:    timestamppb.New(r.Expires),
		Epoch:      r.Epoch,
	}
	if len(r.Ranges) > 0 {
		out.Ranges = make([]*peerpb.Range, len(r.Ranges))
	}
	for i, g := range r.Ranges {
		out.Ranges[i] = &peerpb.Range{BlockId: g.Block, Off: int64(g.Off), Len: int64(g.Len)}
	}
	return out
}

// checkReservation is the one validation of a reservation's wire-visible fields, applied to
// what the client sends, what the server receives and what the client receives.
func checkReservation(r kms.Reservation) error {
	if err := checkKeyID(r.KeyID); err != nil {
		return err
	}
	key := r.KeyID
	for _, f := range []struct{ kind, id string }{{"peer KME", r.Peer}, {"owner KME", r.Owner}, {"master SAE", r.Master}} {
		if err := checkID(f.kind, f.id); err != nil {
			return fmt.Errorf("key %s: %w", key, err)
		}
	}
	if r.Peer == r.Owner {
		return invalid("key %s: owner and peer are both %s", key, quote(r.Owner))
	}
	if len(r.Slaves) == 0 || len(r.Slaves) > MaxSlaves {
		return invalid("key %s: %d slaves, want 1 to %d", key, len(r.Slaves), MaxSlaves)
	}
	for i, s := range r.Slaves {
		if err := checkID("slave SAE", s); err != nil {
			return fmt.Errorf("key %s: %w", key, err)
		}
		// At most MaxSlaves, nearly always one: comparing with those before costs less than a map.
		if slices.Contains(r.Slaves[:i], s) {
			return invalid("key %s: slave %s appears twice", key, quote(s))
		}
	}
	// ETSI GS QKD 014 clause 6.4: key sizes are multiples of 8 bits.
	if r.Bits <= 0 || r.Bits > MaxKeyBits || r.Bits%8 != 0 {
		return invalid("key %s: size %d bits, want a multiple of 8 from 8 to %d", key, r.Bits, MaxKeyBits)
	}
	if provenanceToProto(r.Provenance) == peerpb.Provenance_PROVENANCE_UNSPECIFIED {
		return invalid("key %s: provenance %s is not defined", key, quote(string(r.Provenance)))
	}
	if err := checkRanges(r); err != nil {
		return err
	}
	// Hybrid and pqc keys are derived from a PQ epoch both sites hold; qkd keys from none.
	if (r.Provenance == kms.ProvenanceQKD) != (r.Epoch == "") {
		return invalid("key %s: %s key with epoch %s", key, r.Provenance, quote(r.Epoch))
	}
	if len(r.Epoch) > maxEpochID {
		return invalid("key %s: epoch ID of %d bytes", key, len(r.Epoch))
	}
	if r.Issued.IsZero() || r.Expires.IsZero() {
		return invalid("key %s: issued and expires times are required", key)
	}
	if err := checkTimestamp(r.Issued); err != nil {
		return invalid("key %s: issued time: %v", key, err)
	}
	if err := checkTimestamp(r.Expires); err != nil {
		return invalid("key %s: expires time: %v", key, err)
	}
	if !r.Expires.After(r.Issued) {
		return invalid("key %s: expires %s is not after issued %s", key, r.Expires.Format(time.RFC3339Nano), r.Issued.Format(time.RFC3339Nano))
	}
	return nil
}

// checkRanges requires the ranges to be in bounds, disjoint, and to hold exactly the key's
// bytes. A pqc key (PQ-derived, no QKD bits) may have none; qkd and hybrid keys need them.
func checkRanges(r kms.Reservation) error {
	key := r.KeyID
	if len(r.Ranges) > MaxRanges {
		return invalid("key %s: %d ranges, at most %d", key, len(r.Ranges), MaxRanges)
	}
	if len(r.Ranges) == 0 {
		if r.Provenance == kms.ProvenancePQC {
			return nil
		}
		return invalid("key %s: %s key without block ranges", key, r.Provenance)
	}
	total := 0
	for i, g := range r.Ranges {
		if err := checkID("block", g.Block); err != nil {
			return fmt.Errorf("key %s range %d: %w", key, i, err)
		}
		if g.Off < 0 || g.Len <= 0 || g.Off > MaxBlockBytes || g.Len > MaxBlockBytes-g.Off {
			return invalid("key %s range %d [%d, +%d) outside [0, %d)", key, i, g.Off, g.Len, MaxBlockBytes)
		}
		total += g.Len // at most MaxRanges*MaxBlockBytes = 2^40: no overflow of a 64-bit int
		if total > MaxKeyBits/8 {
			return invalid("key %s: ranges hold more than %d bytes", key, MaxKeyBits/8)
		}
	}
	if total*8 != r.Bits {
		return invalid("key %s: ranges hold %d bytes for a %d-bit key", key, total, r.Bits)
	}
	if len(r.Ranges) == 1 {
		return nil
	}
	sorted := slices.Clone(r.Ranges)
	slices.SortFunc(sorted, func(a, b kms.Range) int {
		if c := strings.Compare(a.Block, b.Block); c != 0 {
			return c
		}
		return a.Off - b.Off
	})
	for i := 1; i < len(sorted); i++ {
		a, b := sorted[i-1], sorted[i]
		if a.Block == b.Block && a.Off+a.Len > b.Off {
			return invalid("key %s: ranges of block %s overlap at byte %d", key, quote(a.Block), b.Off)
		}
	}
	return nil
}

// reservationsFromProto converts a list of reservations, rejecting duplicate key IDs.
func reservationsFromProto(in []*peerpb.Reservation) ([]kms.Reservation, error) {
	if len(in) > MaxReservations {
		return nil, invalid("%d reservations, at most %d per call", len(in), MaxReservations)
	}
	out := make([]kms.Reservation, len(in))
	seen := make(map[string]struct{}, len(in))
	for i, p := range in {
		r, err := reservationFromProto(p)
		if err != nil {
			return nil, fmt.Errorf("reservation %d: %w", i, err)
		}
		if _, dup := seen[r.KeyID]; dup {
			return nil, invalid("key %s appears twice", r.KeyID)
		}
		seen[r.KeyID] = struct{}{}
		out[i] = r
	}
	return out, nil
}

// checkReservations validates reservations about to be sent.
func checkReservations(rs []kms.Reservation) error {
	if len(rs) == 0 {
		return invalid("no reservations")
	}
	if len(rs) > MaxReservations {
		return invalid("%d reservations, at most %d per call", len(rs), MaxReservations)
	}
	seen := make(map[string]struct{}, len(rs))
	for i, r := range rs {
		if err := checkReservation(r); err != nil {
			return fmt.Errorf("reservation %d: %w", i, err)
		}
		if _, dup := seen[r.KeyID]; dup {
			return invalid("key %s appears twice", r.KeyID)
		}
		seen[r.KeyID] = struct{}{}
	}
	return nil
}

func reservationsToProto(rs []kms.Reservation) []*peerpb.Reservation {
	out := make([]*peerpb.Reservation, len(rs))
	for i, r := range rs {
		out[i] = reservationToProto(r)
	}
	return out
}

func rejectReasonToProto(r RejectReason) peerpb.RejectReason {
	switch r {
	case RejectRetryLater:
		return peerpb.RejectReason_REJECT_REASON_RETRY_LATER
	case RejectInvalid:
		return peerpb.RejectReason_REJECT_REASON_INVALID
	}
	return peerpb.RejectReason_REJECT_REASON_UNSPECIFIED
}

func rejectReasonFromProto(r peerpb.RejectReason) (RejectReason, error) {
	switch r {
	case peerpb.RejectReason_REJECT_REASON_RETRY_LATER:
		return RejectRetryLater, nil
	case peerpb.RejectReason_REJECT_REASON_INVALID:
		return RejectInvalid, nil
	}
	return 0, invalid("reject reason %d is not defined", int32(r))
}

// truncDetail cuts a reject detail to MaxDetailLen bytes on a rune boundary.
func truncDetail(s string) string {
	if len(s) <= MaxDetailLen {
		return s
	}
	s = s[:MaxDetailLen]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// pushAnswerFromProto validates a PushReservations answer: every pushed key ID is either
// accepted or rejected, exactly once.
func pushAnswerFromProto(resp *peerpb.PushReservationsResponse, pushed []kms.Reservation) ([]string, []Reject, error) {
	want := make(map[string]bool, len(pushed))
	for _, r := range pushed {
		want[r.KeyID] = true
	}
	answer := func(id string) error {
		pending, ok := want[id]
		if !ok {
			return invalid("answer for key %s that was not pushed", quote(id))
		}
		if !pending {
			return invalid("two answers for key %s", id)
		}
		want[id] = false
		return nil
	}
	if n := len(resp.GetAccepted()) + len(resp.GetRejected()); n != len(pushed) {
		return nil, nil, invalid("%d answers for %d reservations", n, len(pushed))
	}
	accepted := slices.Clone(resp.GetAccepted())
	for _, id := range accepted {
		if err := answer(id); err != nil {
			return nil, nil, err
		}
	}
	var rejected []Reject
	for _, rj := range resp.GetRejected() {
		if err := answer(rj.GetKeyId()); err != nil {
			return nil, nil, err
		}
		reason, err := rejectReasonFromProto(rj.GetReason())
		if err != nil {
			return nil, nil, fmt.Errorf("key %s: %w", rj.GetKeyId(), err)
		}
		rejected = append(rejected, Reject{KeyID: rj.GetKeyId(), Reason: reason, Detail: truncDetail(rj.GetDetail())})
	}
	return accepted, rejected, nil
}

func pushAnswerToProto(accepted []string, rejected []Reject) *peerpb.PushReservationsResponse {
	out := &peerpb.PushReservationsResponse{Accepted: accepted}
	for _, rj := range rejected {
		out.Rejected = append(out.Rejected, &peerpb.Reject{
			KeyId:  rj.KeyID,
			Reason: rejectReasonToProto(rj.Reason),
			Detail: truncDetail(rj.Detail),
		})
	}
	return out
}

// pullAnswerFromProto validates a PullReservations answer: reservations issued by the
// responder (owner), only for key IDs that were asked for, each at most once.
func pullAnswerFromProto(in []*peerpb.Reservation, asked []string, owner string) ([]kms.Reservation, error) {
	rs, err := reservationsFromProto(in)
	if err != nil {
		return nil, err
	}
	if err := checkPulled(rs, asked, owner); err != nil {
		return nil, err
	}
	return rs, nil
}

// checkPulled checks reservations answering a pull (after reservationsFromProto or
// checkReservation of each).
func checkPulled(rs []kms.Reservation, asked []string, owner string) error {
	want := make(map[string]bool, len(asked))
	for _, id := range asked {
		want[id] = true
	}
	for _, r := range rs {
		pending, ok := want[r.KeyID]
		if !ok {
			return invalid("reservation for key %s that was not asked for", r.KeyID)
		}
		if !pending {
			return invalid("two reservations for key %s", r.KeyID)
		}
		want[r.KeyID] = false
		if r.Owner != owner {
			return invalid("key %s is owned by %s, not by the answering site %s", r.KeyID, quote(r.Owner), quote(owner))
		}
	}
	return nil
}

// checkBlockIDs validates the block IDs of a RequestBlocks answer.
func checkBlockIDs(ids []string) error {
	if len(ids) > MaxBlocks {
		return invalid("%d blocks, at most %d per transfer", len(ids), MaxBlocks)
	}
	seen := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		if err := checkID("block", id); err != nil {
			return err
		}
		if _, dup := seen[id]; dup {
			return invalid("block %s appears twice", quote(id))
		}
		seen[id] = struct{}{}
	}
	return nil
}

// checkWant validates a RequestBlocks request.
func checkWant(requestID string, wantBytes int64) error {
	if err := checkKeyID(requestID); err != nil {
		return fmt.Errorf("request ID: %w", err)
	}
	if wantBytes <= 0 || wantBytes > MaxWantBytes {
		return invalid("want %d bytes, want 1 to %d", wantBytes, int64(MaxWantBytes))
	}
	return nil
}
