package keydelivery

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/qkms/qkms/api/keyspb"
	"github.com/qkms/qkms/kms"
	"github.com/qkms/qkms/pki"
)

// fakeService is a Service double playing both sites of a link: keys issued for a master are
// fetchable by its slaves, once each. saes maps SAE IDs to their side ("A" or "B").
type fakeService struct {
	mu     sync.Mutex
	stock  int
	keys   map[string]*fakeKey
	saes   map[string]string
	err    error // forced error of every call, if set
	reqs   []KeyRequest
	fetchs [][]string
	// requestIDs are the idempotency keys GetKeyWithIDs was given, in call order.
	requestIDs []string
	// hidden lists key IDs Known does not report yet (a push still on its way).
	hidden map[string]bool
	// onIssue, if set, runs after each GetKey with the number of GetKey calls so far.
	onIssue func(calls int)
}

type fakeKey struct {
	master  string
	slaves  []string
	fetched []string
	bytes   []byte
}

func newFakeService(stock int) *fakeService {
	return &fakeService{stock: stock, keys: map[string]*fakeKey{}, hidden: map[string]bool{},
		saes: map[string]string{"SAE-A1": "A", "SAE-A2": "A", "SAE-B1": "B", "SAE-B2": "B"}}
}

func (f *fakeService) checkPair(master, slave string) error {
	if f.saes[slave] == "" || f.saes[master] == "" {
		return fmt.Errorf("fake: %w", kms.ErrUnknownSAE)
	}
	if f.saes[slave] == f.saes[master] {
		return fmt.Errorf("fake: same site: %w", kms.ErrBadRequest)
	}
	return nil
}

func (f *fakeService) Status(ctx context.Context, master, slave string) (*keyspb.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if err := f.checkPair(master, slave); err != nil {
		return nil, err
	}
	return &keyspb.Status{MasterSaeId: master, SlaveSaeId: slave, KeySize: 256, StoredKeyCount: int64(f.stock),
		MaxKeyPerRequest: 16, MaxKeySize: 1024, MinKeySize: 64, MaxSaeIdCount: 2}, nil
}

func (f *fakeService) GetKey(ctx context.Context, master, slave string, req KeyRequest) ([]Key, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	calls, hook := len(f.reqs), f.onIssue
	f.mu.Unlock()
	if hook != nil {
		defer hook(calls)
	}
	return f.getKey(master, slave, req)
}

func (f *fakeService) getKey(master, slave string, req KeyRequest) ([]Key, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if err := f.checkPair(master, slave); err != nil {
		return nil, err
	}
	size := req.Size
	if size == 0 {
		size = 256
	}
	if size < 64 || size > 1024 || req.Number > 16 || len(req.AdditionalSlaves) > 2 {
		return nil, fmt.Errorf("fake: %w", kms.ErrBadRequest)
	}
	if req.Number > f.stock {
		return nil, fmt.Errorf("fake: %w", kms.ErrNotEnoughKey)
	}
	f.stock -= req.Number
	out := make([]Key, req.Number)
	for i := range out {
		id := uuid.NewString()
		if req.KeyIDs != nil {
			id = req.KeyIDs[i]
		}
		if f.keys[id] != nil {
			return nil, fmt.Errorf("fake: key ID in use: %w", kms.ErrBadRequest)
		}
		b := make([]byte, size/8)
		rand.Read(b)
		f.keys[id] = &fakeKey{master: master, slaves: append([]string{slave}, req.AdditionalSlaves...), bytes: slices.Clone(b)}
		out[i] = Key{ID: id, Bytes: b, Provenance: keyspb.Provenance_PROVENANCE_QKD, Expires: time.Now().Add(time.Minute)}
	}
	return out, nil
}

func (f *fakeService) fetchable(slave, master, id string) bool {
	k := f.keys[id]
	return k != nil && k.master == master && slices.Contains(k.slaves, slave) && !slices.Contains(k.fetched, slave)
}

func (f *fakeService) GetKeyWithIDs(ctx context.Context, slave, master string, ids []string, requestID string) ([]Key, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetchs = append(f.fetchs, ids)
	f.requestIDs = append(f.requestIDs, requestID)
	if f.err != nil {
		return nil, f.err
	}
	if len(ids) > 16 {
		return nil, fmt.Errorf("fake: %w", kms.ErrBadRequest)
	}
	for _, id := range ids {
		if !f.fetchable(slave, master, id) {
			return nil, fmt.Errorf("fake: %w", kms.ErrKeyNotFound)
		}
	}
	out := make([]Key, len(ids))
	for i, id := range ids {
		k := f.keys[id]
		k.fetched = append(k.fetched, slave)
		out[i] = Key{ID: id, Bytes: slices.Clone(k.bytes), Provenance: keyspb.Provenance_PROVENANCE_QKD}
	}
	return out, nil
}

func (f *fakeService) Known(ctx context.Context, slave, master string, ids []string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	for i, id := range ids {
		if f.hidden[id] || !f.fetchable(slave, master, id) {
			return i, nil
		}
	}
	return len(ids), nil
}

// asCaller returns ctx as seen by a handler called over mutual TLS by the entity id with
// role. Identify reads only VerifiedChains, so a bare certificate stands for a verified one.
func asCaller(ctx context.Context, role pki.Role, id string) context.Context {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: id, OrganizationalUnit: []string{string(role)}}}
	st := tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: st}})
}

// fakeStream is the server side of a server stream, collecting what the handler sends.
type fakeStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent []*keyspb.StreamedKey
	// onSend, if set, runs after each Send (tests cancel the stream from it).
	onSend func(n int)
}

func (s *fakeStream) Context() context.Context { return s.ctx }

func (s *fakeStream) Send(k *keyspb.StreamedKey) error {
	// The handler wipes key bytes after Send returns, as gRPC has encoded them by then.
	c := &keyspb.StreamedKey{StreamId: k.StreamId, Seq: k.Seq, Key: &keyspb.Key{KeyId: k.Key.GetKeyId(), Key: slices.Clone(k.Key.GetKey())}}
	s.sent = append(s.sent, c)
	if s.onSend != nil {
		s.onSend(len(s.sent))
	}
	return nil
}
