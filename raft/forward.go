package raft

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	hraft "github.com/hashicorp/raft"

	"github.com/qkms/qkms/kms"
)

// Forwarding: a follower sends what only the leader can do (proposals, read indexes,
// membership changes) to the leader over the internal mutual-TLS listener. One connection
// carries a sequence of request/response frames: a 4-byte big-endian length and a body, JSON
// for requests, JSON or binary (forward_codec.go) for answers. Results may hold key bytes; they
// stay inside the site's trust domain (the internal listener admits only the site's nodes), are
// never logged, and the frames that held them are cleared once written or decoded.

// maxFrame bounds one forwarded message (a batch of up to MaxBatch commands or its results).
const maxFrame = 64 << 20

const (
	opPropose   = "propose"
	opReadIndex = "read_index"
	opJoin      = "join"
	opRemove    = "remove"
)

type wireRequest struct {
	Op    string `json:"op"`
	Batch []byte `json:"batch,omitempty"` // encoded command batch, proposed as one group (consecutive in one log entry)
	ID    string `json:"id,omitempty"`
	Addr  string `json:"addr,omitempty"`
	// Bin asks for a binary answer (forward_codec.go). Leaders of earlier versions ignore it
	// and answer JSON, which the caller reads as well.
	Bin bool `json:"bin,omitempty"`
}

type wireResponse struct {
	Err     *wireError   `json:"err,omitempty"`
	Results []wireResult `json:"results,omitempty"`
	Index   uint64       `json:"index,omitempty"`
}

// wireError carries an error as a kind that maps back to a sentinel, and its message.
type wireError struct {
	Kind string `json:"kind"`
	Msg  string `json:"msg"`
}

// wireResult is the wire form of a kms.Result.
type wireResult struct {
	Err          *wireError        `json:"err,omitempty"`
	Keys         []wireKey         `json:"keys,omitempty"`
	Reservations []kms.Reservation `json:"reservations,omitempty"`
	Expired      []string          `json:"expired,omitempty"`
	Transferred  []string          `json:"transferred,omitempty"`
}

type wireKey struct {
	ID    string           `json:"id"`
	Bytes []byte           `json:"bytes"`
	Res   *kms.Reservation `json:"res,omitempty"`
}

// errorKinds maps sentinels to stable wire names. Order matters only for errors wrapping
// several sentinels: the first match wins.
var errorKinds = []struct {
	kind string
	err  error
}{
	{"bad_request", kms.ErrBadRequest},
	{"not_enough_key", kms.ErrNotEnoughKey},
	{"unknown_sae", kms.ErrUnknownSAE},
	{"unauthorized", kms.ErrUnauthorized},
	{"key_not_found", kms.ErrKeyNotFound},
	{"not_confirmed", kms.ErrNotConfirmed},
	{"already_applied", kms.ErrAlreadyApplied},
	{"not_leader", hraft.ErrNotLeader},
	{"no_leader", ErrNoLeader},
	{"unknown_outcome", ErrUnknownOutcome},
	{"leadership_lost", hraft.ErrLeadershipLost},
	{"entry_decode", ErrEntryDecode},
	{"closed", ErrClosed},
	{"join_refused", ErrJoinRefused},
}

// remoteError is an error that came over the wire: its message is the remote's, and it
// unwraps to the sentinel its kind names, so errors.Is works as it would locally.
type remoteError struct {
	msg  string
	kind error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }

func toWireError(err error) *wireError {
	if err == nil {
		return nil
	}
	for _, k := range errorKinds {
		if errors.Is(err, k.err) {
			return &wireError{Kind: k.kind, Msg: err.Error()}
		}
	}
	return &wireError{Kind: "internal", Msg: err.Error()}
}

func fromWireError(w *wireError) error {
	if w == nil {
		return nil
	}
	for _, k := range errorKinds {
		if k.kind == w.Kind {
			return &remoteError{msg: w.Msg, kind: k.err}
		}
	}
	return &remoteError{msg: w.Msg}
}

func toWireResult(r *kms.Result) wireResult {
	if r == nil {
		return wireResult{}
	}
	w := wireResult{Err: toWireError(r.Err), Reservations: r.Reservations, Expired: r.Expired, Transferred: r.Transferred}
	for _, k := range r.Keys {
		w.Keys = append(w.Keys, wireKey{ID: k.ID, Bytes: k.Bytes, Res: k.Res})
	}
	return w
}

