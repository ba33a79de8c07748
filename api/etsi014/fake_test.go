package etsi014

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"

	"github.com/qkms/qkms/kms"
)

// fakeService is a one-KME Service double: SAEs in saes are served here, keys are random.
type fakeService struct {
	mu      sync.Mutex
	stock   int                 // keys that can still be issued
	issued  map[string]*fakeKey // by key ID
	nextID  int
	calls   int
	lastReq KeyRequest
	handed  [][]byte // every slice returned to the handler, to check it was wiped
	saes    map[string]bool
	// requestIDs are the idempotency keys GetKeyWithIDs was given, in call order.
	requestIDs []string
	// forced error of the next call, if any
	err error
}

type fakeKey struct {
	master string
	slaves []string
	bytes  []byte
}

func newFakeService(stock int) *fakeService {
	return &fakeService{
		stock:  stock,
		issued: map[string]*fakeKey{},
		saes:   map[string]bool{"SAE-A1": true, "SAE-A2": true, "SAE-B1": true, "SAE-B2": true, "SAE B": true},
	}
}

func (f *fakeService) Status(ctx context.Context, master, slave string) (*Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	if !f.saes[slave] {
		return nil, fmt.Errorf("fake: status for %q: %w", slave, kms.ErrUnknownSAE)
	}
	return &Status{
		SourceKMEID: "KME-A", TargetKMEID: "KME-B", MasterSAEID: master, SlaveSAEID: slave,
		KeySize: 256, StoredKeyCount: f.stock, MaxKeyCount: 1000, MaxKeyPerRequest: 10,
		MaxKeySize: 1024, MinKeySize: 64, MaxSAEIDCount: 2,
	}, nil
}

func (f *fakeService) GetKey(ctx context.Context, master, slave string, req KeyRequest) ([]DeliveredKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.lastReq = req
	if f.err != nil {
		return nil, f.err
	}
	if !f.saes[slave] {
		return nil, fmt.Errorf("fake: get key for %q: %w", slave, kms.ErrUnknownSAE)
	}
	size := req.Size
	if size == 0 {
		size = 256
	}
	if size > 1024 || size < 64 || req.Number > 10 {
		return nil, fmt.Errorf("%w: size or number outside the limits of status", kms.ErrBadRequest)
	}
	if req.Number > f.stock {
		return nil, kms.ErrNotEnoughKey
	}
	f.stock -= req.Number
	out := make([]DeliveredKey, req.Number)
	for i := range out {
		f.nextID++
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", f.nextID)
		b := make([]byte, size/8)
		rand.Read(b)
		f.issued[id] = &fakeKey{master: master, slaves: append([]string{slave}, req.AdditionalSlaveSAEIDs...), bytes: append([]byte(nil), b...)}
		out[i] = DeliveredKey{ID: id, Bytes: b, Extension: map[string]any{"qkms_provenance": "qkd"}}
		f.handed = append(f.handed, b)
	}
	return out, nil
}

func (f *fakeService) GetKeyWithIDs(ctx context.Context, slave, master string, keyIDs []string, requestID string) ([]DeliveredKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.requestIDs = append(f.requestIDs, requestID)
	if f.err != nil {
		return nil, f.err
	}
	// All or nothing: check every ID before taking any.
	for _, id := range keyIDs {
		k, ok := f.issued[id]
		if !ok || k.master != master {
			return nil, kms.ErrKeyNotFound
		}
		named := false
		for _, s := range k.slaves {
			named = named || s == slave
		}
		if !named {
			return nil, fmt.Errorf("fake: %s not a slave of %s: %w", slave, id, kms.ErrUnauthorized)
		}
	}
	out := make([]DeliveredKey, len(keyIDs))
	for i, id := range keyIDs {
		b := append([]byte(nil), f.issued[id].bytes...)
		delete(f.issued, id)
		out[i] = DeliveredKey{ID: id, Bytes: b}
		f.handed = append(f.handed, b)
	}
	return out, nil
}

func (f *fakeService) snapshot() (stock, issued, calls int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stock, len(f.issued), f.calls
}

func (f *fakeService) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}
