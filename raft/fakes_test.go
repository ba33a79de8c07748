package raft

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qkms/qkms/kms"
)

// memStore is an in-memory Store: a transaction writes to an overlay that is merged only when
// fn succeeds, like a bbolt rw transaction.
type memStore struct {
	mu       sync.RWMutex
	applied  uint64
	pools    map[string]kms.Pool
	reqs     map[string][]byte
	restores atomic.Int64
}

func newMemStore() *memStore {
	return &memStore{pools: map[string]kms.Pool{}, reqs: map[string][]byte{}}
}

type memTx struct {
	s     *memStore
	pools map[string]kms.Pool
	reqs  map[string][]byte
	ro    bool
}

func (s *memStore) Update(index uint64, fn func(kms.Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := &memTx{s: s, pools: map[string]kms.Pool{}, reqs: map[string][]byte{}}
	if err := fn(tx); err != nil {
		return err
	}
	for k, v := range tx.pools {
		s.pools[k] = v
	}
	for k, v := range tx.reqs {
		s.reqs[k] = v
	}
	s.applied = index
	return nil
}

func (s *memStore) View(fn func(kms.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return fn(&memTx{s: s, ro: true})
}

func (s *memStore) AppliedIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied, nil
}

type memImage struct {
	Applied uint64
	Pools   map[string]kms.Pool
	Reqs    map[string][]byte
}

func (s *memStore) Snapshot(w io.Writer) (int64, error) {
	s.mu.RLock()
	b, err := json.Marshal(memImage{s.applied, s.pools, s.reqs})
	s.mu.RUnlock()
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}

func (s *memStore) Restore(r io.Reader) error {
	var img memImage
	if err := json.NewDecoder(r).Decode(&img); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applied, s.pools, s.reqs = img.Applied, img.Pools, img.Reqs
	if s.pools == nil {
		s.pools = map[string]kms.Pool{}
	}
	if s.reqs == nil {
		s.reqs = map[string][]byte{}
	}
	s.restores.Add(1)
	return nil
}

func (s *memStore) available(peer string) int64 {
	var v int64
	_ = s.View(func(tx kms.Tx) error {
		p, _ := tx.Pool(peer)
		if p != nil {
			v = p.Available
		}
		return nil
	})
	return v
}

func (t *memTx) Pool(peer string) (*kms.Pool, error) {
	if p, ok := t.pools[peer]; ok {
		return &p, nil
	}
	if p, ok := t.s.pools[peer]; ok {
		return &p, nil
	}
	return nil, nil
}

func (t *memTx) PutPool(p *kms.Pool) error {
	if t.ro {
		return fmt.Errorf("memstore: read-only")
	}
	t.pools[p.Peer] = *p
	return nil
}

func (t *memTx) Request(id string) (*kms.RequestRecord, error) {
	b, ok := t.reqs[id]
	if !ok {
		b = t.s.reqs[id]
	}
	if b == nil {
		return nil, nil
	}
	return &kms.RequestRecord{Kind: "ingest", Keys: []kms.RecordedKey{{ID: id, Bytes: b}}}, nil
}

func (t *memTx) PutRequest(id string, rec *kms.RequestRecord) error {
	if t.ro {
		return fmt.Errorf("memstore: read-only")
	}
	t.reqs[id] = bytes.Clone(rec.Keys[0].Bytes)
	return nil
}

func (t *memTx) ExpireRequests(before time.Time, limit int) (int, error) { return 0, nil }
func (t *memTx) AppendAudit(e *kms.AuditEntry) error                     { return nil }
func (t *memTx) AuditHead() (uint64, []byte, error)                      { return 0, nil, nil }
func (t *memTx) Audit(from uint64, fn func(*kms.AuditEntry) bool) error  { return nil }

func (t *memTx) Block(peer, id string) (*kms.Block, error)                     { return nil, nil }
func (t *memTx) PutBlock(b *kms.Block) error                                   { return nil }
func (t *memTx) Reservation(keyID string) (*kms.Reservation, error)            { return nil, nil }
func (t *memTx) PutReservation(r *kms.Reservation) error                       { return nil }
func (t *memTx) DeleteReservation(keyID string) error                          { return nil }
func (t *memTx) ExpiredBefore(tm time.Time, limit int) ([]string, error)       { return nil, nil }
func (t *memTx) PutMaterial(peer, blockID string, sealed []byte) error         { return nil }
func (t *memTx) ReadMaterial(peer, blockID string, off, n int) ([]byte, error) { return nil, nil }
func (t *memTx) EraseMaterial(peer, blockID string, off, n int) error          { return nil }
func (t *memTx) DropMaterial(peer, blockID string) error                       { return nil }

// countApplier stands in for kms.Machine: an Ingest adds Bytes to the pool's Available and
// returns the new total as the bytes of one "key" named by the ReqID; a repeated ReqID
// returns the recorded total without applying again; negative Bytes is a bad request.
type countApplier struct{ calls atomic.Int64 }

func (a *countApplier) Apply(tx kms.Tx, c *kms.Command) *kms.Result {
	a.calls.Add(1)
	if c.ReqID != "" {
		if rec, _ := tx.Request(c.ReqID); rec != nil {
			return &kms.Result{Keys: []kms.Key{{ID: c.ReqID, Bytes: rec.Keys[0].Bytes}}}
		}
	}
	if c.Ingest == nil || c.Ingest.Bytes < 0 {
		return &kms.Result{Err: fmt.Errorf("%w: ingest needs non-negative bytes", kms.ErrBadRequest)}
	}
	p, _ := tx.Pool(c.Ingest.Peer)
	if p == nil {
		p = &kms.Pool{Peer: c.Ingest.Peer}
	}
	p.Available += int64(c.Ingest.Bytes)
	if err := tx.PutPool(p); err != nil {
		return &kms.Result{Err: err}
	}
	total := []byte(fmt.Sprint(p.Available))
	if c.ReqID != "" {
		_ = tx.PutRequest(c.ReqID, &kms.RequestRecord{Kind: "ingest", Keys: []kms.RecordedKey{{ID: c.ReqID, Bytes: total}}})
	}
	return &kms.Result{Keys: []kms.Key{{ID: c.ReqID, Bytes: total}}}
}

func ingest(reqID string, n int) *kms.Command {
	return &kms.Command{ReqID: reqID, Ingest: &kms.IngestCmd{Peer: "KME-B", BlockID: reqID, Bytes: n}}
}

// testCA is a throwaway certificate authority for a site.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// nodeTLS issues a certificate for entity name with the kme role (server and client use, SAN
// 127.0.0.1) and returns the TLS config a node holding it uses.
func (ca *testCA) nodeTLS(t testing.TB, name string) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name, OrganizationalUnit: []string{"kme"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		RootCAs:      ca.pool,
		ClientCAs:    ca.pool,
	}
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

func (t *memTx) Blocks(peer string, fn func(*kms.Block) bool) error { return nil }
func (t *memTx) MarkPushed(self, keyID string) error                { return nil }
func (t *memTx) BlocksNewestFirst(peer string, fn func(*kms.Block) bool) error {
	return nil
}
func (t *memTx) Reservations(fn func(*kms.Reservation) bool) error { return nil }
func (t *memTx) Pools(fn func(*kms.Pool) bool) error {
	seen := map[string]bool{}
	for k, p := range t.pools {
		seen[k] = true
		if !fn(&p) {
			return nil
		}
	}
	for k, p := range t.s.pools {
		if !seen[k] && !fn(&p) {
			return nil
		}
	}
	return nil
}

// nil2 is a read that reads nothing; Read with it waits for leadership and a barrier.
func nil2(kms.Tx) error { return nil }
