package keydelivery

import (
	"errors"
	"math"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/kms"
)

// checkedStream is a checked StreamKeysRequest.
type checkedStream struct {
	slave      string
	additional []string
	size       int
	rate       float64
	minRate    float64
	ttl        time.Duration
	maxKeys    int64
}

func (s *server) checkStreamKeys(req *keyspb.StreamKeysRequest) (checkedStream, error) {
	c := checkedStream{slave: req.GetSlaveSaeId(), additional: req.GetAdditionalSlaveSaeIds(),
		size: int(req.GetChunkSize()), rate: req.GetRate(), minRate: req.GetMinRate(), maxKeys: req.GetMaxKeys()}
	if err := checkSlaves(c.slave, c.additional); err != nil {
		return c, err
	}
	if err := checkSize("chunk_size", req.GetChunkSize()); err != nil {
		return c, err
	}
	// NaN fails every comparison, so the checks are written to reject it.
	if !(c.rate > 0 && c.rate <= s.opts.MaxStreamRate) {
		return c, invalid("rate shall be a number of keys per second in (0, %g]", s.opts.MaxStreamRate)
	}
	if !(c.minRate >= 0 && c.minRate <= c.rate) {
		return c, invalid("min_rate shall be between 0 and rate")
	}
	if req.GetTtl() != nil {
		if err := req.GetTtl().CheckValid(); err != nil {
			return c, invalid("ttl: %v", err)
		}
		c.ttl = req.GetTtl().AsDuration()
		if c.ttl < 0 || c.ttl > s.opts.MaxTTL {
			return c, invalid("ttl shall be between 0 (the site's key TTL) and %s", s.opts.MaxTTL)
		}
	}
	if c.maxKeys < 0 {
		return c, invalid("max_keys shall be 0 (until cancelled) or positive")
	}
	// Every provenance the site issues (QKD today) satisfies any minimum: QKD is the strongest.
	if err := checkProvenance(req.GetMinProvenance()); err != nil {
		return c, err
	}
	return c, nil
}

// StreamKeys issues keys for the slaves at the requested rate and sends each as soon as it is
// issued. Issuing goes through Service.GetKey with the stream's derived key IDs, in batches of
// up to max_key_per_request when the stream is behind schedule, so a stream of thousands of
// keys per second costs tens of replicated commands per second, not thousands.
func (s *server) StreamKeys(req *keyspb.StreamKeysRequest, stream grpc.ServerStreamingServer[keyspb.StreamedKey]) error {
	ctx := stream.Context()
	master, err := s.callerSAE(ctx)
	if err != nil {
		return err
	}
	c, err := s.checkStreamKeys(req)
	if err != nil {
		return err
	}
	// Status checks the SAEs and gives the limits a chunk must respect.
	st, err := s.svc.Status(ctx, master, c.slave)
	if err != nil {
		return s.statusOf(err)
	}
	if c.size == 0 {
		c.size = int(st.GetKeySize())
	}
	perReq := max(1, int64(st.GetMaxKeyPerRequest()))
	streamID := uuid.New()
	sid := streamID.String()

	// burst bounds how far behind schedule the stream may fall before it stops catching up:
	// after a pause for lack of key the stream resumes at its rate instead of draining the
	// pool in one go.
	burst := max(perReq, int64(math.Ceil(c.rate/10)))
	start := time.Now()
	var issued int64
	limit := perReq // keys per GetKey; halved while the pool holds fewer than asked
	timer := time.NewTimer(0)
	defer timer.Stop()
	for c.maxKeys == 0 || issued < c.maxKeys {
		due := int64(c.rate*time.Since(start).Seconds()) + 1 - issued
		if due > burst {
			start = time.Now().Add(-time.Duration(float64(issued-1+burst) / c.rate * float64(time.Second)))
			due = burst
		}
		if due <= 0 {
			next := start.Add(time.Duration(float64(issued) / c.rate * float64(time.Second)))
			timer.Reset(time.Until(next))
			select {
			case <-ctx.Done():
				return s.statusOf(ctx.Err())
			case <-timer.C:
			}
			continue
		}
		n := min(due, limit)
		if c.maxKeys > 0 {
			n = min(n, c.maxKeys-issued)
		}
		ids := make([]string, n)
		for i := range ids {
			ids[i] = StreamKeyID(streamID, issued+int64(i))
		}
		keys, err := s.svc.GetKey(ctx, master, c.slave, KeyRequest{Number: int(n), Size: c.size,
			AdditionalSlaves: c.additional, KeyIDs: ids, TTL: c.ttl})
		if errors.Is(err, kms.ErrNotEnoughKey) && n > 1 {
			// A request is all or nothing: ask for fewer before calling the pool empty.
			limit = max(1, n/2)
			continue
		}
		if errors.Is(err, kms.ErrNotEnoughKey) && c.minRate == 0 {
			// Best effort: wait for the link to refill the pool, keeping the stream open.
			timer.Reset(100 * time.Millisecond)
			select {
			case <-ctx.Done():
				return s.statusOf(ctx.Err())
			case <-timer.C:
			}
			continue
		}
		if errors.Is(err, kms.ErrNotEnoughKey) {
			return status.Errorf(codes.ResourceExhausted, "stream %s: not enough key to keep min_rate %g keys/s after %d keys; lower min_rate or rate, or retry when the link has refilled the pool", sid, c.minRate, issued)
		}
		if err != nil {
			return s.statusOf(err)
		}
		limit = perReq
		for i := range keys {
			err := stream.Send(&keyspb.StreamedKey{StreamId: sid, Seq: issued + int64(i), Key: toProto(&keys[i])})
			// SendMsg has encoded the message when it returns: the bytes are no longer needed.
			clear(keys[i].Bytes)
			if err != nil {
				return err
			}
		}
		issued += int64(len(keys))
	}
	return nil
}