func fromWireResult(w *wireResult) *kms.Result {
	r := &kms.Result{Err: fromWireError(w.Err), Reservations: w.Reservations, Expired: w.Expired, Transferred: w.Transferred}
	for _, k := range w.Keys {
		r.Keys = append(r.Keys, kms.Key{ID: k.ID, Bytes: k.Bytes, Res: k.Res})
	}
	return r
}

// writeFrame writes v as one JSON frame.
func writeFrame(w io.Writer, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("raft: encode forwarded message: %w", err)
	}
	defer clear(body)
	buf := append(make([]byte, 4, 4+len(body)), body...)
	defer clear(buf)
	return writeFramed(w, buf)
}

// writeResponse writes an answer, binary when the request asked for it.
func writeResponse(w io.Writer, resp *wireResponse, bin bool) error {
	if !bin {
		return writeFrame(w, resp)
	}
	buf := appendResponse(make([]byte, 4, 4+512), resp)
	defer clear(buf)
	return writeFramed(w, buf)
}

// writeFramed writes buf, whose first 4 bytes are left for the length of the rest.
func writeFramed(w io.Writer, buf []byte) error {
	if len(buf)-4 > maxFrame {
		return fmt.Errorf("raft: forwarded message of %d bytes exceeds %d", len(buf)-4, maxFrame)
	}
	binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
	_, err := w.Write(buf)
	return err
}

// readBody reads one frame's body.
func readBody(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > maxFrame {
		return nil, fmt.Errorf("raft: forwarded message of %d bytes exceeds %d", n, maxFrame)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("raft: read forwarded message: %w", err)
	}
	return body, nil
}

// readFrame reads one JSON frame into v. With readResponse it is the decoder of everything a
// peer node sends.
func readFrame(r io.Reader, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	defer clear(body)
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("raft: decode forwarded message: %w", err)
	}
	return nil
}

// readResponse reads an answer in either form.
func readResponse(r io.Reader, resp *wireResponse) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	defer clear(body)
	if len(body) > 0 && body[0] == '{' {
		err = json.Unmarshal(body, resp)
	} else {
		err = decodeResponse(body, resp)
	}
	if err != nil {
		return fmt.Errorf("raft: decode forwarded answer: %w", err)
	}
	return nil
}

// forwardServer answers forwarded requests on the leader.
type forwardServer struct {
	n     *Node
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  bool
}

func (s *forwardServer) serve(c net.Conn) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		_ = c.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		_ = c.Close()
	}()
	for {
		var req wireRequest
		if err := readFrame(c, &req); err != nil {
			return
		}
		resp := s.handle(&req)
		if err := writeResponse(c, resp, req.Bin); err != nil {
			return
		}
	}
}

func (s *forwardServer) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	for c := range s.conns {
		_ = c.Close()
	}
}

func (s *forwardServer) handle(req *wireRequest) *wireResponse {
	n := s.n
	select {
	case <-n.ready:
	default: // still starting: the caller retries elsewhere or later
		return &wireResponse{Err: toWireError(ErrNoLeader)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ForwardTimeout)
	defer cancel()
	switch req.Op {
	case opPropose:
		if n.raft.State() != hraft.Leader {
			return &wireResponse{Err: toWireError(hraft.ErrNotLeader)}
		}
		// Append only what this node's own state machine can apply: a follower running a
		// later version may forward an entry in a format this one does not know, and every
		// node of this version would then stop at it (fsm.ApplyBatch).
		cmds, err := decodeBatch(req.Batch)
		if err != nil {
			return &wireResponse{Err: toWireError(fmt.Errorf("%w: forwarded batch: %v", ErrEntryDecode, err))}
		}
		// Through this node's own group commit, as one group: the forwarded commands stay
		// consecutive in one entry, which may also carry the leader's own proposals and those
		// other followers forward meanwhile. With clients on every node, appending each
		// forwarded batch as an entry of its own made three entries where one would do.
		res, err := n.proposeOnce(ctx, cmds)
		if err != nil && !errors.Is(err, ErrUnknownOutcome) && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
			err = fmt.Errorf("%w: not queued: %w", ErrNoLeader, err) // no effect: the follower may retry
		}
		if err != nil {
			return &wireResponse{Err: toWireError(err)}
		}
		out := &wireResponse{Results: make([]wireResult, len(res))}
		for i, r := range res {
			out.Results[i] = toWireResult(r)
		}
		return out
	case opReadIndex:
		idx, err := n.leaderReadIndex()
		return &wireResponse{Index: idx, Err: toWireError(err)}
	case opJoin:
		if n.raft.State() != hraft.Leader {
			return &wireResponse{Err: toWireError(hraft.ErrNotLeader)}
		}
		return &wireResponse{Err: toWireError(n.Join(ctx, req.ID, req.Addr))}
	case opRemove:
		if n.raft.State() != hraft.Leader {
			return &wireResponse{Err: toWireError(hraft.ErrNotLeader)}
		}
		return &wireResponse{Err: toWireError(n.Remove(ctx, req.ID))}
	default:
		return &wireResponse{Err: &wireError{Kind: "bad_request", Msg: fmt.Sprintf("raft: unknown forwarded operation %q", req.Op)}}
	}
}

