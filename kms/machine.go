package kms

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Defaults of Config durations.
const (
	// DefaultKeyTTL is how long an issued key may wait for its slaves when the IssueCmd sets no
	// expiry.
	DefaultKeyTTL = time.Hour
	// DefaultTombstoneTTL is how long a finished reservation is kept, after its expiry, at the
	// slave site. While the tombstone exists a retried push of the same key ID is a no-op; after
	// it, a push is ignored because the key has expired. The TTL covers clock differences between
	// the nodes that propose commands.
	DefaultTombstoneTTL = 10 * time.Minute
	// DefaultRequestTTL is how long a request ID is remembered: longer than any retry of one
	// request through the replicated log (propose and forward timeouts are seconds), short
	// enough that the sealed copies of delivered keys kept for those retries go soon.
	DefaultRequestTTL = 2 * time.Minute
	// DefaultExpireLimit bounds one ExpireCmd whose Limit is not positive.
	DefaultExpireLimit = 1024
)

// ErrStorage marks a failure of the Tx. Apply's writes may then be partial: the caller must
// abort the whole transaction (the batch) rather than commit it.
var ErrStorage = errors.New("kms: storage failure")

// Error is a rejected request. It unwraps to one of the sentinel errors (Kind) and carries the
// message for the SAE (ETSI GS QKD 014 Error object, clause 6.5), which never holds key bytes.
type Error struct {
	Kind error  // ErrBadRequest, ErrUnknownSAE, ErrUnauthorized, ErrKeyNotFound, ...
	Msg  string // user-facing message, without the "kms: " prefix
	// Absent lists the requested key IDs that have no reservation at this site (Fetch): the node
	// may pull them from the issuing site and retry.
	Absent []string
}

func (e *Error) Error() string { return "kms: " + e.Msg }
func (e *Error) Unwrap() error { return e.Kind }

// Message returns the text to put in an ETSI 014 Error object for err.
func Message(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Msg
	}
	return strings.TrimPrefix(err.Error(), "kms: ")
}