// FollowKeys delivers the keys of a stream at the slave's site, in order, as their
// reservations arrive. It polls local state (Service.Known) and fetches every run of keys
// that has arrived in one Service.GetKeyWithIDs; when the next key has been missing for
// PullAfter, it asks for it anyway, which pulls the reservation from the issuing site if the
// push was lost.
func (s *server) FollowKeys(req *keyspb.FollowKeysRequest, stream grpc.ServerStreamingServer[keyspb.StreamedKey]) error {
	ctx := stream.Context()
	slave, err := s.callerSAE(ctx)
	if err != nil {
		return err
	}
	master := req.GetMasterSaeId()
	if err := checkSAE("master_sae_id", master); err != nil {
		return err
	}
	streamID, err := checkStreamID(req.GetStreamId())
	if err != nil {
		return err
	}
	seq, maxKeys := req.GetFromSeq(), req.GetMaxKeys()
	if seq < 0 || maxKeys < 0 {
		return invalid("from_seq and max_keys shall not be negative")
	}
	st, err := s.svc.Status(ctx, slave, master)
	if err != nil {
		return s.statusOf(err)
	}
	perReq := max(1, int64(st.GetMaxKeyPerRequest()))
	end := int64(math.MaxInt64)
	if maxKeys > 0 && seq <= math.MaxInt64-maxKeys {
		end = seq + maxKeys
	}
	ticker := time.NewTicker(s.opts.FollowPoll)
	defer ticker.Stop()
	waitingSince := time.Now()
	for seq < end {
		n := min(perReq, end-seq)
		ids := make([]string, n)
		for i := range ids {
			ids[i] = StreamKeyID(streamID, seq+int64(i))
		}
		known, err := s.svc.Known(ctx, slave, master, ids)
		if err != nil {
			return s.statusOf(err)
		}
		if known == 0 && time.Since(waitingSince) >= s.opts.PullAfter {
			known, waitingSince = 1, time.Now()
			keys, err := s.svc.GetKeyWithIDs(ctx, slave, master, ids[:1], "")
			if errors.Is(err, kms.ErrKeyNotFound) {
				known = 0 // not issued yet: keep waiting
			} else if err != nil {
				return s.statusOf(err)
			} else if err := s.sendFollowed(stream, streamID, seq, keys); err != nil {
				return err
			} else {
				seq++
				continue
			}
		}
		if known == 0 {
			select {
			case <-ctx.Done():
				return s.statusOf(ctx.Err())
			case <-ticker.C:
			}
			continue
		}
		keys, err := s.svc.GetKeyWithIDs(ctx, slave, master, ids[:known], "")
		if errors.Is(err, kms.ErrKeyNotFound) {
			return status.Errorf(codes.InvalidArgument, "stream %s: a key from position %d on is no longer at this KME (expired, or already fetched by this SAE); follow again with a later from_seq", streamID, seq)
		}
		if err != nil {
			return s.statusOf(err)
		}
		if err := s.sendFollowed(stream, streamID, seq, keys); err != nil {
			return err
		}
		seq += int64(len(keys))
		waitingSince = time.Now()
	}
	return nil
}

func (s *server) sendFollowed(stream grpc.ServerStreamingServer[keyspb.StreamedKey], streamID uuid.UUID, seq int64, keys []Key) error {
	sid := streamID.String()
	for i := range keys {
		err := stream.Send(&keyspb.StreamedKey{StreamId: sid, Seq: seq + int64(i), Key: toProto(&keys[i])})
		clear(keys[i].Bytes)
		if err != nil {
			return err
		}
	}
	return nil
}
