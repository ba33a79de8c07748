package keydelivery

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/qkms/qkms/api/keyspb"
)

// Service is what a site provides behind the gRPC interface, the counterpart of
// etsi014.Service. master and slave are SAE IDs: the caller's comes from its certificate,
// the other from the request (already checked with pki.CheckID). Errors wrapping the kms
// sentinels choose the status code (see statusOf); their text is sent to the SAE, so it must
// name no secret. Other errors are logged and answered with a generic UNAVAILABLE.
type Service interface {
	// Status answers Get status (ETSI 014 clause 5.2) for master (the caller) and slave.
	Status(ctx context.Context, master, slave string) (*keyspb.Status, error)
	// GetKey answers Get key (clause 5.3): keys for master (the caller) and slave, plus
	// req.AdditionalSlaves. req is already checked: see KeyRequest.
	GetKey(ctx context.Context, master, slave string, req KeyRequest) ([]Key, error)
	// GetKeyWithIDs answers Get key with key IDs (clause 5.4): the keys keyIDs that master
	// obtained for slave (the caller). keyIDs are distinct and well formed.
	// requestID is the caller's idempotency key (IdempotencyKeyMetadata) or "", as for
	// etsi014.Service.
	GetKeyWithIDs(ctx context.Context, slave, master string, keyIDs []string, requestID string) ([]Key, error)
	// Known returns how many of keyIDs, counted from the first, this site already holds
	// unfetched keys for that master issued for slave, reading local state only (no pull
	// from the issuing site, no replicated write). FollowKeys polls it to wait cheaply for a
	// stream's next keys.
	Known(ctx context.Context, slave, master string, keyIDs []string) (int, error)
}

// KeyRequest is a checked Get key request. Number is at least 1; Size is 0 (the status
// key_size) or a positive multiple of 8; AdditionalSlaves are valid, distinct IDs other than
// the slave. KeyIDs is nil for GetKey (the site draws fresh UUIDs) and holds Number IDs
// for StreamKeys, which the site must use as the keys' IDs. TTL is 0 (the site's key TTL)
// or how long the keys stay fetchable by the slaves.
type KeyRequest struct {
	Number           int
	Size             int
	AdditionalSlaves []string
	KeyIDs           []string
	TTL              time.Duration
}

// Key is one key as the Service hands it over and as the Client returns it.
type Key struct {
	ID         string
	Bytes      []byte
	Provenance keyspb.Provenance
	Expires    time.Time
}

// Options tune the server. The zero value is usable.
type Options struct {
	// Logger receives unexpected Service errors and refused callers at debug level.
	// Default: slog.Default().
	Logger *slog.Logger
	// MaxStreamRate bounds StreamKeys' rate, in keys per second. Default 10,000.
	MaxStreamRate float64
	// MaxTTL bounds StreamKeys' ttl. Default 24 hours.
	MaxTTL time.Duration
	// FollowPoll is how often FollowKeys looks for the stream's next reservation at this
	// site. Default 5 ms.
	FollowPoll time.Duration
	// PullAfter is how long FollowKeys waits for a reservation to be pushed before it asks
	// the Service to fetch it anyway (which pulls it from the issuing site). Default 1 s.
	PullAfter time.Duration
}

const (
	defaultMaxStreamRate = 10000
	defaultMaxTTL        = 24 * time.Hour
	defaultFollowPoll    = 5 * time.Millisecond
	defaultPullAfter     = time.Second
	// maxListLen bounds the lists of a request (key IDs, additional slaves) before the
	// Service applies the site's own, smaller limits: it keeps validation cheap.
	maxListLen = 4096
	// maxNumber bounds number and max_keys-like counts before the site's limits apply.
	maxNumber = 1 << 20
)

func (o *Options) fill() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.MaxStreamRate <= 0 {
		o.MaxStreamRate = defaultMaxStreamRate
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = defaultMaxTTL
	}
	if o.FollowPoll <= 0 {
		o.FollowPoll = defaultFollowPoll
	}
	if o.PullAfter <= 0 {
		o.PullAfter = defaultPullAfter
	}
}

// StreamKeyID is the key ID of position seq of the stream streamID: the version 5 UUID of
// the name "seq" in decimal, in the namespace streamID (RFC 9562 clause 5.5). Both sites
// compute it, so the slave's site knows the IDs of a stream without being told each one.
// The IDs are not secret; only the slaves named at issue may fetch the keys.
func StreamKeyID(streamID uuid.UUID, seq int64) string {
	return uuid.NewSHA1(streamID, []byte(strconv.FormatInt(seq, 10))).String()
}