// forwardClient keeps idle connections to the leader for reuse.
type forwardClient struct {
	sl      *streamLayer
	timeout time.Duration
	mu      sync.Mutex
	idle    map[string][]net.Conn
	closed  bool
}

// call sends req to addr. sent reports whether the request may have reached the leader, so
// a failure with sent set has an unknown outcome.
func (f *forwardClient) call(ctx context.Context, addr string, req *wireRequest) (resp *wireResponse, sent bool, err error) {
	c, err := f.get(ctx, addr)
	if err != nil {
		return nil, false, err
	}
	deadline := time.Now().Add(f.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	// Cancelling ctx unblocks the write or read at once.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := writeFrame(c, req); err != nil {
		_ = c.Close()
		return nil, true, fmt.Errorf("raft: forward %s to %s: %w", req.Op, addr, err)
	}
	resp = new(wireResponse)
	if err := readResponse(c, resp); err != nil {
		_ = c.Close()
		return nil, true, fmt.Errorf("raft: forward %s to %s: %w", req.Op, addr, err)
	}
	if !stop() {
		_ = c.Close() // the deadline was cut short; do not reuse
		return resp, true, nil
	}
	_ = c.SetDeadline(time.Time{})
	f.put(addr, c)
	return resp, true, nil
}

func (f *forwardClient) get(ctx context.Context, addr string) (net.Conn, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil, ErrClosed
	}
	if cs := f.idle[addr]; len(cs) > 0 {
		c := cs[len(cs)-1]
		f.idle[addr] = cs[:len(cs)-1]
		f.mu.Unlock()
		return c, nil
	}
	f.mu.Unlock()
	return f.sl.dial(ctx, addr, protoForward, f.timeout)
}

func (f *forwardClient) put(addr string, c net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || len(f.idle[addr]) >= 8 {
		_ = c.Close()
		return
	}
	// Connections to a former leader are useless; drop them.
	for a, cs := range f.idle {
		if a != addr {
			for _, old := range cs {
				_ = old.Close()
			}
			delete(f.idle, a)
		}
	}
	f.idle[addr] = append(f.idle[addr], c)
}

func (f *forwardClient) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for _, cs := range f.idle {
		for _, c := range cs {
			_ = c.Close()
		}
	}
	f.idle = nil
}

// forward sends req to the current leader. Errors wrap ErrNoLeader or hraft.ErrNotLeader
// when the request certainly had no effect, ErrUnknownOutcome when it may have had.
func (n *Node) forward(ctx context.Context, req *wireRequest) (*wireResponse, error) {
	addr, _ := n.raft.LeaderWithID()
	if addr == "" {
		return nil, ErrNoLeader
	}
	if string(addr) == n.sl.advertise.String() {
		// We are named leader but lost it after the caller's check; retry.
		return nil, hraft.ErrNotLeader
	}
	req.Bin = true
	resp, sent, err := n.fwd.call(ctx, string(addr), req)
	if err != nil {
		if sent && req.Op == opPropose {
			return nil, fmt.Errorf("%w: %w", ErrUnknownOutcome, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrNoLeader, err)
	}
	if e := fromWireError(resp.Err); e != nil {
		return nil, e
	}
	return resp, nil
}