func reject(kind error, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

func storageErr(op string, err error) error {
	return fmt.Errorf("kms: %s: %w: %w", op, ErrStorage, err)
}

// Config is one site's configuration of the core.
type Config struct {
	Self         string        // this site's KME ID
	Limits       Limits        // zero fields take DefaultLimits (see Limits.withDefaults)
	Registry     *Registry     // which KME serves which SAE
	KeyTTL       time.Duration // expiry of issued keys when IssueCmd.Expires is zero; 0 = DefaultKeyTTL
	TombstoneTTL time.Duration // 0 = DefaultTombstoneTTL
	RequestTTL   time.Duration // 0 = DefaultRequestTTL
	// AuditKey fingerprints delivered keys in the audit trail (audit_fingerprint.go); nil
	// leaves fingerprints out. It is configuration, so Apply stays deterministic.
	AuditKey *AuditKey
}

// Validate reports a configuration the core cannot run with.
func (c Config) Validate() error {
	if c.Self == "" {
		return errors.New("kms: config: Self (this site's KME ID) is empty")
	}
	if c.Registry == nil {
		return errors.New("kms: config: no SAE registry")
	}
	if c.KeyTTL < 0 || c.TombstoneTTL < 0 || c.RequestTTL < 0 {
		return errors.New("kms: config: negative TTL")
	}
	return c.Limits.withDefaults().Validate()
}

// Machine applies Commands to a site's state. It holds only configuration, so one Machine may
// serve concurrent readers; Apply calls must be serialised by the caller (the replicated log).
type Machine struct {
	cfg Config
}

// NewMachine returns a Machine for cfg, with defaults filled in. Call cfg.Validate first.
func NewMachine(cfg Config) *Machine {
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.KeyTTL == 0 {
		cfg.KeyTTL = DefaultKeyTTL
	}
	if cfg.RequestTTL == 0 {
		cfg.RequestTTL = DefaultRequestTTL
	}
	if cfg.TombstoneTTL == 0 {
		cfg.TombstoneTTL = DefaultTombstoneTTL
	}
	if cfg.Registry == nil {
		cfg.Registry = &Registry{}
	}
	return &Machine{cfg: cfg}
}

// Self is this site's KME ID.
func (m *Machine) Self() string { return m.cfg.Self }

// Limits are the limits in force, defaults filled in.
func (m *Machine) Limits() Limits { return m.cfg.Limits }

// Registry is the SAE registry in force.
func (m *Machine) Registry() *Registry { return m.cfg.Registry }

// KeyTTL is the expiry applied to keys whose IssueCmd sets none.
func (m *Machine) KeyTTL() time.Duration { return m.cfg.KeyTTL }

// kind names the one sub-command set in c, or "" when there is not exactly one.
func (c *Command) kind() string {
	k, n := "", 0
	for _, s := range []struct {
		set  bool
		name string
	}{
		{c.Ingest != nil, "ingest"}, {c.Verify != nil, "verify"}, {c.Issue != nil, "issue"},
		{c.Fetch != nil, "fetch"}, {c.PeerReserve != nil, "peer_reserve"},
		{c.MarkPushed != nil, "mark_pushed"}, {c.Expire != nil, "expire"},
		{c.Transfer != nil, "transfer"}, {c.Admin != nil, "admin"},
		{c.Checkpoint != nil, "checkpoint"},
		{c.Zeroize != nil, "zeroize"}, {c.Epoch != nil, "epoch"}, {c.Link != nil, "link"},
	} {
		if s.set {
			k, n = s.name, n+1
		}
	}
	if n != 1 {
		return ""
	}
	return k
}

// Apply applies one command and returns its result. It is deterministic: it reads only tx and
// c. Every command is all-or-nothing: it is checked completely against the state before the
// first write, so a rejected command (Result.Err unwrapping to a sentinel other than
// ErrStorage) leaves tx untouched and consumes no key (DESIGN.md invariant 4). A command whose
// ReqID was applied before changes nothing but the audit trail (a fetch's repeated answer is
// recorded) and gets the first answer (see replay); the record kept for a ReqID holds the
// keys it delivered, sealed by the store, until RequestTTL.
func (m *Machine) Apply(tx Tx, c *Command) *Result {
	if c == nil {
		return &Result{Err: reject(ErrBadRequest, "empty command")}
	}
	kind := c.kind()
	if kind == "" {
		return &Result{Err: reject(ErrBadRequest, "a command must hold exactly one operation")}
	}
	if c.ReqID != "" {
		rec, err := tx.Request(c.ReqID)
		if err != nil {
			return &Result{Err: storageErr("read request marker", err)}
		}
		if rec != nil {
			return m.replay(tx, c, kind, rec)
		}
	}
	var res *Result
	switch kind {
	case "ingest":
		res = m.applyIngest(tx, c)
	case "verify":
		res = m.applyVerify(tx, c)
	case "issue":
		res = m.applyIssue(tx, c)
	case "fetch":
		res = m.applyFetch(tx, c)
	case "peer_reserve":
		res = m.applyPeerReserve(tx, c)
	case "mark_pushed":
		res = m.applyMarkPushed(tx, c)
	case "expire":
		res = m.applyExpire(tx, c)
	case "transfer":
		res = m.applyTransfer(tx, c)
	case "admin":
		res = m.applyAdmin(tx, c)
	case "checkpoint":
		res = m.applyCheckpoint(tx, c)
	case "zeroize":
		res = m.applyZeroize(tx, c)
	case "epoch":
		res = m.applyEpoch(tx, c)
	case "link":
		res = m.applyLink(tx, c)
	}
	if res.Err == nil && c.ReqID != "" {
		rec := &RequestRecord{Kind: kind, At: c.Time}
		for _, k := range res.Keys {
			prov := ProvenanceQKD
			if k.Res != nil {
				prov = k.Res.Provenance
			}
			rec.Keys = append(rec.Keys, RecordedKey{ID: k.ID, Bytes: k.Bytes, Provenance: prov})
		}
		if err := tx.PutRequest(c.ReqID, rec); err != nil {
			res = &Result{Err: storageErr("record request marker", err)}
		}
	}
	if res.Err != nil && errors.Is(res.Err, ErrStorage) {
		// Keys read before a failed write must not be handed out: the transaction is aborted.
		res.Keys = nil
	}
	return res
}

// replay answers a request ID applied before: the keys the first application delivered (and,
// for Issue, the reservations to push again), so a retry after an unknown outcome neither
// applies twice nor loses what the first application handed out. Commands that deliver no
// keys answer ErrAlreadyApplied, which their callers treat as success.
func (m *Machine) replay(tx Tx, c *Command, kind string, rec *RequestRecord) *Result {
	if rec.Kind != kind {
		return fail(reject(ErrBadRequest, "request %q was a %s, not a %s", c.ReqID, rec.Kind, kind))
	}
	if len(rec.Keys) == 0 {
		return &Result{Err: fmt.Errorf("kms: %s request %q: %w", kind, c.ReqID, ErrAlreadyApplied)}
	}
	// A Fetch's request ID may come from its SAE (an idempotency key): a retry must ask for
	// the keys the first call delivered, under the same master; answering another request
	// with them would hand the SAE keys it did not ask for.
	if kind == "fetch" && !slices.EqualFunc(rec.Keys, c.Fetch.KeyIDs, func(k RecordedKey, id string) bool { return k.ID == id }) {
		return fail(reject(ErrBadRequest, "this request ID was used for other key IDs; use a new one"))
	}
	res := &Result{Replayed: true}
	for _, k := range rec.Keys {
		r, err := tx.Reservation(k.ID)
		if err != nil {
			return fail(storageErr("read reservation", err))
		}
		if r == nil {
			r = &Reservation{KeyID: k.ID, Provenance: k.Provenance}
		} else if kind == "fetch" && r.Master != c.Fetch.Master {
			return fail(reject(ErrBadRequest, "this request ID was used for keys of another master; use a new one"))
		} else if kind == "issue" && r.State == KeyIssued && !r.Pushed {
			res.Reservations = append(res.Reservations, *r)
		}
		res.Keys = append(res.Keys, Key{ID: k.ID, Bytes: k.Bytes, Res: r})
	}
	if kind == "fetch" {
		rs := make([]*Reservation, len(res.Keys))
		for i := range res.Keys {
			rs[i] = res.Keys[i].Res
		}
		es := keyEntries(EventKeyRedelivered, rs, nil)
		for _, e := range es {
			e.SAE = c.Fetch.Caller
		}
		if err := m.audit(tx, c, es...); err != nil {
			return fail(err)
		}
	}
	return res
}

// fail returns a Result for err.
func fail(err error) *Result { return &Result{Err: err} }
